/**
 * How the long-running commands (serve, export, bench) end, and how the CLI behaves
 * around them, when the world around them changes: a hangup (SIGHUP, a dropped SSH
 * session), a Ctrl-C that arrives more than once, the launcher (bin/branchsan.js)
 * killed outright, a reader of stdout that goes away (`| head -1`), and an engine
 * that stops answering. Every case runs the built CLI through bin/branchsan.js, as
 * users do, with real processes and real signals, each in a process group of its
 * own so that whatever is left running is killed with its group at the end.
 *
 * Needs the built engine (npm test builds it; or npm run build:engine).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  killGroup,
  killStarted,
  start as startCli,
  type Result,
  type Started,
} from '../helpers/cli-process.js';
import { hasEngineLock, REPO_ROOT, tempDir } from '../helpers/engine.js';

const stopped = new Set<number>();

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // gone
  }
}

/** Starts `branchsan ARGS`, given 20 s unless told otherwise. */
function start(args: string[], timeoutMs = 20_000): Started {
  return startCli(args, timeoutMs);
}

async function until(what: string, ok: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits for a line on the command's stdout (or stderr), or fails if it exits first. */
async function waitFor(p: Started, text: string, on: 'stdout' | 'stderr' = 'stdout') {
  await until(`"${text}" from branchsan\n${p.stdout()}\n${p.stderr()}`, () => {
    if (p[on]().includes(text)) return true;
    if (p.proc.exitCode !== null || p.proc.signalCode !== null) {
      throw new Error(`branchsan exited before "${text}"\n${p.stdout()}\n${p.stderr()}`);
    }
    return false;
  });
}

/** Runs `status --data DATA` until it succeeds (the engine `p` is up and answering). */
async function untilStatusAnswers(p: Started, data: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  let status: Result;
  do {
    await new Promise((r) => setTimeout(r, 100));
    status = await start(['status', '--data', data]).exited;
  } while (status.code !== 0 && p.proc.exitCode === null && Date.now() < deadline);
  expect(status.code, `${status.stderr}\nengine: ${p.stderr()}`).toBe(0);
}

/** The command the launcher re-ran as its child. */
async function childOf(launcher: number): Promise<number> {
  let pid = 0;
  await until(`a child of ${launcher}`, () => {
    const kids = fs.readFileSync(`/proc/${launcher}/task/${launcher}/children`, 'utf8').trim();
    pid = Number(kids.split(/\s+/)[0] ?? 0);
    return pid > 0;
  });
  return pid;
}

function engineReady(p: Started): { pid: number; socket: string } {
  const line = p
    .stdout()
    .split('\n')
    .find((l) => l.includes('"msg":"engine ready"'));
  const rec = JSON.parse(line!) as { pid: number; socket: string };
  return { pid: rec.pid, socket: rec.socket };
}

/** A clean stop removed the lock and the socket, and the next start says nothing of it. */
async function expectStoppedCleanly(data: string, socket: string): Promise<void> {
  expect(hasEngineLock(data)).toBe(false);
  expect(fs.existsSync(socket)).toBe(false);
  const again = start(['serve', '--data', data, '--no-console']);
  await waitFor(again, '"msg":"engine ready"');
  expect(again.stdout()).not.toContain('previous run did not stop cleanly');
  again.proc.kill('SIGTERM');
  expect((await again.exited).code).toBe(0);
}

/** No stack trace, no "bug", no raw write error. */
function expectNoCrash(r: Result): void {
  expect(r.stderr).not.toMatch(/^\s+at |looks like a bug|EPIPE|Unhandled/m);
}

beforeAll(() => {
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist/engine/src/cli/main.js'))) {
    throw new Error('the engine is not built: run `npm run build:engine` first');
  }
});

afterEach(() => {
  for (const pid of stopped) signal(pid, 'SIGCONT');
  stopped.clear();
  killStarted();
});

