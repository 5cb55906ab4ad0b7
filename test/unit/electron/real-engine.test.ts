/**
 * The link, the dev launcher and scripts/start.js against the REAL engine
 * (bin/branchsan.js serve; needs `npm run build:engine`, which `npm test` runs first).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { API_VERSION, SystemStatus } from '../../../contract/api.js';
import {
  planEngineStart,
  spawnEngine,
  type StartPlan,
  type SpawnedEngine,
} from '../../../electron/src/engine-launcher.js';
import { EngineLink } from '../../../electron/src/engine-link.js';
import { until } from './helpers/fake-engine.js';

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const ENGINE_BUILT = existsSync(join(ROOT, 'dist', 'engine', 'src', 'cli', 'main.js'));
if (!ENGINE_BUILT)
  console.warn('SKIP real-engine tests: the engine is not built (run `npm run build:engine`)');

function devPlan(dataDir: string): Extract<StartPlan, { kind: 'spawn' }> {
  const plan = planEngineStart(
    { mode: 'dev', dataDir, socketPath: join(dataDir, 'engine.sock') },
    { platform: process.platform, appRoot: ROOT, nodePath: process.execPath, env: process.env },
  );
  if (plan.kind !== 'spawn') throw new Error('expected a spawn plan');
  plan.args.push('--console-port', '0');
  return plan;
}

function stop(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((done) => {
    child.once('exit', (code) => done(code));
    child.kill(signal);
  });
}

describe.skipIf(!ENGINE_BUILT)('against the real engine', () => {
  let dir: string;
  const engines: SpawnedEngine[] = [];
  let link: EngineLink | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bsan-real-'));
  });
  afterEach(async () => {
    link?.close();
    link = undefined;
    await Promise.all(engines.splice(0).map((e) => stop(e.child)));
    rmSync(dir, { recursive: true, force: true });
  });

  it('the dev launcher starts it; the link checks the socket, handshakes, calls, gets heartbeats, survives a restart', async () => {
    const first = await spawnEngine(devPlan(dir));
    engines.push(first);
    expect(first.socket).toBe(join(dir, 'engine.sock'));
    expect(first.consoleUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=/);
    // 0660 for the branchsan-admin group when it exists, else owner-only (engine: admin-group.ts)
    const adminGroup = spawnSync('getent', ['group', 'branchsan-admin']).status === 0;
    expect(statSync(first.socket).mode & 0o777).toBe(adminGroup ? 0o660 : 0o600);

    link = new EngineLink({
      socketPath: first.socket,
      backoff: { initialMs: 50, maxMs: 400 },
      handshake: async (call) => {
        const s = SystemStatus.parse(await call('system.status', {}));
        if (s.apiVersion !== API_VERSION) throw new Error('API version mismatch');
      },
    });
    const l = link;
    l.start();
    await until(() => l.state === 'connected', 5000, 'connected');
    const status = SystemStatus.parse(await l.call('system.status', {}));
    expect(status.pid).toBe(first.child.pid);
    expect(status.dataDir).toBe(dir);

    const beats: unknown[] = [];
    l.on('system.heartbeat', (d) => beats.push(d));
    await until(() => beats.length >= 1, 3000, 'a heartbeat');

    expect(await stop(first.child)).toBe(0);
    await until(() => l.state !== 'connected', 3000, 'disconnect');
    await expect(l.call('system.status', {})).rejects.toThrow(/Not connected/);

    const second = await spawnEngine(devPlan(dir));
    engines.push(second);
    await until(() => l.state === 'connected', 5000, 'reconnect');
    expect((await l.call('system.status', {})).pid).toBe(second.child.pid);
  });

  it('a second engine on the same data directory refuses to start, and the launcher says why', async () => {
    engines.push(await spawnEngine(devPlan(dir)));
    await expect(spawnEngine(devPlan(dir), 15_000)).rejects.toThrow(
      /the engine did not start: it exited/,
    );
  });
});

/** Runs scripts/start.js with no Electron binary and collects its stdout. */
function startScript(dataDir: string): { child: ChildProcess; out: () => string } {
  let out = '';
  const child = spawn(process.execPath, [join(ROOT, 'scripts', 'start.js')], {
    cwd: ROOT,
    env: {
      ...process.env,
      BRANCHSAN_DATA: dataDir,
      BRANCHSAN_CONSOLE_PORT: '0',
      ELECTRON_OVERRIDE_DIST_PATH: join(dataDir, 'no-electron-here'),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (out += c));
  return { child, out: () => out };
}

const NO_ELECTRON =
  /^Electron binary not installed \(ELECTRON_SKIP_BINARY_DOWNLOAD \/ offline machine\): open the console at (\S+) instead$/m;

describe.skipIf(!ENGINE_BUILT)('scripts/start.js without an Electron binary', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bsan-start-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('keeps the engine in the foreground, prints the console URL once, and stops it on Ctrl-C', async () => {
    const { child, out } = startScript(dir);
    try {
      await until(() => NO_ELECTRON.test(out()), 20_000, 'the no-Electron line');
      expect(out().match(new RegExp(NO_ELECTRON.source, 'gm'))).toHaveLength(1);
      const url = NO_ELECTRON.exec(out())?.[1] ?? '';
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=/);
      const res = await fetch(url);
      expect(res.status).toBeLessThan(500);
      expect(existsSync(join(dir, 'engine.sock'))).toBe(true);
      expect(await stop(child, 'SIGINT')).toBe(0);
      expect(out()).toMatch(/"msg":"engine stopped"/);
      expect(existsSync(join(dir, 'engine.sock'))).toBe(false);
    } finally {
      await stop(child, 'SIGKILL');
    }
  });

  it('uses an engine that already serves the directory and leaves it running', async () => {
    const engine = await spawnEngine(devPlan(dir));
    try {
      const { child, out } = startScript(dir);
      expect(await new Promise((done) => child.once('exit', done))).toBe(0);
      expect(out()).toMatch(/An engine already serves .* using it\./);
      expect(out()).toMatch(
        /^Electron binary not installed \(.*\): open the console at .+ instead$/m,
      );
      expect(engine.child.exitCode).toBeNull();
    } finally {
      await stop(engine.child);
    }
  });
});
