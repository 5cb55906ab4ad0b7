/**
 * Starts a real engine process through the `branchsan` command (as users do) and
 * waits for its "engine ready" log line. Build first (npm test does: pretest).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = path.join(REPO_ROOT, 'bin', 'branchsan.js');
/** The optional C addon was built (engine/native/build.js skips it without a compiler). */
export const NATIVE_BUILT = fs.existsSync(
  path.join(REPO_ROOT, 'engine', 'native', 'build', 'branchsan_native.node'),
);
/**
 * Who an engine names as the caller of this process's socket calls, as a regular
 * expression's source: the user (`root@local`), or without the addon the connection's
 * number (`local#4`).
 */
export const LOCAL_ACTOR = NATIVE_BUILT ? `${os.userInfo().username}@local` : 'local#\\d+';

export interface RunningEngine {
  dataDir: string;
  socketPath: string;
  consoleUrl: string | null;
  /** pid of the engine itself (the launcher may re-exec). */
  pid: number;
  proc: ChildProcess;
  /** All stdout lines so far, parsed where JSON. */
  lines: Record<string, unknown>[];
  stderr: () => string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/**
 * An engine lock is in DIR (a symbolic link whose target is no path: existsSync,
 * which follows it, would say false even while it is there).
 */
export function hasEngineLock(dataDir: string): boolean {
  return fs.lstatSync(path.join(dataDir, 'engine.lock'), { throwIfNoEntry: false }) !== undefined;
}

export function tempDir(prefix = 'branchsan-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function startEngine(
  opts: {
    dataDir?: string;
    args?: string[];
    timeoutMs?: number;
    env?: NodeJS.ProcessEnv;
    /** Run it as this user (the test runs as root): its data directory must be theirs. */
    user?: { uid: number; gid: number };
  } = {},
): Promise<RunningEngine> {
  const dataDir = opts.dataDir ?? tempDir();
  const extra = opts.args ?? [];
  // a free console port unless the test names one
  const consolePort = extra.includes('--console-port') ? [] : ['--console-port', '0'];
  const args = [BIN, 'serve', '--data', dataDir, ...consolePort, ...extra];
  const proc = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
    ...opts.user,
  });
  const lines: Record<string, unknown>[] = [];
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  let pending = '';
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject(new Error(`engine not ready within ${opts.timeoutMs ?? 20000} ms\nstderr: ${err}`)),
      opts.timeoutMs ?? 20_000,
    );
    proc.stdout!.on('data', (d: Buffer) => {
      pending += d.toString();
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl);
        pending = pending.slice(nl + 1);
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          lines.push(rec);
          if (rec.msg === 'engine ready') {
            clearTimeout(timer);
            resolve(rec);
          }
        } catch {
          lines.push({ raw: line });
        }
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`engine exited with ${code} before ready\nstderr: ${err}`));
    });
  });
  const rec = await ready;
  const exited = new Promise<number | null>((resolve) => {
    if (proc.exitCode !== null) resolve(proc.exitCode);
    else proc.once('exit', (code) => resolve(code));
  });
  return {
    dataDir,
    socketPath: rec.socket as string,
    consoleUrl: (rec.consoleUrl as string | null) ?? null,
    pid: rec.pid as number,
    proc,
    lines,
    stderr: () => err,
    async stop(signal = 'SIGTERM') {
      if (proc.exitCode === null && proc.signalCode === null) {
        if (signal === 'SIGKILL') process.kill(rec.pid as number, 'SIGKILL');
        proc.kill(signal);
      }
      return exited;
    },
  };
}

/** Runs `branchsan ARGS` to completion. */
export function runCli(
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`branchsan ${args.join(' ')} timed out\n${stderr}`));
    }, opts.timeoutMs ?? 20_000);
    p.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
