/**
 * Vitest global setup: every test run gets a temporary directory of its own, and
 * it is removed when the run ends.
 *
 * Tests create data directories, sockets and disk images with os.tmpdir() (see
 * tempDir in helpers/engine.ts), and the processes they start (engines, the Linux
 * host's QEMU runner) inherit TMPDIR. Pointing TMPDIR at one directory per run
 * before any worker starts means a run leaves nothing behind in /tmp, even when
 * a test fails before its own cleanup.
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
    if (process.env.BRANCHSAN_KEEP_TEST_TMP === '1') {
      console.log(`test files kept in ${root} (BRANCHSAN_KEEP_TEST_TMP=1)`);
      return;
    }
    fs.rmSync(root, { recursive: true, force: true, maxRetries: 3 });
  };
}
