import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runInNewContext } from 'node:vm';
import { BRIDGE_GLOBAL, IPC, type BridgeApi } from '../../../contract/bridge.js';

/** scripts/build-electron.js is plain JS; its one export, typed here. */
type BuildElectron = (opts: { outdir: string }) => Promise<{ main: string; preload: string }>;
const BUILD_SCRIPT = new URL('../../../scripts/build-electron.js', import.meta.url).href;

/** Every key of BridgeApi; the type below fails to compile if one is missing. */
const BRIDGE_KEYS = [
  'call',
  'getState',
  'onEvent',
  'onState',
] as const satisfies readonly (keyof BridgeApi)[];
type Missing = Exclude<keyof BridgeApi, (typeof BRIDGE_KEYS)[number]>;
const exhaustive: [Missing] extends [never] ? true : false = true;

const BUILTINS = new Set(['electron']);

/** Module specifiers a bundle loads at run time: require() calls and import statements. */
function runtimeImports(code: string): string[] {
  const specs: string[] = [];
  for (const m of code.matchAll(/\brequire\s*\(\s*(["'`])([^"'`]*)\1\s*\)/g))
    specs.push(m[2] ?? '');
  for (const m of code.matchAll(/^\s*import\s[^;]*?from\s*["']([^"']+)["']/gm))
    specs.push(m[1] ?? '');
  for (const m of code.matchAll(/^\s*import\s*["']([^"']+)["']/gm)) specs.push(m[1] ?? '');
  return specs;
}

describe('the Electron bundles from scripts/build-electron.js', () => {
  let out: string;
  let preload: string;
  let main: string;

  beforeAll(async () => {
    out = mkdtempSync(join(tmpdir(), 'bsan-bundle-'));
    const { buildElectron } = (await import(BUILD_SCRIPT)) as { buildElectron: BuildElectron };
    const built = await buildElectron({ outdir: out });
    preload = readFileSync(built.preload, 'utf8');
    main = readFileSync(built.main, 'utf8');
  }, 60_000);
  afterAll(() => rmSync(out, { recursive: true, force: true }));

  it('writes main.js (+ map) and one preload file', () => {
    expect(readdirSync(out).sort()).toEqual(['main.js', 'main.js.map', 'preload.cjs']);
    expect(exhaustive).toBe(true);
  });

  it('preload is a single CommonJS file whose only require is electron', () => {
    expect(runtimeImports(preload)).toEqual(['electron']);
    expect(preload.match(/\brequire\s*\(/g)).toHaveLength(1);
    expect(preload).not.toMatch(/^\s*(import|export)\s/m);
    expect(preload).not.toMatch(/sourceMappingURL/);
  });

  it('main imports nothing at run time but electron and Node built-ins', () => {
    const specs = runtimeImports(main);
    expect(specs).toContain('electron');
    for (const s of specs) expect(BUILTINS.has(s) || s.startsWith('node:')).toBe(true);
    expect(main).not.toMatch(/sandbox:\s*false|nodeIntegration:\s*true|contextIsolation:\s*false/);
  });

  it('preload exposes exactly BridgeApi as window.branchsan, and forwards over the IPC channels', async () => {
    const exposed: [string, Record<string, unknown>][] = [];
    const invoked: unknown[][] = [];
    const listeners = new Map<string, Set<(...a: unknown[]) => void>>();
    const fakeElectron = {
      contextBridge: {
        exposeInMainWorld: (key: string, value: Record<string, unknown>) =>
          exposed.push([key, value]),
      },
      ipcRenderer: {
        invoke: (...args: unknown[]) => {
          invoked.push(args);
          return Promise.resolve({ ok: true, result: 'r' });
        },
        on: (ch: string, l: (...a: unknown[]) => void) => {
          if (!listeners.has(ch)) listeners.set(ch, new Set());
          listeners.get(ch)?.add(l);
        },
        removeListener: (ch: string, l: (...a: unknown[]) => void) => listeners.get(ch)?.delete(l),
      },
    };
    const required: string[] = [];
    const sandboxRequire = (id: string): unknown => {
      required.push(id);
      if (id === 'electron') return fakeElectron;
      throw new Error(`a sandboxed preload cannot require ${id}`);
    };
    const module = { exports: {} };
    runInNewContext(preload, { require: sandboxRequire, module, exports: module.exports });

    expect(required).toEqual(['electron']);
    expect(exposed).toHaveLength(1);
    const [key, api] = exposed[0]!;
    expect(key).toBe(BRIDGE_GLOBAL);
    expect(Object.keys(api).sort()).toEqual([...BRIDGE_KEYS].sort());
    for (const k of BRIDGE_KEYS) expect(typeof api[k]).toBe('function');
    const bridge = api as unknown as BridgeApi;

    expect(await bridge.call('system.status', {})).toEqual({ ok: true, result: 'r' });
    await bridge.getState();
    expect(invoked).toEqual([[IPC.call, 'system.status', {}], [IPC.getState]]);

    const events: unknown[] = [];
    const offEvent = bridge.onEvent((name, data) => events.push([name, data]));
    const states: unknown[] = [];
    const offState = bridge.onState((s) => states.push(s));
    for (const l of listeners.get(IPC.event) ?? [])
      l({}, { name: 'system.heartbeat', data: { at: 1 } });
    for (const l of listeners.get(IPC.state) ?? [])
      l({}, { state: 'disconnected', reason: 'nothing listens on /x' });
    expect(events).toEqual([['system.heartbeat', { at: 1 }]]);
    expect(states).toEqual([{ state: 'disconnected', reason: 'nothing listens on /x' }]);
    offEvent();
    offState();
    expect(listeners.get(IPC.event)?.size).toBe(0);
    expect(listeners.get(IPC.state)?.size).toBe(0);
  });
});
