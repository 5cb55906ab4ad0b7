// @vitest-environment happy-dom
import { describe, expect, it, vi } from 'vitest';
import {
  ApiError,
  ErrorCode,
  type ConnectionState,
  type EventName,
} from '../../../../contract/api.js';
import type { BridgeApi, BridgeLinkState, BridgeReply } from '../../../../contract/bridge.js';
import { createBridgeClient } from '../../../../renderer/src/api/bridge.js';
import { createApiClient, type ClientHost } from '../../../../renderer/src/api/index.js';
import { systemStatus } from '../support/fixtures.js';

/** What the Electron preload exposes as window.branchsan, with handles to drive it. */
function fakeBridge(initial: BridgeLinkState = { state: 'connected' }) {
  const events = new Set<(name: EventName, data: unknown) => void>();
  const states = new Set<(s: BridgeLinkState) => void>();
  let answer: (method: string, params: unknown) => Promise<BridgeReply> = async () => ({
    ok: true,
    result: systemStatus(),
  });
  const bridge: BridgeApi = {
    call: vi.fn((method, params) => answer(method, params)),
    onEvent: (h) => (events.add(h), () => events.delete(h)),
    onState: (h) => (states.add(h), () => states.delete(h)),
    getState: vi.fn(async () => initial),
  };
  return {
    bridge,
    push: (name: EventName, data: unknown) => events.forEach((h) => h(name, data)),
    setState: (state: ConnectionState, reason?: string) =>
      states.forEach((h) => h(reason === undefined ? { state } : { state, reason })),
    answerWith: (fn: typeof answer) => (answer = fn),
    listeners: () => events.size + states.size,
  };
}

describe('bridge transport (window.branchsan)', () => {
  it('passes calls through and returns the result', async () => {
    const f = fakeBridge();
    const client = createBridgeClient(f.bridge);
    await expect(client.call('system.status', {})).resolves.toEqual(systemStatus());
    expect(f.bridge.call).toHaveBeenCalledWith('system.status', {});
    expect(client.transport).toBe('bridge');
  });

  it('turns an error reply into an ApiError', async () => {
    const f = fakeBridge();
    f.answerWith(async () => ({
      ok: false,
      error: {
        code: ErrorCode.Unavailable,
        message: 'Engine is starting.',
        data: { hint: 'Wait.' },
      },
    }));
    const e = await createBridgeClient(f.bridge)
      .call('system.status', {})
      .catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ApiError);
    expect(e).toMatchObject({
      code: ErrorCode.Unavailable,
      message: 'Engine is starting.',
      data: { hint: 'Wait.' },
    });
  });

  it('reports a failed IPC invoke as Unavailable, with a hint', async () => {
    const f = fakeBridge();
    f.answerWith(() => Promise.reject(new Error('ipc gone')));
    const e = await createBridgeClient(f.bridge)
      .call('system.status', {})
      .catch((err: unknown) => err);
    expect(e).toMatchObject({ code: ErrorCode.Unavailable, data: { hint: expect.any(String) } });
  });

  it('fans events out by name to their subscribers', () => {
    const f = fakeBridge();
    const client = createBridgeClient(f.bridge);
    const seen: number[] = [];
    const off = client.on('system.heartbeat', (hb) => seen.push(hb.uptimeSec));
    f.push('system.heartbeat', { at: 1, uptimeSec: 10 });
    f.push('other.event' as EventName, { uptimeSec: 99 });
    off();
    f.push('system.heartbeat', { at: 2, uptimeSec: 11 });
    expect(seen).toEqual([10]);
  });

  it('keeps delivering an event when one of its listeners throws, and keeps the throw in here', () => {
    const f = fakeBridge();
    const client = createBridgeClient(f.bridge);
    const report = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const seen: number[] = [];
    client.on('system.heartbeat', () => {
      throw new Error('a broken page component');
    });
    client.on('system.heartbeat', (hb) => seen.push(hb.uptimeSec));
    // before: the second listener missed it, and the throw reached the preload's IPC handler
    expect(() => f.push('system.heartbeat', { at: 1, uptimeSec: 10 })).not.toThrow();
    f.push('system.heartbeat', { at: 2, uptimeSec: 11 });
    expect(seen).toEqual([10, 11]);
    expect(report).toHaveBeenCalledTimes(2);
    expect(String(report.mock.calls[0]![0])).toContain('system.heartbeat');
    report.mockRestore();
  });

  it('a failure listener that throws does not keep the new state from the page', async () => {
    const f = fakeBridge();
    const client = createBridgeClient(f.bridge);
    await Promise.resolve();
    const report = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const states: ConnectionState[] = [];
    client.onFailure(() => {
      throw new Error('a broken page component');
    });
    client.onState((s) => states.push(s));
    // before: the throw left before the state was set, and reached the preload's IPC
    expect(() => f.setState('disconnected', 'The engine stopped.')).not.toThrow();
    expect(client.state).toBe('disconnected');
    expect(states).toEqual(['disconnected']);
    expect(String(report.mock.calls[0]![0])).toContain('failure');
    report.mockRestore();
  });

  it('starts connecting, takes the state from main, and lets a pushed change win a race', async () => {
    const f = fakeBridge({ state: 'connected' });
    const client = createBridgeClient(f.bridge);
    expect(client.state).toBe('connecting');
    await Promise.resolve();
    expect(client.state).toBe('connected');

    let resolveState!: (s: BridgeLinkState) => void;
    f.bridge.getState = () => new Promise((r) => (resolveState = r));
    const racing = createBridgeClient(f.bridge);
    f.setState('disconnected');
    resolveState({ state: 'connected' }); // an older answer, overtaken by the push
    await Promise.resolve();
    expect(racing.state).toBe('disconnected');
  });

  it('carries why main cannot reach the engine while the link is down, and forgets it once up', async () => {
    const why =
      'you may not open /run/branchsan/engine.sock: add your account to the branchsan-admin group (sudo usermod -aG branchsan-admin $USER) and log in again';
    const f = fakeBridge({ state: 'disconnected', reason: why });
    const client = createBridgeClient(f.bridge);
    const seen: [string, string | null][] = [];
    client.onFailure((r) => seen.push(['failure', r]));
    client.onState((s) => seen.push([s, client.failure]));
    await Promise.resolve();
    expect(client.failure).toBe(why);
    // the failure is set before the state is announced, so a state listener reads it
    expect(seen).toEqual([
      ['failure', why],
      ['disconnected', why],
    ]);

    f.setState('connecting', why); // a retry: the last failure still stands
    f.setState('disconnected', 'nothing listens on /run/branchsan/engine.sock');
    expect(client.failure).toBe('nothing listens on /run/branchsan/engine.sock');
    f.setState('connected', 'a stale word main would never send');
    expect(client.failure).toBeNull();
    // the state stays 'disconnected' through the retry: only the failure's words change
    expect(seen.slice(2)).toEqual([
      ['failure', 'nothing listens on /run/branchsan/engine.sock'],
      ['failure', null],
      ['connected', null],
    ]);
  });

  it('once down, stays disconnected through main’s retries until the link is up', async () => {
    const f = fakeBridge({ state: 'connecting' });
    const client = createBridgeClient(f.bridge);
    await Promise.resolve();
    const states: string[] = [];
    client.onState((s) => states.push(s));
    f.setState('connecting'); // the first attempt is shown as such
    f.setState('disconnected', 'nothing listens on /x');
    for (let i = 0; i < 3; i++) {
      f.setState('connecting', 'nothing listens on /x'); // a retry
      f.setState('disconnected', 'nothing listens on /x');
    }
    expect(client.state).toBe('disconnected');
    f.setState('connecting', 'nothing listens on /x');
    f.setState('connected');
    f.setState('disconnected', 'the engine closed the connection on /x');
    // before: connecting and disconnected again at every retry
    expect(states).toEqual(['disconnected', 'connected', 'disconnected']);
  });

  it('unsubscribes from the bridge on close()', () => {
    const f = fakeBridge();
    const client = createBridgeClient(f.bridge);
    expect(f.listeners()).toBe(2);
    client.close();
    expect(f.listeners()).toBe(0);
  });
});

