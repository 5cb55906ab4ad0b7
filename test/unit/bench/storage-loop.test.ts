/**
 * The storage micro-benchmark's loop and submitters: each method reads into one buffer
 * per slot in flight, reused (no method pays for a fresh 4 KiB buffer per read that
 * another does not), and the measured window follows an unmeasured warm-up.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  backendSubmit,
  BS,
  libuvSubmit,
  run,
  type Submit,
} from '../../../engine/src/bench/storage-loop.js';
import { openFileBackend, type FdBackend } from '../../../engine/src/storage/file.js';
import { tempDir } from '../../helpers/engine.js';

/** Reads `block` through `slot`; resolves with the buffer the data landed in. */
const read = (submit: Submit, block: number, slot: number) =>
  new Promise<Buffer>((resolve, reject) =>
    submit(block, slot, (err, data) => (err ? reject(err) : resolve(data!))),
  );

describe('storage micro-benchmark', () => {
  let dir: string;
  let file: string;
  let fd: number;
  let backend: FdBackend;

  beforeAll(async () => {
    dir = tempDir('branchsan-storage-loop-');
    file = path.join(dir, 'f.img');
    // block i is filled with the byte i
    fs.writeFileSync(file, Buffer.concat([0, 1, 2, 3].map((i) => Buffer.alloc(BS, i))));
    fd = fs.openSync(file, 'r+');
    backend = await openFileBackend({ path: file, io: { inlineReads: false } });
  });

  afterAll(async () => {
    fs.closeSync(fd);
    await backend.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    ['libuv pool', () => libuvSubmit(fd, 'read')],
    ['worker backend', () => backendSubmit(backend, 'read')],
  ])('%s: a slot reads into the same buffer every time, each slot its own', async (_, make) => {
    const submit = make();
    const first = await read(submit, 1, 0);
    expect(first.equals(Buffer.alloc(BS, 1))).toBe(true);
    const again = await read(submit, 2, 0);
    expect(again).toBe(first);
    expect(again.equals(Buffer.alloc(BS, 2))).toBe(true);
    const other = await read(submit, 3, 1);
    expect(other).not.toBe(first);
    expect(other.equals(Buffer.alloc(BS, 3))).toBe(true);
  });

  it('keeps one I/O per slot in flight and measures only after the warm-up', async () => {
    const busy = new Set<number>();
    let completed = 0;
    const submit: Submit = (_block, slot, done) => {
      expect(busy.has(slot)).toBe(false); // a slot's buffer is never in two reads at once
      busy.add(slot);
      setImmediate(() => {
        busy.delete(slot);
        completed++;
        done(null);
      });
    };
    const r = await run(submit, 4, {
      seconds: 0.05,
      blocks: 4,
      warmupSeconds: 0.01,
      warmupIos: 500,
    });
    expect(r.warmupIos).toBeGreaterThanOrEqual(500);
    expect(completed).toBeGreaterThan(r.warmupIos);
    expect(r.iops).toBeGreaterThan(0);
  });

  it('describes every I/O of the window, not only its first million', async () => {
    // a million fast completions after the warm-up (a second or less), then slow ones
    // (a timer of 20 ms each): the mean must count the slow ones too
    const slowAfter = 1_000_000 + 100;
    let completed = 0;
    let slow = 0;
    const submit: Submit = (_block, _slot, done) => {
      if (completed < slowAfter) return void setImmediate(() => (completed++, done(null)));
      setTimeout(() => (completed++, slow++, done(null)), 20);
    };
    const r = await run(submit, 256, {
      seconds: 1.5,
      blocks: 4,
      warmupSeconds: 0,
      warmupIos: 100,
    });
    expect(slow).toBeGreaterThan(0);
    // every slow I/O took at least 19 ms (a timer never fires early; the loop's clock
    // is read once per turn), and all of them were measured
    const measured = completed - r.warmupIos;
    expect(r.meanUs).toBeGreaterThanOrEqual((slow * 19_000) / measured);
    expect(r.p99Us).toBeGreaterThan(0);
  });
});