describe('serve', () => {
  it('stops cleanly on a hangup (SIGHUP to its process group, as a dropped SSH session sends)', async () => {
    const data = tempDir();
    const p = start(['serve', '--data', data, '--no-console']);
    await waitFor(p, '"msg":"engine ready"');
    const { socket } = engineReady(p);
    // the group: the engine gets its own SIGHUP and the one the launcher forwards
    killGroup(p.proc, 'SIGHUP');
    const r = await p.exited;
    expect(r.signal, r.stderr).toBe(null);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain('"msg":"engine stopped"');
    await expectStoppedCleanly(data, socket);
  }, 40_000);

  it('stops cleanly when its launcher is killed outright (SIGKILL), rather than run on orphaned', async () => {
    const data = tempDir();
    const p = start(['serve', '--data', data, '--no-console'], 15_000);
    await waitFor(p, '"msg":"engine ready"');
    const { pid, socket } = engineReady(p);
    expect(pid).not.toBe(p.proc.pid); // the launcher re-ran it as its child
    p.proc.kill('SIGKILL');
    // 'close' comes once the engine, which holds the pipes too, has exited
    const r = await p.exited;
    expect(r.timedOut, `engine ${pid} still running, orphaned`).toBe(false);
    expect(r.stderr).toContain(`branchsan: serve: its launcher (pid ${p.proc.pid}) is gone;`);
    expect(r.stdout).toContain('"msg":"engine stopped"');
    expectNoCrash(r);
    await expectStoppedCleanly(data, socket);
  }, 40_000);

  it('goes on serving when the reader of its stdout goes away (`serve | head -1`)', async () => {
    const data = tempDir();
    const p = start(['serve', '--data', data, '--no-console']);
    // read the first line, as head -1 does, then close the pipe
    await until('the first log line', () => p.stdout().length > 0);
    p.proc.stdout!.destroy();
    // it keeps running and answers: `status` works
    await untilStatusAnswers(p, data);
    const socket = path.join(data, 'engine.sock');
    expect(fs.existsSync(socket)).toBe(true);
    // and its stop, which logs to the closed pipe, is clean too
    p.proc.kill('SIGTERM');
    const r = await p.exited;
    expectNoCrash(r);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    await expectStoppedCleanly(data, socket);
  }, 60_000);

  it('goes on serving, and says so once, when its stdout is a file on a full disk', async () => {
    const data = tempDir();
    // /dev/full: every write fails with ENOSPC, as a redirect to a full disk does
    const full = fs.openSync('/dev/full', 'w');
    const p = startCli(['serve', '--data', data, '--no-console'], 20_000, undefined, full);
    fs.closeSync(full);
    const socket = path.join(data, 'engine.sock');
    await untilStatusAnswers(p, data);
    // the stop logs more lines to the full disk; none is reported again
    p.proc.kill('SIGTERM');
    const r = await p.exited;
    expectNoCrash(r);
    expect(r.code).toBe(0);
    const said = r.stderr.match(/cannot write to standard output \(ENOSPC\)/g) ?? [];
    expect(said.length, r.stderr).toBe(1);
    await expectStoppedCleanly(data, socket);
    // the log file has every line stdout lost
    const log = fs.readFileSync(path.join(data, 'logs', 'engine.log'), 'utf8');
    expect(log).toContain('"msg":"engine ready"');
    expect(log).toContain('"msg":"engine stopped"');
  }, 40_000);
});

describe('export', () => {
  it('goes on serving when the reader of its stdout goes away (`export | head -1`), and stops cleanly', async () => {
    const file = path.join(tempDir(), 'vol.img');
    const p = start(['export', file, '--create-size', '64M', '--port', '0']);
    // the first line comes once the target listens: read it, then close the pipe
    await until('the first line', () => p.stdout().includes('\n'));
    p.proc.stdout!.destroy();
    await new Promise((r) => setTimeout(r, 300));
    expect(p.proc.exitCode, p.stderr()).toBe(null);
    p.proc.kill('SIGINT');
    const r = await p.exited;
    expectNoCrash(r);
    expect(r.stderr).toBe('');
    expect(r.signal).toBe(null);
    expect(r.code).toBe(0);
  });
});

