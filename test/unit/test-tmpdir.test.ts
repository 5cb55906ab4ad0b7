import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import setup from '../setup/tmpdir.js';

describe('per-run temporary directory (vitest global setup)', () => {
  const outer = process.env.TMPDIR;
  const keep = process.env.BRANCHSAN_KEEP_TEST_TMP;
  afterEach(() => {
    if (outer === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = outer;
    if (keep === undefined) delete process.env.BRANCHSAN_KEEP_TEST_TMP;
    else process.env.BRANCHSAN_KEEP_TEST_TMP = keep;
  });

  it('is the TMPDIR this run sees', () => {
    // The global setup ran before this worker started.
    expect(path.basename(os.tmpdir())).toMatch(/^branchsan-run-/);
  });

  it('points TMPDIR at a fresh directory and removes it with its contents at teardown', () => {
    delete process.env.BRANCHSAN_KEEP_TEST_TMP;
    const parent = os.tmpdir();
    const teardown = setup();
    const root = os.tmpdir();
    expect(path.dirname(root)).toBe(parent);
    expect(path.basename(root)).toMatch(/^branchsan-run-/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'leftover-'));
    fs.writeFileSync(path.join(dir, 'disk.img'), 'x');
    teardown();
    expect(fs.existsSync(root)).toBe(false);
    expect(process.env.TMPDIR).toBe(outer);
  });

  it('keeps the directory when BRANCHSAN_KEEP_TEST_TMP=1', () => {
    process.env.BRANCHSAN_KEEP_TEST_TMP = '1';
    const teardown = setup();
    const root = os.tmpdir();
    fs.writeFileSync(path.join(root, 'console.log'), 'x');
    teardown();
    expect(fs.readFileSync(path.join(root, 'console.log'), 'utf8')).toBe('x');
    expect(process.env.TMPDIR).toBe(outer);
    fs.rmSync(root, { recursive: true });
  });

  it('kills at teardown what the tests started and left running, and nothing else', async () => {
    delete process.env.BRANCHSAN_KEEP_TEST_TMP;
    const teardown = setup();
    const root = os.tmpdir();
    const sleeper = (env: NodeJS.ProcessEnv, ...argv: string[]): ChildProcess =>
      spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', ...argv], {
        env: { ...process.env, ...env },
        stdio: 'ignore',
      });
    const exited = (c: ChildProcess) =>
      new Promise<NodeJS.Signals | null>((resolve) =>
        c.exitCode !== null || c.signalCode !== null
          ? resolve(c.signalCode)
          : c.once('exit', (_code, signal) => resolve(signal)),
      );
    // A test's engine (inherits TMPDIR), another run's process, a worker of this run.
    const leftover = sleeper({ TMPDIR: root }, 'branchsan-serve-like');
    const foreign = sleeper({ TMPDIR: outer ?? '/tmp' });
    const worker = sleeper({ TMPDIR: root }, '/x/node_modules/vitest/dist/workers/forks.js');
    const spawned = [leftover, foreign, worker];
    try {
      await Promise.all(spawned.map((c) => new Promise((r) => c.once('spawn', r))));
      teardown();
      expect(await exited(leftover)).toBe('SIGKILL');
      await new Promise((r) => setTimeout(r, 100));
      expect(foreign.exitCode === null && foreign.signalCode === null).toBe(true);
      expect(worker.exitCode === null && worker.signalCode === null).toBe(true);
    } finally {
      for (const c of spawned) c.kill('SIGKILL');
    }
  });
});
