import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chmodSync, chownSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiError, ErrorCode, type ConnectionState } from '../../../contract/api.js';
import { EngineLink, type LinkStatus } from '../../../electron/src/engine-link.js';
import { ConnectionNotifier } from '../../../electron/src/notifications.js';
import { FakeEngine, until } from './helpers/fake-engine.js';

const FAST = { initialMs: 20, maxMs: 160, factor: 2, jitter: 0 };

describe('EngineLink against a real Unix socket', () => {
  let dir: string;
  let engine: FakeEngine;
  let link: EngineLink | undefined;
  let states: ConnectionState[];
  let statuses: LinkStatus[];

  function connect(opts: Partial<ConstructorParameters<typeof EngineLink>[0]> = {}): EngineLink {
    const l = new EngineLink({ socketPath: engine.path, backoff: FAST, ...opts });
    l.onState((s, status) => {
      states.push(s);
      statuses.push(status);
    });
    l.start();
    link = l;
    return l;
  }

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bsan-link-'));
    engine = new FakeEngine(join(dir, 'engine.sock'));
    await engine.start();
    states = [];
    statuses = [];
  });

  afterEach(async () => {
    link?.close();
    link = undefined;
    await engine.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('connects, calls and receives the answer', async () => {
    const l = connect();
    await until(() => l.state === 'connected');
    expect(states).toEqual(['connecting', 'connected']);
    const status = await l.call('system.status', {});
    expect(status.version).toBe('0.0.0-fake');
    expect(await l.callRaw('test.echo', { a: 1 })).toEqual({ a: 1 });
  });

  it('turns an engine error answer into an ApiError', async () => {
    const l = connect();
    await until(() => l.state === 'connected');
    const err = await l.callRaw('no.such', {}).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).code).toBe(ErrorCode.MethodNotFound);
  });

  it('delivers events to subscribers only, and unsubscribes', async () => {
    const l = connect();
    await until(() => l.state === 'connected');
    const beats: unknown[] = [];
    const off = l.on('system.heartbeat', (d) => beats.push(d));
    engine.emit('system.heartbeat', { at: 1, uptimeSec: 1 });
    engine.emit('something.else', { x: 1 });
    await until(() => beats.length === 1);
    off();
    engine.emit('system.heartbeat', { at: 2, uptimeSec: 2 });
    await l.callRaw('test.echo', {}); // a round trip: the second event has arrived by now
    expect(beats).toEqual([{ at: 1, uptimeSec: 1 }]);
  });

  // Every input from the socket is untrusted: an event a listener cannot take (here it
  // throws, as AlertNotifier did on `data: null`) must not escape into main as an
  // uncaught exception, nor drop the other lines of the same read.
  it('a listener that throws neither escapes nor loses the lines read with its event', async () => {
    const failures: string[] = [];
    const l = connect({ onListenerError: (_err, event) => failures.push(event) });
    await until(() => l.state === 'connected');
    const got: unknown[] = [];
    l.on('alert.raised', (d) => {
      if (d === null) throw new TypeError("Cannot read properties of null (reading 'severity')");
    });
    l.on('system.heartbeat', (d) => got.push(d));
    const event = (name: string, data: unknown) =>
      JSON.stringify({ jsonrpc: '2.0', method: 'event', params: { name, data } });
    const lines = [event('alert.raised', null), event('system.heartbeat', { at: 3, uptimeSec: 1 })];
    for (const s of engine.sockets) s.write(lines.join('\n') + '\n');
    await until(() => got.length === 1);
    expect(failures).toEqual(['alert.raised']);
    expect(got).toEqual([{ at: 3, uptimeSec: 1 }]);
    expect(l.state).toBe('connected');
  });

  it('a state listener that throws costs only itself: the link still retries and reconnects', async () => {
    const failures: string[] = [];
    const l = connect({ onListenerError: (_err, event) => failures.push(event) });
    l.onState((s) => {
      if (s === 'disconnected') throw new TypeError('Object has been destroyed');
    });
    await until(() => l.state === 'connected');
    // before: the throw left the socket's close handler before the retry was set up
    for (const s of engine.sockets) s.destroy();
    await until(() => states.filter((s) => s === 'connected').length === 2, 3000, 'reconnect');
    expect(states).toEqual(['connecting', 'connected', 'disconnected', 'connecting', 'connected']);
    expect(failures).toEqual(['the link state']);
  });

  it('reassembles lines split across chunks and several lines in one chunk', async () => {
    const l = connect();
    await until(() => l.state === 'connected');
    const got: unknown[] = [];
    l.on('system.heartbeat', (d) => got.push(d));
    const one = JSON.stringify({
      jsonrpc: '2.0',
      method: 'event',
      params: { name: 'system.heartbeat', data: { at: 1, uptimeSec: 'é€😀' } },
    });
    const two = JSON.stringify({
      jsonrpc: '2.0',
      method: 'event',
      params: { name: 'system.heartbeat', data: { at: 2, uptimeSec: 0 } },
    });
    const bytes = Buffer.from(`${one}\n${two}\n\n`);
    // split inside the multi-byte characters too
    const cut = bytes.indexOf(Buffer.from('€')) + 1;
    for (const s of engine.sockets) s.write(bytes.subarray(0, cut));
    await new Promise((r) => setTimeout(r, 20));
    for (const s of engine.sockets) s.write(bytes.subarray(cut));
    await until(() => got.length === 2);
    expect(got).toEqual([
      { at: 1, uptimeSec: 'é€😀' },
      { at: 2, uptimeSec: 0 },
    ]);
  });

  it('fails pending calls as soon as the connection drops', async () => {
    const l = connect({ callTimeoutMs: 20_000 });
    await until(() => l.state === 'connected');
    const started = Date.now();
    const pending = l.callRaw('test.hang', {});
    await until(() => engine.received.some((r) => r.method === 'test.hang'));
    for (const s of engine.sockets) s.destroy();
    const err = await pending.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ApiError);
    expect((err as ApiError).code).toBe(ErrorCode.Unavailable);
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it('fails calls at once while not connected', async () => {
    await engine.stop();
    const l = connect();
    await until(() => l.state === 'disconnected');
    const err = (await l.callRaw('system.status', {}).catch((e: unknown) => e)) as ApiError;
    expect(err.code).toBe(ErrorCode.Unavailable);
    expect(err.message).toMatch(/not running/);
  });

  it('reconnects with bounded exponential backoff after an engine restart; calls work again', async () => {
    const l = connect();
    await until(() => l.state === 'connected');
    await engine.stop();
    await until(
      () => statuses.filter((s) => s.state === 'disconnected').length >= 6,
      5000,
      'six retries',
    );
    const delays = statuses.filter((s) => s.state === 'disconnected').map((s) => s.retryInMs);
    expect(delays.slice(0, 6)).toEqual([20, 40, 80, 160, 160, 160]);
    expect(statuses.at(-1)?.error?.code).toBe('ENOENT');
    await engine.start();
    await until(() => l.state === 'connected', 2000, 'reconnect');
    expect(l.info.attempt).toBe(0);
    expect((await l.call('system.status', {})).nodeId).toBe('fake');
    // the outage was reported once as a change connected -> disconnected and back
    expect(states[0]).toBe('connecting');
    expect(states.filter((s) => s === 'connected')).toHaveLength(2);
  });

  it('drops a connection that sends a line longer than the limit, then reconnects', async () => {
    const l = connect({ maxLineLength: 1000 });
    await until(() => l.state === 'connected');
    engine.broadcastRaw('x'.repeat(5000));
    await until(() => statuses.some((s) => s.error?.code === 'ELINETOOLONG'), 2000, 'line guard');
    await until(() => l.state === 'connected', 2000, 'reconnect');
    expect(engine.connections).toBe(2);
    expect(await l.callRaw('test.echo', 'ok')).toBe('ok');
  });

  it('announces connected only after the handshake, and drops an engine that fails it', async () => {
    const ok = connect({ handshake: async (call) => void (await call('system.status', {})) });
    await until(() => ok.state === 'connected');
    expect(engine.received[0]?.method).toBe('system.status');
    ok.close();
    states = [];
    statuses = [];
    const bad = connect({
      handshake: async () => {
        throw new Error('wrong API version');
      },
    });
    await until(() => statuses.some((s) => s.error?.code === 'EHANDSHAKE'));
    expect(states).not.toContain('connected');
    expect(statuses.find((s) => s.error)?.error?.message).toMatch(/wrong API version/);
    bad.close();
  });

  it('stops for good on close(): no more attempts', async () => {
    const l = connect();
    await until(() => l.state === 'connected');
    l.close();
    const before = engine.connections;
    await new Promise((r) => setTimeout(r, 200));
    expect(engine.connections).toBe(before);
    expect(l.state).toBe('disconnected');
  });

  it('close() says it was on purpose, so the desktop does not report a lost engine on quit', async () => {
    const l = connect();
    const notifier = new ConnectionNotifier();
    const notices: string[] = [];
    l.onState((s, status) => {
      const n = notifier.next(s, status.error?.message, status.closed === true);
      if (n) notices.push(n.title);
    });
    await until(() => l.state === 'connected');
    l.close();
    expect(statuses.at(-1)).toMatchObject({ state: 'disconnected', closed: true });
    expect(notices).toEqual([]);
    // an engine that goes away is still reported
    const l2 = connect();
    const notifier2 = new ConnectionNotifier();
    l2.onState((s, status) => {
      const n = notifier2.next(s, status.error?.message, status.closed === true);
      if (n) notices.push(n.title);
    });
    await until(() => l2.state === 'connected');
    await engine.stop();
    await until(() => notices.length > 0);
    expect(notices).toEqual(['Lost the connection to the BranchSAN engine']);
    l2.close();
  });

  it('reconnectNow() skips the backoff wait', async () => {
    await engine.stop();
    const l = connect({ backoff: { initialMs: 60_000, maxMs: 60_000 } });
    await until(() => l.state === 'disconnected');
    await engine.start();
    l.reconnectNow();
    await until(() => l.state === 'connected', 1000);
  });

  describe('refuses sockets it cannot trust, before sending anything', () => {
    it('a socket owned by another uid', async () => {
      chownSync(engine.path, 12345, 12345);
      const l = connect();
      await until(() => statuses.some((s) => s.error));
      expect(statuses.find((s) => s.error)?.error).toEqual({
        code: 'UNTRUSTED',
        message: `the engine socket ${engine.path} is owned by uid 12345, not root or you: refusing to talk to it`,
      });
      expect(engine.connections).toBe(0);
      expect(l.state).not.toBe('connected');
    });

    it('a symbolic link to a socket', async () => {
      const alias = join(dir, 'alias.sock');
      symlinkSync(engine.path, alias);
      const l = connect({ socketPath: alias });
      await until(() => statuses.some((s) => s.error));
      expect(statuses.find((s) => s.error)?.error?.message).toMatch(/symbolic link: refusing/);
      expect(engine.connections).toBe(0);
      l.close();
    });

    it('a socket in a world-writable directory without the sticky bit', async () => {
      chmodSync(dir, 0o777);
      const l = connect();
      await until(() => statuses.some((s) => s.error));
      expect(statuses.find((s) => s.error)?.error?.message).toMatch(
        /writable by everyone without the sticky bit: anyone could have replaced the socket/,
      );
      expect(engine.connections).toBe(0);
      l.close();
    });
  });
});