describe('createApiClient', () => {
  /** Records how the client constructs its socket; never connects. */
  class RecordingSocket extends EventTarget {
    static readonly OPEN = 1;
    static opened: unknown[][] = [];
    readonly readyState = 0;
    constructor(...args: unknown[]) {
      super();
      RecordingSocket.opened.push(args);
    }
    send(): void {}
    close(): void {}
  }

  function host(over: Partial<ClientHost> & Record<string, unknown>): ClientHost {
    return {
      location: { href: 'http://127.0.0.1:1/' },
      history: { state: null, replaceState: vi.fn() },
      sessionStorage: window.sessionStorage,
      fetch: vi.fn(),
      WebSocket: RecordingSocket as unknown as typeof WebSocket,
      ...over,
    } as ClientHost;
  }

  it('uses window.branchsan when the preload defined it, and never opens a socket', () => {
    RecordingSocket.opened = [];
    const f = fakeBridge();
    const client = createApiClient(host({ branchsan: f.bridge }));
    expect(client.transport).toBe('bridge');
    expect(RecordingSocket.opened).toEqual([]);
    client.close();
  });

  it('otherwise asks the page’s engine for the session, then opens a WebSocket beside the page', async () => {
    RecordingSocket.opened = [];
    const fetch = vi.fn(async () => ({
      ok: true,
      json: async () => ({ authenticated: true, setupRequired: false }),
    }));
    const h = host({
      location: { href: 'https://san-a:8443/?token=abc123#/status' },
      fetch: fetch as unknown as typeof globalThis.fetch,
    });
    const client = createApiClient(h);
    expect(client.transport).toBe('websocket');
    await vi.waitFor(() => expect(RecordingSocket.opened).toHaveLength(1));
    expect(fetch).toHaveBeenCalledWith('https://san-a:8443/api/session', expect.anything());
    // The session cookie authenticates; the token from the URL is kept for the first-run setup.
    expect(RecordingSocket.opened).toEqual([['wss://san-a:8443/api', ['branchsan.v1']]]);
    expect(client.auth?.setupToken).toBe('abc123');
    expect(h.history.replaceState).toHaveBeenCalledWith(null, '', '/#/status');
    client.close();
  });

  it('offers no sign-in inside the desktop app', () => {
    const client = createApiClient(host({ branchsan: fakeBridge().bridge }));
    expect(client.auth).toBeUndefined();
    client.close();
  });
});
