/**
 * The built CLI run as a user runs it: through bin/branchsan.js, without the malloc
 * variables (so the launcher re-runs the long-running commands as its child), in a
 * process group of its own (as a terminal runs it), so that a command that wrongly
 * keeps running is killed with its whole group when its time is up.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { BIN } from './engine.js';

export interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** From start to the end of the whole group's output. */
  ms: number;
}

export interface Started {
  proc: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<Result>;
}

export const env = { ...process.env };
for (const k of ['MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_', 'MALLOC_MMAP_THRESHOLD_'])
  delete env[k];

const live = new Set<ChildProcess>();

export function killGroup(proc: ChildProcess, signal: NodeJS.Signals): void {
  try {
    process.kill(-proc.pid!, signal);
  } catch {
    // the group is gone
  }
}

/** Kills what is still running of every command started here (for afterEach). */
export function killStarted(): void {
  for (const p of live) killGroup(p, 'SIGKILL');
}

/**
 * Starts `branchsan ARGS`; its group is killed after timeoutMs. `stdoutFd`: a file
 * descriptor its stdout goes to instead of a pipe (stdout() is then empty).
 */
export function start(
  args: string[],
  timeoutMs = 10_000,
  input?: string,
  stdoutFd?: number,
): Started {
  const began = Date.now();
  const proc = spawn(process.execPath, [BIN, ...args], {
    stdio: [input === undefined ? 'ignore' : 'pipe', stdoutFd ?? 'pipe', 'pipe'],
    detached: true,
    env,
  });
  live.add(proc);
  if (input !== undefined) {
    proc.stdin!.on('error', () => undefined); // EPIPE: it exited without reading
    proc.stdin!.end(input);
  }
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  proc.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(proc, 'SIGKILL');
  }, timeoutMs);
  const exited = new Promise<Result>((resolve) =>
    // 'close': every process holding the pipes (the launcher's child too) is gone
    proc.once('close', (code, signal) => {
      clearTimeout(timer);
      live.delete(proc);
      resolve({ code, signal, stdout, stderr, timedOut, ms: Date.now() - began });
    }),
  );
  return { proc, stdout: () => stdout, stderr: () => stderr, exited };
}
