/**
 * Vitest global setup: every test run gets a temporary directory of its own, and
 * it is removed when the run ends, with every process the run's tests left running.
 *
 * Tests create data directories, sockets and disk images with os.tmpdir() (see
 * tempDir in helpers/engine.ts), and the processes they start (engines, the Linux
 * host's QEMU runner) inherit TMPDIR. Pointing TMPDIR at one directory per run
 * before any worker starts means a run leaves nothing behind in /tmp, even when
 * a test fails before its own cleanup.
 *
 * The same mark finds the processes: a test that timed out while a helper waited for
 * its command never reaches that helper's kill, and the engine it started would run
 * on, holding its ports (found so: an engine left serving for half an hour after a
 * failed run). At the end of the run every process whose environment names this
 * run's TMPDIR, other than Vitest's own, is killed, and the run says which.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export default function setup(): () => void {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'branchsan-run-'));
  const previous = process.env.TMPDIR;
  process.env.TMPDIR = root;
  return () => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    const killed = killLeftovers(root);
    if (killed.length > 0) {
      console.warn(
        `killed ${killed.length} process(es) the tests left running:\n  ${killed.join('\n  ')}`,
      );
    }
    if (process.env.BRANCHSAN_KEEP_TEST_TMP === '1') {
      console.log(`test files kept in ${root} (BRANCHSAN_KEEP_TEST_TMP=1)`);
      return;
    }
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  };
}

/** SIGKILLs every process started with TMPDIR=root that is not Vitest's; returns "pid cmdline" of each. */
export function killLeftovers(root: string): string[] {
  const killed: string[] = [];
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return killed; // no /proc: nothing to look at
  }
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue;
    let env: string;
    let cmdline: string;
    try {
      env = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
      cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'latin1').split('\0').join(' ').trim();
    } catch {
      continue; // gone, or not ours to read
    }
    if (!env.split('\0').includes(`TMPDIR=${root}`)) continue;
    if (cmdline.includes('/vitest/')) continue; // a worker of this run
    try {
      process.kill(Number(pid), 'SIGKILL');
      killed.push(`${pid} ${cmdline}`);
    } catch {
      // it ended meanwhile
    }
  }
  return killed;
}
