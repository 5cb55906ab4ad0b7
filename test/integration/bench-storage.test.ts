/**
 * `npm run bench:storage` (dist/engine/src/bench/storage-bench.js) as a person runs it:
 * its file is 256 MiB, in /dev/shm by default, so an interrupted run must not leave it.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { REPO_ROOT, tempDir } from '../helpers/engine.js';
import { canMountTmpfs, smallFs, unmountSmallFs } from '../helpers/small-fs.js';

const SCRIPT = path.join(REPO_ROOT, 'dist/engine/src/bench/storage-bench.js');

describe('storage micro-benchmark script', () => {
  it('Ctrl-C mid-run removes its benchmark file', async () => {
    const dir = tempDir('branchsan-storage-bench-');
    // its own process group, as a terminal's foreground job: Ctrl-C signals the
    // malloc-tuned re-run and its parent alike
    const p = spawn(
      process.execPath,
      [SCRIPT, '--dirs', dir, '--size-mib', '8', '--seconds', '0.2', '--warmup-seconds', '0'],
      { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    let stdout = '';
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<void>((resolve) => p.on('exit', () => resolve()));
    // interrupted once the first result is out: the file is there, being measured
    await new Promise<void>((resolve, reject) => {
      p.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (/IOPS/.test(stdout)) resolve();
      });
      void exited.then(() => reject(new Error(`ended too early:\n${stdout}\n${stderr}`)));
    });
    expect(fs.readdirSync(dir)).toHaveLength(1);
    process.kill(-p.pid!, 'SIGINT');
    await exited;
    // the re-run (not waited for by its killed parent) ends at its next await
    const deadline = Date.now() + 10_000;
    while (fs.readdirSync(dir).length > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    expect(fs.readdirSync(dir)).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it('a stop sent to its process alone (kill PID) ends the re-run too, which removes its file', async () => {
    const dir = tempDir('branchsan-storage-bench-');
    const p = spawn(
      process.execPath,
      [SCRIPT, '--dirs', dir, '--size-mib', '8', '--seconds', '2', '--warmup-seconds', '0'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    const exited = new Promise<number | null>((resolve) => p.on('exit', (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      p.stdout.on('data', (d: Buffer) => {
        stdout += d.toString();
        if (/IOPS/.test(stdout)) resolve();
      });
      void exited.then(() => reject(new Error(`ended too early:\n${stdout}`)));
    });
    /** The malloc-tuned re-run measuring in `dir`, by its command line. */
    const reruns = () =>
      fs.readdirSync('/proc').filter((d) => {
        try {
          const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8');
          return /^\d+$/.test(d) && Number(d) !== p.pid && cmd.includes(dir);
        } catch {
          return false; // gone meanwhile
        }
      });
    expect(reruns()).toHaveLength(1);
    expect(fs.readdirSync(dir)).toHaveLength(1);
    p.kill('SIGTERM');
    // it waits for the re-run, which stops at once (its run had a minute to go)
    expect(await exited).toBe(143);
    expect(reruns()).toEqual([]);
    expect(fs.readdirSync(dir)).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it.each([
    [
      ['--dirs', '/nonexistent-branchsan'],
      /--dirs: \/nonexistent-branchsan is not a directory; give existing directories/,
    ],
    [['--seconds', 'abc'], /--seconds abc: give a number above 0, e.g. --seconds 2/],
    [['--size-mib', '0.5'], /--size-mib 0.5: give a whole number above 0/],
    // not a number: the measured window waited for a warm-up that never ended
    [['--warmup-seconds', 'abc'], /--warmup-seconds abc: give a number of 0 or more/],
  ])('refuses %j with one line saying what to give, before any file is made', (args, message) => {
    const r = spawnSync(process.execPath, [SCRIPT, ...args, '--dirs', '/dev/shm'], {
      encoding: 'utf8',
      timeout: 20_000, // a refusal is immediate; a run that hangs is ended (SIGTERM)
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(r.stdout).toBe('');
  });
});

describe.skipIf(!canMountTmpfs)('storage micro-benchmark without room for its file', () => {
  afterAll(() => unmountSmallFs());

  it('refuses a directory that cannot hold the file before any work, saying what to do', () => {
    const full = smallFs('branchsan-storage-bench-full-', '4m');
    // the room problem is in the second directory: found before the first one's minutes
    const r = spawnSync(
      process.execPath,
      [SCRIPT, '--dirs', `/dev/shm,${full}`, '--size-mib', '8', '--seconds', '0.05'],
      { encoding: 'utf8', timeout: 20_000 },
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(
      `storage-bench: ${full} has 4 MiB free; the benchmark file needs 8 MiB there.`,
    );
    expect(r.stderr).toMatch(/give a smaller --size-mib, or other --dirs/);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(r.stdout).toBe(''); // nothing measured
    expect(fs.readdirSync(full)).toEqual([]); // no part of a file left
  });
});
