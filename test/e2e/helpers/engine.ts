/**
 * An engine for the browser tests: the shared launcher (test/helpers/engine.ts: runs
 * `branchsan serve --data DIR --console-port 0` and parses its "engine ready" line),
 * plus what a console test needs on top: a built bundle, and the console URL.
 */
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startEngine as startEngineProcess } from '../../helpers/engine.js';

export interface ConsoleEngine {
  /** What `branchsan serve` printed for people to open, token included. */
  consoleUrl: string;
  socketPath: string;
  dataDir: string;
  /** The engine's own identity, from its ready line, to compare with what the page shows. */
  nodeId: string;
  pid: number;
  /** SIGTERM, then waits for the exit; safe to call twice. */
  stop(): Promise<void>;
}

const ENGINE_MAIN = path.join(REPO_ROOT, 'dist/engine/src/cli/main.js');
const CONSOLE_INDEX = path.join(REPO_ROOT, 'dist/renderer/index.html');

/** Fails early, with the command to run, when the engine or the console bundle is missing or stale. */
export function assertBuilt(): void {
  for (const [file, script] of [
    [ENGINE_MAIN, 'build:engine'],
    [CONSOLE_INDEX, 'build:renderer'],
  ] as const) {
    if (!fs.existsSync(file))
      throw new Error(`${file} is missing: run \`npm run ${script}\` first.`);
  }
  const built = fs.statSync(CONSOLE_INDEX).mtimeMs;
  for (const dir of ['renderer', 'contract']) {
    const newer = newestFile(path.join(REPO_ROOT, dir));
    if (!newer || newer.mtimeMs <= built) continue;
    throw new Error(
      `The console bundle is older than ${path.relative(REPO_ROOT, newer.file)}: run \`npm run build:renderer\`.`,
    );
  }
}

export async function startEngine(opts: {
  dataDir: string;
  args?: string[];
}): Promise<ConsoleEngine> {
  const engine = await startEngineProcess({ dataDir: opts.dataDir, args: opts.args ?? [] });
  const ready = engine.lines.find((l) => l.msg === 'engine ready') ?? {};
  if (!engine.consoleUrl) {
    await engine.stop();
    throw new Error('The engine started without a web console (no consoleUrl in its ready line).');
  }
  let stopped: Promise<void> | undefined;
  return {
    consoleUrl: engine.consoleUrl,
    socketPath: engine.socketPath,
    dataDir: String(ready.dataDir ?? opts.dataDir),
    nodeId: String(ready.nodeId),
    pid: engine.pid,
    stop: () => (stopped ??= engine.stop().then(() => undefined)),
  };
}

function newestFile(dir: string): { file: string; mtimeMs: number } | null {
  let newest: { file: string; mtimeMs: number } | null = null;
  for (const entry of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (!entry.isFile()) continue;
    const file = path.join(entry.parentPath, entry.name);
    const { mtimeMs } = fs.statSync(file);
    if (!newest || mtimeMs > newest.mtimeMs) newest = { file, mtimeMs };
  }
  return newest;
}
