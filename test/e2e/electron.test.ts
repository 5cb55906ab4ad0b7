/**
 * The desktop app end to end: Playwright's Electron driver launches dist/electron/main.js
 * against a real engine. Needs an Electron binary; on machines without one (offline
 * installs: the electron package's download is not allowed to run) it is skipped.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { _electron, type ElectronApplication, type Page } from 'playwright-core';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BridgeApi } from '../../contract/bridge.js';
import {
  planEngineStart,
  spawnEngine,
  type SpawnedEngine,
} from '../../electron/src/engine-launcher.js';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

/** The path the electron package reports, if that binary exists. */
function electronBinary(): string | undefined {
  try {
    const path: unknown = createRequire(import.meta.url)('electron');
    return typeof path === 'string' && existsSync(path) ? path : undefined;
  } catch {
    return undefined; // node_modules/electron has no path.txt: the download never ran
  }
}

const ELECTRON = electronBinary();
if (!ELECTRON)
  console.warn('SKIP electron e2e: no Electron binary on this machine (offline install)');

/** What the page's window holds (cast inside page.evaluate; the renderer owns Window's type). */
type PageWindow = { branchsan?: BridgeApi; __states: string[] };

async function startEngine(dataDir: string): Promise<SpawnedEngine> {
  const plan = planEngineStart(
    { mode: 'dev', dataDir, socketPath: join(dataDir, 'engine.sock') },
    { platform: process.platform, appRoot: ROOT, nodePath: process.execPath, env: process.env },
  );
  if (plan.kind !== 'spawn') throw new Error('expected a spawn plan');
  plan.args.push('--no-console');
  return spawnEngine(plan);
}

describe.skipIf(!ELECTRON)('BranchSAN desktop app (Electron)', () => {
  let dir: string;
  let engine: SpawnedEngine;
  let app: ElectronApplication;
  let page: Page;

  beforeAll(async () => {
    for (const f of [
      'dist/electron/main.js',
      'dist/electron/preload.cjs',
      'dist/renderer/index.html',
    ]) {
      if (!existsSync(join(ROOT, f)))
        throw new Error(`${f} is missing: run \`npm run build\` first`);
    }
    dir = mkdtempSync(join(tmpdir(), 'bsan-e2e-'));
    engine = await startEngine(dir);
    app = await _electron.launch({
      executablePath: ELECTRON,
      args: [join(ROOT, 'dist', 'electron', 'main.js')],
      env: { ...process.env, BRANCHSAN_SOCKET: engine.socket, ELECTRON_ENABLE_LOGGING: '1' },
    });
    page = await app.firstWindow();
    await page.waitForLoadState('domcontentloaded');
  }, 60_000);

  afterAll(async () => {
    await app?.close();
    engine?.child.kill('SIGTERM');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('loads the renderer from its own app:// origin, not file://', () => {
    expect(page.url()).toMatch(/^app:\/\/branchsan\/index\.html/);
  });

  it('exposes exactly the bridge, and no Node, to the page', async () => {
    const seen = await page.evaluate(() => ({
      keys: Object.keys((window as unknown as PageWindow).branchsan ?? {}).sort(),
      require: typeof (window as unknown as { require?: unknown }).require,
      process: typeof (window as unknown as { process?: unknown }).process,
      ipc: typeof (window as unknown as { ipcRenderer?: unknown }).ipcRenderer,
    }));
    expect(seen).toEqual({
      keys: ['call', 'getState', 'onEvent', 'onState'],
      require: 'undefined',
      process: 'undefined',
      ipc: 'undefined',
    });
  });

  it('calls the engine through the bridge', async () => {
    await expect
      .poll(
        () =>
          page.evaluate(
            async () => (await (window as unknown as PageWindow).branchsan?.getState())?.state,
          ),
        {
          timeout: 10_000,
        },
      )
      .toBe('connected');
    const reply = await page.evaluate(() =>
      (window as unknown as PageWindow).branchsan?.call('system.status', {}),
    );
    expect(reply).toMatchObject({ ok: true, result: { pid: engine.child.pid } });
    const bad = await page.evaluate(() =>
      (window as unknown as PageWindow).branchsan?.call('system.nope' as 'system.status', {}),
    );
    expect(bad).toMatchObject({ ok: false, error: { code: -32601 } });
  });

  it('creates its window sandboxed and isolated', async () => {
    const prefs = await app.evaluate(({ BrowserWindow }) => {
      const wc = BrowserWindow.getAllWindows()[0]?.webContents as unknown as {
        getLastWebPreferences?: () => unknown;
      };
      return wc?.getLastWebPreferences?.() ?? null;
    });
    if (prefs)
      expect(prefs).toMatchObject({
        sandbox: true,
        contextIsolation: true,
        nodeIntegration: false,
      });
  });

  it('stays on its page when asked to navigate away', async () => {
    const before = page.url();
    await page.evaluate(() => {
      location.href = 'https://example.com/';
    });
    await page.waitForTimeout(500);
    expect(page.url()).toBe(before);
  });

  it('reports the engine going away and coming back', async () => {
    await page.evaluate(() => {
      const w = window as unknown as PageWindow;
      w.__states = [];
      w.branchsan?.onState((s) => w.__states.push(s.state));
    });
    await new Promise<void>((done) => {
      engine.child.once('exit', () => done());
      engine.child.kill('SIGTERM');
    });
    await expect
      .poll(
        () =>
          page.evaluate(
            async () => (await (window as unknown as PageWindow).branchsan?.getState())?.state,
          ),
        {
          timeout: 10_000,
        },
      )
      .not.toBe('connected');
    engine = await startEngine(dir);
    await expect
      .poll(
        () =>
          page.evaluate(
            async () => (await (window as unknown as PageWindow).branchsan?.getState())?.state,
          ),
        {
          timeout: 15_000,
        },
      )
      .toBe('connected');
    const states = await page.evaluate(() => (window as unknown as PageWindow).__states);
    expect(states).toContain('disconnected');
    expect(states.at(-1)).toBe('connected');
  });
});
