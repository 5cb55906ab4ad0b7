/**
 * Electron main with a stand-in 'electron' module (no Electron binary on this machine):
 * the window's options, the session's hardening, the IPC channels, and a real call
 * through the bridge handler to a fake engine on a real Unix socket.
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IPC } from '../../../contract/bridge.js';
import { FakeEngine, until } from './helpers/fake-engine.js';
import { fake } from './helpers/fake-electron.js';

vi.mock('electron', () => import('./helpers/fake-electron.js'));

type Fn = (...args: unknown[]) => unknown;

describe('Electron main (with a stand-in electron module)', () => {
  let dir: string;
  let engine: FakeEngine;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bsan-main-'));
    engine = new FakeEngine(join(dir, 'engine.sock'));
    await engine.start();
    vi.stubEnv('BRANCHSAN_SOCKET', engine.path);
    await import('../../../electron/src/main.js');
    await until(() => fake.windows.length === 1, 2000, 'the window');
  });

  afterAll(async () => {
    fake.appEvents.get('before-quit')?.();
    vi.unstubAllEnvs();
    await engine.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('creates one sandboxed, isolated window without Node, loading the renderer from app://branchsan', () => {
    expect(fake.sandboxed).toBe(true);
    const win = fake.windows[0]!;
    expect(win.options.webPreferences).toMatchObject({
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      webSecurity: true,
    });
    expect(String((win.options.webPreferences as { preload: string }).preload)).toMatch(
      /preload\.cjs$/,
    );
    expect(win.loaded).toEqual(['app://branchsan/index.html']);
  });

  it('serves the renderer on its own privileged scheme, registered before ready, never file://', async () => {
    expect(fake.privileged).toEqual([
      {
        schemes: [{ scheme: 'app', privileges: { standard: true, secure: true } }],
        afterReady: false,
      },
    ]);
    const handler = fake.protocolHandlers.get('app')!;
    expect(handler).toBeTypeOf('function');
    // wired to serveAppRequest (app-protocol.test.ts): outside the bundle is 404
    const res = await handler(new Request('app://branchsan/../../../etc/passwd'));
    expect(res.status).toBe(404);
    expect(
      (await handler(new Request('app://branchsan/index.html', { method: 'POST' }))).status,
    ).toBe(405);
  });

  it('registers exactly the contract IPC channels', () => {
    expect([...fake.handlers.keys()].sort()).toEqual([IPC.call, IPC.getState].sort());
  });

  it('denies every permission and cancels every network request', () => {
    const answers: boolean[] = [];
    fake.permissionRequest?.({}, 'media', (ok: boolean) => answers.push(ok));
    expect(answers).toEqual([false]);
    expect(fake.permissionCheck?.({}, 'notifications', 'file://', {})).toBe(false);
    expect(fake.beforeRequest?.filter).toEqual({
      urls: ['http://*/*', 'https://*/*', 'ws://*/*', 'wss://*/*'],
    });
    const verdict: unknown[] = [];
    fake.beforeRequest?.fn({ url: 'https://cdn.example/x.js' }, (v: unknown) => verdict.push(v));
    expect(verdict).toEqual([{ cancel: true }]);
    const headers: unknown[] = [];
    fake.headersReceived?.({ responseHeaders: {} }, (v: unknown) => headers.push(v));
    expect(JSON.stringify(headers)).toContain("default-src 'none'");
  });

  it('keeps every web contents on our page: navigation, redirects, new windows, webviews', () => {
    const contents = new EventEmitter() as EventEmitter & {
      setWindowOpenHandler: (fn: Fn) => void;
    };
    let openHandler: Fn | undefined;
    contents.setWindowOpenHandler = (fn) => void (openHandler = fn);
    fake.appEvents.get('web-contents-created')?.({}, contents);
    const own = fake.windows[0]!.loaded[0]!;

    const nav = (url: string): boolean => {
      let prevented = false;
      contents.emit('will-navigate', { url, preventDefault: () => (prevented = true) });
      return prevented;
    };
    expect(nav(`${own}#/dashboard`)).toBe(false);
    expect(nav('file:///etc/passwd')).toBe(true);
    expect(nav('app://branchsan/other.html')).toBe(true);
    expect(nav('app://elsewhere/index.html')).toBe(true);
    expect(nav('https://docs.example/help')).toBe(true);
    expect(nav('http://plain.example/')).toBe(true);
    expect(fake.opened).toEqual(['https://docs.example/help']); // https only, in the browser

    let webview = false;
    contents.emit('will-attach-webview', { preventDefault: () => (webview = true) });
    expect(webview).toBe(true);
    expect(openHandler?.({ url: 'javascript:alert(1)' })).toEqual({ action: 'deny' });
    expect(openHandler?.({ url: 'https://docs.example/new' })).toEqual({ action: 'deny' });
    expect(fake.opened).toEqual(['https://docs.example/help', 'https://docs.example/new']);
  });

  it('a subframe may not navigate anywhere: not to another local file, not to our own page', () => {
    const contents = new EventEmitter() as EventEmitter & {
      setWindowOpenHandler: (fn: unknown) => void;
    };
    contents.setWindowOpenHandler = () => undefined;
    fake.appEvents.get('web-contents-created')?.({}, contents);
    const own = fake.windows[0]!.loaded[0]!;

    const frameNav = (url: string, isMainFrame: boolean): boolean => {
      let prevented = false;
      contents.emit('will-frame-navigate', {
        url,
        isMainFrame,
        isSameDocument: false,
        frame: null,
        preventDefault: () => (prevented = true),
      });
      return prevented;
    };
    // will-navigate (main frame only) never sees these; nothing else stops them.
    expect(frameNav('file:///home/user/.ssh/id_ed25519', false)).toBe(true);
    expect(frameNav('file:///etc/passwd', false)).toBe(true);
    expect(frameNav(own, false)).toBe(true);
    // The main frame is will-navigate's business (tested above); left alone here.
    expect(frameNav(`${own}#/status`, true)).toBe(false);
  });

  it('relays a call from our page to the engine socket and back, and refuses other frames', async () => {
    const win = fake.windows[0]!;
    await until(
      () =>
        win.sent.some(
          ([ch, s]) => ch === IPC.state && (s as { state?: unknown }).state === 'connected',
        ),
      3000,
      'connected',
    );
    const own = win.loaded[0]!;
    const event = (url: string, parent: unknown = null) => ({
      sender: win.webContents,
      senderFrame: { url, parent },
    });
    const call = fake.handlers.get(IPC.call)!;
    expect(await call(event(own), 'system.status', {})).toMatchObject({
      ok: true,
      result: { nodeId: 'fake' },
    });
    expect(await call(event('https://evil.example/'), 'system.status', {})).toMatchObject({
      ok: false,
      error: { code: -32001 },
    });
    expect(await call(event(own, {}), 'system.status', {})).toMatchObject({
      ok: false,
      error: { code: -32001 },
    });
    expect(
      await call({ sender: {}, senderFrame: { url: own, parent: null } }, 'system.status', {}),
    ).toMatchObject({ ok: false });
    expect(await call(event(own), 'system.reboot', {})).toMatchObject({
      ok: false,
      error: { code: -32601 },
    });
    expect(await fake.handlers.get(IPC.getState)!(event(own))).toEqual({ state: 'connected' });
  });

  it('pushes engine events to the window', async () => {
    const win = fake.windows[0]!;
    engine.emit('system.heartbeat', { at: 42, uptimeSec: 3 });
    await until(() => win.sent.some(([ch]) => ch === IPC.event), 2000, 'event');
    expect(win.sent.find(([ch]) => ch === IPC.event)?.[1]).toEqual({
      name: 'system.heartbeat',
      data: { at: 42, uptimeSec: 3 },
    });
  });

  it('shows a raised alert as a desktop notification that opens the window', async () => {
    fake.notificationsSupported = true;
    try {
      const alert = {
        id: 3,
        rule: 'capacity',
        subject: '/var/lib/branchsan',
        severity: 'critical',
        title: 'Filesystem of the data directory 95 % full',
        message: 'Free space on it or grow it.',
        raisedAt: 42,
        clearedAt: null,
        ackedAt: null,
        ackedBy: null,
      } as const;
      engine.emit('alert.raised', { ...alert, severity: 'info', subject: 'quiet' });
      engine.emit('alert.raised', alert);
      await until(() => fake.notifications.length > 0, 2000, 'notification');
      expect(fake.notifications).toEqual([
        {
          title: 'Critical: Filesystem of the data directory 95 % full',
          body: 'Free space on it or grow it.',
          events: ['click'],
        },
      ]);
    } finally {
      fake.notificationsSupported = false;
    }
  });

  it('handles a second instance by focusing, and checked the handshake', () => {
    expect(fake.appEvents.has('second-instance')).toBe(true);
    expect(engine.received[0]?.method).toBe('system.status');
  });

  it('a second instance quits at once; the first one is told through "second-instance"', async () => {
    vi.resetModules();
    fake.lock = false;
    const windows = fake.windows.length;
    const handlers = fake.handlers.size;
    try {
      await import('../../../electron/src/main.js');
      expect(fake.quitCalled).toBe(1);
      expect(fake.windows.length).toBe(windows);
      expect(fake.handlers.size).toBe(handlers);
    } finally {
      fake.lock = true;
    }
  });
});