describe('a hung engine', () => {
  it('status and diagnostics end with their timeout, not wait for ever', async () => {
    const data = tempDir();
    const p = start(['serve', '--data', data, '--no-console'], 60_000);
    await waitFor(p, '"msg":"engine ready"');
    const { pid } = engineReady(p);
    process.kill(pid, 'SIGSTOP');
    stopped.add(pid);
    const out = path.join(tempDir(), 'diag.tar.gz');
    // side by side: status waits its fixed 15 s; diagnostics --wait 1
    const [status, diag] = await Promise.all([
      start(['status', '--data', data], 25_000).exited,
      start(['diagnostics', '--data', data, '--wait', '1', '--out', out], 15_000).exited,
    ]);
    expect(status.timedOut, 'status still waiting after its timeout').toBe(false);
    expect(status.stderr).toContain('The engine did not answer system.status within 15 s.');
    expectNoCrash(status);
    expect(status.code).toBe(1);
    expect(status.ms).toBeLessThan(20_000);
    expect(diag.timedOut, 'diagnostics still waiting after --wait').toBe(false);
    expect(diag.stderr).toContain('Building the bundle from the data directory instead.');
    expectNoCrash(diag);
    expect(diag.code).toBe(0);
    expect(fs.existsSync(out)).toBe(true);
    process.kill(pid, 'SIGCONT');
    stopped.delete(pid);
    p.proc.kill('SIGTERM');
    expect((await p.exited).code).toBe(0);
  }, 60_000);
});

describe('bench', () => {
  const args = ['bench', '--quick', '--seconds', '0.1', '--rounds', '1', '--no-cpu-latency'];
  const benchDirs = () =>
    new Set(fs.readdirSync('/dev/shm').filter((n) => n.startsWith('branchsan-bench-')));

  /**
   * Starts a bench and waits until its first pattern is measured: its files made (the
   * one in /dev/shm is named here), its peer process running.
   */
  async function midRun(): Promise<{ p: Started; child: number; dir: string }> {
    const before = benchDirs();
    const p = start(args, 60_000);
    await waitFor(p, ' remote ', 'stderr');
    const made = [...benchDirs()].filter((n) => !before.has(n));
    expect(made).toHaveLength(1);
    return { p, child: await childOf(p.proc.pid!), dir: path.join('/dev/shm', made[0]!) };
  }

  afterEach(() => {
    // the one this file's runs made, if a failed run left it (never another run's)
    for (const d of leftovers) fs.rmSync(d, { recursive: true, force: true });
    leftovers.clear();
  });
  const leftovers = new Set<string>();

  it('a hangup (SIGHUP) mid-run removes the benchmark files and exits 129', async () => {
    const { p, dir } = await midRun();
    leftovers.add(dir);
    p.proc.kill('SIGHUP'); // to the launcher, which forwards it
    const r = await p.exited;
    expect(r.signal, r.stderr).toBe(null);
    expect(r.code, r.stderr).toBe(129);
    expect(r.stderr).toContain('[bench] SIGHUP: stopped; removing the benchmark files');
    expect(fs.existsSync(dir)).toBe(false);
  }, 60_000);

  it('a Ctrl-C that arrives again during its cleanup does not cut the cleanup short', async () => {
    const { p, child, dir } = await midRun();
    leftovers.add(dir);
    // Both processes are signalled, as a terminal does, again and again until the
    // bench exits: the launcher forwards each one, so copies keep reaching the bench
    // while it removes its files.
    const burst = setInterval(() => {
      signal(p.proc.pid!, 'SIGINT');
      signal(child, 'SIGINT');
    }, 1);
    signal(child, 'SIGINT');
    signal(child, 'SIGINT');
    const r = await p.exited;
    clearInterval(burst);
    expect(r.signal, r.stderr).toBe(null);
    expect(r.code, r.stderr).toBe(130);
    expect(r.stderr).toContain('[bench] SIGINT: stopped; removing the benchmark files');
    expect(fs.existsSync(dir)).toBe(false);
  }, 60_000);

  it('stops and removes its files when its launcher is killed outright (SIGKILL)', async () => {
    const { p, child, dir } = await midRun();
    leftovers.add(dir);
    p.proc.kill('SIGKILL');
    const r = await p.exited;
    expect(r.timedOut, `bench ${child} still running, orphaned`).toBe(false);
    expect(r.stderr).toContain(`branchsan: bench: its launcher (pid ${p.proc.pid}) is gone;`);
    expect(r.stderr).toContain('[bench] SIGHUP: stopped; removing the benchmark files');
    expect(fs.existsSync(dir)).toBe(false);
  }, 60_000);
});
