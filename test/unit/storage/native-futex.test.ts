/**
 * The addon's futexWait/futexWake (engine/native/src/branchsan_native.c), on which the
 * storage I/O threads sleep on their doorbells, and the pool's use of them: real
 * threads, a real file.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { openFileBackend, type FdBackend } from '../../../engine/src/storage/file.js';
import { read, scratchDir, write } from './helpers.js';
import { NATIVE_BUILT, REPO_ROOT } from '../../helpers/engine.js';

const ADDON = join(REPO_ROOT, 'engine', 'native', 'build', 'branchsan_native.node');
const scratch = scratchDir('futex');
afterAll(() => scratch.cleanup());

interface Futex {
  futexWait(view: Int32Array, index: number, expected: number, timeoutMs: number): number;
  futexWake(view: Int32Array, index: number, count: number): number;
}

describe.runIf(NATIVE_BUILT)('native futexWait / futexWake', () => {
  const addon = createRequire(import.meta.url)(ADDON) as Futex;

  it('returns at once when the word differs, 1 when the timeout ends the wait', () => {
    const word = new Int32Array(new SharedArrayBuffer(8));
    word[1] = 5;
    expect(addon.futexWait(word, 1, 4, 10_000)).toBe(0);
    expect(addon.futexWait(word, 1, 5, 20)).toBe(1);
    expect(addon.futexWake(word, 1, 1)).toBe(0); // nobody sleeps there
  });

  it('wakes a thread asleep on the word, and refuses bad arguments', async () => {
    const word = new Int32Array(new SharedArrayBuffer(8));
    const w = new Worker(
      `const { workerData, parentPort } = require('node:worker_threads');
       const addon = require(workerData.addon);
       Atomics.store(workerData.word, 0, 1); // about to sleep
       parentPort.postMessage(addon.futexWait(workerData.word, 1, 0, 60000));`,
      { eval: true, workerData: { addon: ADDON, word } },
    );
    const answer = new Promise((resolve) => w.once('message', resolve));
    while (Atomics.load(word, 0) === 0) await new Promise((r) => setTimeout(r, 1));
    // It may not have reached the system call yet: wake until one wake found it asleep.
    Atomics.store(word, 1, 1);
    let woken = 0;
    while (woken === 0) {
      woken = addon.futexWake(word, 1, 1);
      if (woken === 0) await new Promise((r) => setTimeout(r, 5));
      if (woken === 0 && (await Promise.race([answer, null])) !== null) break; // saw 1 first
    }
    expect(await answer).toBe(0); // woken (or the word had changed), not timed out
    await w.terminate();
    expect(() => addon.futexWait(new Int32Array(4), 9, 0, 1)).toThrow(/EINVAL/);
    expect(() => addon.futexWake(word, 1, 0)).toThrow(/EINVAL/);
  });

  it('the I/O threads sleep on it: rings wake them, and one asleep still stops for terminate()', async () => {
    const b = (await openFileBackend({
      path: join(scratch.dir, 'vol.img'),
      sizeBytes: 1 << 20,
      create: true,
      io: { inlineReads: false },
    })) as FdBackend;
    try {
      expect(b.futexDoorbell).toBe(true);
      for (let i = 0; i < 3; i++) {
        // past a whole FUTEX_WAIT_MS piece of sleep: woken by the ring, not by its timeout
        await new Promise((r) => setTimeout(r, 150));
        await write(b, i * 4096, Buffer.alloc(4096, i + 1));
        expect((await read(b, i * 4096, 4096)).every((x) => x === i + 1)).toBe(true);
      }
      // A sync thread has slept since the start: terminate() must still end it.
      const lanes = (b as unknown as { pool: { lanes: { worker: Worker; role: string }[] } }).pool
        .lanes;
      const sync = lanes.find((l) => l.role === 'sync')!;
      await sync.worker.terminate();
      // The pool saw it die and replaces its threads; the volume serves again.
      for (let i = 0; i < 100 && b.poolRestarts === 0; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(b.poolRestarts).toBe(1);
      await write(b, 0, Buffer.alloc(4096, 9));
      expect((await read(b, 0, 4096)).every((x) => x === 9)).toBe(true);
    } finally {
      await b.close();
    }
  });
});
