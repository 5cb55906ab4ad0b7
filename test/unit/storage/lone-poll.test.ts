/**
 * The event loop polling for the completion of a lone read or write on an I/O thread
 * (IoWorkerPool.pollLone, IoOptions.completionSpinMicros): a real file on the root file
 * system, the real page cache, real worker threads. Reads and writes are kept off the
 * event loop (inlineReads and inlineWrites off) so each one is a job of a worker. The
 * reads polled for miss the page cache (evicted with GNU dd's `nocache` flag): each
 * waits on the disk, so none is done before the poll begins, as a page-cache write can
 * be on an idle machine. Each read is submitted from a timer, as the target submits one
 * from a socket's data: the poll then runs in the same turn of the event loop.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  openFileBackend,
  type FdBackend,
  type IoOptions,
} from '../../../engine/src/storage/file.js';
import { flush, prng, randomBuffer, read, scratchDir, write } from './helpers.js';

const MiB = 1024 * 1024;
/** Blocks read back, 1 MiB apart (no read-ahead of one brings in the next). */
const BLOCKS = 40;
/** Each one storage slot (the default 128 KiB: one job), so its read takes a while. */
const BLOCK_BYTES = 128 * 1024;
const dir = scratchDir('lone-poll', '/var/tmp');
const TMPFS_MAGIC = 0x01021994;
const diskIsTmpfs = statfsSync(dir.dir).type === TMPFS_MAGIC;
let n = 0;
const open: FdBackend[] = [];

async function create(io: IoOptions = {}, path = join(dir.dir, `vol${n++}.img`)) {
  const b = await openFileBackend({
    path,
    sizeBytes: BLOCKS * MiB,
    create: !existsSync(path),
    io: { inlineReads: false, inlineWrites: false, ...io },
  });
  open.push(b);
  return b;
}

/** The next turn of the event loop, from its timers phase. */
const nextTurn = () => new Promise((r) => setTimeout(r, 0));

/**
 * A file of BLOCKS blocks of random data, on the disk and out of the page cache, opened
 * with `io` (afresh: its pool has polled for nothing yet); and the blocks.
 */
async function onDiskOnly(seed: number, io: IoOptions): Promise<[FdBackend, Buffer[]]> {
  const rand = prng(seed);
  const blocks = Array.from({ length: BLOCKS }, () => randomBuffer(rand, BLOCK_BYTES));
  const w = await create({ completionSpinMicros: 0 });
  for (const [i, data] of blocks.entries()) await write(w, i * MiB, data);
  await flush(w); // dirty pages cannot be dropped
  await w.close();
  execFileSync('dd', [`if=${w.location}`, 'of=/dev/null', 'bs=1M', 'iflag=nocache', 'status=none']);
  return [await create(io, w.location), blocks];
}

/** Reads every block back, each from a timer (as from a socket's data), and checks it. */
async function readBack(b: FdBackend, blocks: Buffer[]): Promise<void> {
  for (const [i, data] of blocks.entries()) {
    await nextTurn();
    expect((await read(b, i * MiB, BLOCK_BYTES)).equals(data)).toBe(true);
  }
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close()));
});
afterAll(() => dir.cleanup());

describe('polling for a lone I/O', () => {
  // Before: every completion came by the worker's message, the event loop asleep meanwhile.
  it('takes the completion of a lone read while it polls, and the data is right', async () => {
    if (diskIsTmpfs) return void console.warn(`${dir.dir} is tmpfs here: nothing waits on a disk`);
    // 50 ms: far longer than a disk read takes, however loaded the machine
    const [b, blocks] = await onDiskOnly(7, { completionSpinMicros: 50_000 });
    await readBack(b, blocks);
    // A read may be done before the poll begins (the disk's own cache answered it, or
    // the event loop lost its core meanwhile: 8 of 40 were still in flight in one CI
    // run with every test file running): its message then brings it, and it is not
    // polled for. Every read polled for is caught.
    expect(b.lonePolls.caught).toBeGreaterThanOrEqual(1);
    expect(b.lonePolls.missed).toBe(0);
  });

  it('does not poll for I/O that is not alone, for a flush, or when turned off', async () => {
    const b = await create({ completionSpinMicros: 50_000 });
    const rand = prng(9);
    const many = Array.from({ length: 32 }, (_, i) => write(b, i * 4096, randomBuffer(rand, 4096)));
    await Promise.all(many);
    await nextTurn();
    await flush(b); // a sync thread's job: it waits on the medium
    // The first write was alone when it was issued, and may have been polled for.
    expect(b.lonePolls.caught + b.lonePolls.missed).toBeLessThanOrEqual(1);
    if (diskIsTmpfs) return;
    const [off, blocks] = await onDiskOnly(10, { completionSpinMicros: 0 });
    await readBack(off, blocks);
    expect(off.lonePolls).toEqual({ caught: 0, missed: 0 });
  });

  it('polls less after polls that ran out: after 1, 2, 4 ... lone jobs without one', async () => {
    if (diskIsTmpfs) return void console.warn(`${dir.dir} is tmpfs here: nothing waits on a disk`);
    // 1 µs: no read from the disk is done that soon, so every poll runs out
    const [b, blocks] = await onDiskOnly(11, { completionSpinMicros: 1 });
    await readBack(b, blocks);
    // Polled for the 1st, 3rd, 6th, 11th, 20th and 37th of the reads still in flight
    // when the event loop came to them (a read already done is not counted): at most 6
    // of the 40, where polling each would be 40.
    expect(b.lonePolls.caught).toBe(0);
    expect(b.lonePolls.missed).toBeGreaterThanOrEqual(1);
    expect(b.lonePolls.missed).toBeLessThanOrEqual(6);
  });
});
