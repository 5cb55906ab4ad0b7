/**
 * Electron main tells the window why it cannot reach the engine (stand-in 'electron'
 * module, real Unix sockets): only main sees the errno, the owner check and the API
 * version handshake, and the window's advice was otherwise "check that the engine
 * service is running" whatever the cause (a desktop user outside the admin group, an
 * engine of another version).
 */
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IPC, type BridgeLinkState } from '../../../contract/bridge.js';
import { FakeEngine, until } from './helpers/fake-engine.js';
import { fake } from './helpers/fake-electron.js';

vi.mock('electron', () => import('./helpers/fake-electron.js'));

describe('Electron main: why the link is down reaches the window', () => {
  let dir: string;
  let socketPath: string;
  let engine: FakeEngine | undefined;

  const states = (): BridgeLinkState[] =>
    (fake.windows[0]?.sent ?? [])
      .filter(([ch]) => ch === IPC.state)
      .map(([, s]) => s as BridgeLinkState);
  const event = () => ({
    sender: fake.windows[0]!.webContents,
    senderFrame: { url: fake.windows[0]!.loaded[0]!, parent: null },
  });
  const getState = () => fake.handlers.get(IPC.getState)!(event()) as BridgeLinkState;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'bsan-main-why-'));
    socketPath = join(dir, 'engine.sock');
    // A plain file where the socket should be: the owner check refuses it.
    writeFileSync(socketPath, '');
    vi.stubEnv('BRANCHSAN_SOCKET', socketPath);
    await import('../../../electron/src/main.js');
    await until(() => fake.windows.length === 1, 2000, 'the window');
  });

  afterAll(async () => {
    fake.appEvents.get('before-quit')?.();
    vi.unstubAllEnvs();
    await engine?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a socket main refuses to trust: the window is told main’s words, which say why', async () => {
    await until(() => states().some((s) => s.state === 'disconnected'), 3000, 'disconnected');
    const down = states().find((s) => s.state === 'disconnected')!;
    expect(down.reason).toBe(`${socketPath} is not a socket: refusing to talk to it`);
    expect(getState()).toEqual({ state: 'disconnected', reason: down.reason });
  });

  it('an engine of another API version: the window is told to install matching versions', async () => {
    rmSync(socketPath);
    engine = new FakeEngine(socketPath);
    const status = engine.handlers.get('system.status')!;
    engine.handlers.set('system.status', (p, s) => ({
      ...(status(p, s) as object),
      apiVersion: 2,
    }));
    await engine.start();
    await until(
      () => states().some((s) => s.reason?.includes('install matching versions') === true),
      10_000,
      'the handshake failure',
    );
    expect(states().at(-1)?.reason).toMatch(
      /did not complete the handshake: the engine speaks API version 2, this app 1: install matching versions$/,
    );
  });

  it('once connected, the window gets the state alone: no stale reason', async () => {
    engine!.handlers.delete('system.status');
    engine!.handlers.set('system.status', () => ({
      version: '0.0.0-fake',
      apiVersion: 1,
      nodeId: 'fake',
      hostname: 'fake',
      pid: process.pid,
      startedAt: Date.now(),
      uptimeSec: 1,
      dataDir: '/nowhere',
      dbSchemaVersion: 1,
    }));
    await until(() => states().at(-1)?.state === 'connected', 15_000, 'connected');
    expect(states().at(-1)).toEqual({ state: 'connected' });
    expect(getState()).toEqual({ state: 'connected' });
  });
});
