/**
 * Reads and writes served on the event loop (io-worker-pool.ts, InlineReads and
 * PoolInfo.inlineWrites): real files on tmpfs and on the root file system, the real
 * page cache, real worker threads. Pages are evicted with GNU dd's `nocache` flag
 * (posix_fadvise DONTNEED), so a page-cache miss is a real miss; a full file system
 * is a real, small tmpfs.
 */
import { execFileSync } from 'node:child_process';
import { openSync, readFileSync, readSync, closeSync, statfsSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { BlockBackend } from '../../../engine/src/storage/backend.js';
import {
  openFileBackend,
  type FdBackend,
  type FileBackendOptions,
} from '../../../engine/src/storage/file.js';
import { INLINE_READ_MAX, loadNativeAddon } from '../../../engine/src/storage/io-worker-pool.js';
import { failure, flush, prng, randomBuffer, read, scratchDir, write } from './helpers.js';
import { until } from '../../helpers/wait.js';
import { NATIVE_BUILT } from '../../helpers/engine.js';
import { canMountTmpfs, fillFs, smallFs, unmountSmallFs } from '../../helpers/small-fs.js';

const MiB = 1024 * 1024;
const swapActive = readFileSync('/proc/swaps', 'utf8').trim().split('\n').length > 1;
const ram = scratchDir('inline-ram');
// The root file system (ext4 here and on CI): page cache, NOWAIT reads.
const disk = scratchDir('inline-disk', '/var/tmp');
const TMPFS_MAGIC = 0x01021994;
const diskIsTmpfs = statfsSync(disk.dir).type === TMPFS_MAGIC;
let n = 0;
const open: BlockBackend[] = [];

async function create(dir: string, extra: Partial<FileBackendOptions> = {}): Promise<FdBackend> {
  const b = await openFileBackend({
    path: join(dir, `vol${n++}.img`),
    sizeBytes: 4 * MiB,
    create: true,
    ...extra,
  });
  open.push(b);
  return b;
}

/** Drops [offset, offset+length) of the file from the page cache (dd reads it, then DONTNEED). */
function evict(path: string, offset: number, length: number): void {
  execFileSync('dd', [
    `if=${path}`,
    'of=/dev/null',
    'bs=4096',
    'iflag=nocache',
    `skip=${offset / 4096}`,
    `count=${length / 4096}`,
    'status=none',
  ]);
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close()));
});
afterAll(() => {
  ram.cleanup();
  disk.cleanup();
  unmountSmallFs();
});

/** What the file holds at [offset, offset+length), read past the backend. */
function onFile(path: string, offset: number, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const out = Buffer.alloc(length);
    readSync(fd, out, 0, length, offset);
    return out;
  } finally {
    closeSync(fd);
  }
}

describe('inline reads: when the pool allows them', () => {
  it('tmpfs without swap is RAM: reads run inline, with or without the addon', async () => {
    const expected = swapActive ? null : 'ram';
    expect((await create(ram.dir)).inlineReads).toBe(expected);
    expect((await create(ram.dir, { io: { native: false } })).inlineReads).toBe(expected);
  });

  it('a disk file system needs the addon (NOWAIT reads); without it reads go to workers', async () => {
    if (diskIsTmpfs) return void console.warn(`${disk.dir} is tmpfs here: no disk case to test`);
    expect((await create(disk.dir)).inlineReads).toBe(NATIVE_BUILT ? 'nowait' : null);
    expect((await create(disk.dir, { io: { native: false } })).inlineReads).toBe(null);
  });

  it('inlineReads: false turns them off', async () => {
    expect((await create(ram.dir, { io: { inlineReads: false } })).inlineReads).toBe(null);
  });
});

describe('inline reads: data and order', () => {
  it('serves cached reads inline with the right data', async () => {
    const b = await create(ram.dir);
    if (!b.inlineReads) return void console.warn('swap is active: tmpfs reads are not inline');
    const data = randomBuffer(prng(7), 64 * 1024);
    await write(b, MiB, data);
    const before = b.inlineStats.served;
    expect((await read(b, MiB, 4096)).equals(data.subarray(0, 4096))).toBe(true);
    expect((await read(b, MiB + 512, 64 * 1024 - 512)).equals(data.subarray(512))).toBe(true);
    expect(b.inlineStats.served).toBe(before + 2);
  });

  it(`serves reads up to ${INLINE_READ_MAX / 1024} KiB inline; a larger one goes to a worker`, async () => {
    const b = await create(ram.dir);
    if (!b.inlineReads) return void console.warn('swap is active: tmpfs reads are not inline');
    const data = randomBuffer(prng(17), 2 * INLINE_READ_MAX);
    await write(b, 0, data);
    const { served, punted } = b.inlineStats;
    expect((await read(b, 0, 128 * 1024)).equals(data.subarray(0, 128 * 1024))).toBe(true);
    expect(b.inlineStats.served).toBe(served + 1);
    expect((await read(b, 0, data.length)).equals(data)).toBe(true);
    expect(b.inlineStats).toMatchObject({ served: served + 1, punted }); // not tried inline
  });

  it('a read submitted behind a pending write goes to the worker and sees the write', async () => {
    // Writes go to the worker, or the lone write below would be done before the read.
    const b = await create(ram.dir, { io: { inlineWrites: false } });
    await write(b, 0, Buffer.alloc(4096, 1));
    const served = b.inlineStats.served;
    const writing = write(b, 0, Buffer.alloc(4096, 2)); // not awaited: still pending
    const got = await read(b, 0, 4096);
    await writing;
    expect(got.every((x) => x === 2)).toBe(true);
    expect(b.inlineStats.served).toBe(served); // not even tried inline
    // Once nothing is pending, reads run inline again.
    expect((await read(b, 0, 4096)).every((x) => x === 2)).toBe(true);
    if (b.inlineReads) expect(b.inlineStats.served).toBe(served + 1);
  });

  it('a page-cache miss goes to a worker; the next read of it is inline', async () => {
    if (diskIsTmpfs || !NATIVE_BUILT)
      return void console.warn('no disk file system or no native addon: nothing to miss');
    const b = await create(disk.dir);
    const data = randomBuffer(prng(11), 256 * 1024);
    await write(b, 0, data);
    await flush(b); // dirty pages cannot be dropped
    evict(b.location, 0, data.length);
    const { served, punted } = b.inlineStats;
    expect((await read(b, 4096, 4096)).equals(data.subarray(4096, 8192))).toBe(true);
    expect(b.inlineStats).toMatchObject({ served, punted: punted + 1 });
    expect((await read(b, 4096, 4096)).equals(data.subarray(4096, 8192))).toBe(true);
    expect(b.inlineStats).toMatchObject({ served: served + 1, punted: punted + 1 });
  });

  it('a read whose range is only partly cached goes to a worker whole', async () => {
    if (diskIsTmpfs || !NATIVE_BUILT)
      return void console.warn('no disk file system or no native addon: nothing to miss');
    const b = await create(disk.dir);
    const data = randomBuffer(prng(13), 64 * 1024);
    await write(b, 0, data);
    await flush(b);
    evict(b.location, 32 * 1024, 32 * 1024); // the second half only
    const { punted } = b.inlineStats;
    expect((await read(b, 0, data.length)).equals(data)).toBe(true);
    expect(b.inlineStats.punted).toBe(punted + 1);
  });

  it('reports a file truncated under it like a worker does', async () => {
    const b = await create(ram.dir);
    truncateSync(b.location, MiB);
    const err = await failure(read(b, 2 * MiB, 4096));
    expect(err.kind).toBe('io');
    expect(err.message).toMatch(/ended before the read at offset 2097152: something truncated it/);
  });
});

describe('inline reads: the event loop', () => {
  it('a caller that reads again from each callback does not starve timers', async () => {
    const b = await create(ram.dir);
    let timerFired = false;
    let reads = 0;
    setTimeout(() => (timerFired = true), 0);
    await new Promise<void>((resolve, reject) => {
      const next = (): void => {
        if (timerFired || reads === 20_000) return resolve();
        b.read((reads++ % 64) * 4096, 4096, (err) => (err ? reject(err) : next()));
      };
      next();
    });
    expect(timerFired).toBe(true);
    expect(reads).toBeLessThan(20_000);
  });

  it('close waits for inline reads to complete', async () => {
    const b = await create(ram.dir);
    let completed = false;
    b.read(0, 4096, () => (completed = true));
    await b.close();
    expect(completed).toBe(true);
  });
});

describe('inline writes: when the pool allows them', () => {
  it('a RAM-only file (tmpfs, no swap) gets them, with or without the addon', async () => {
    expect((await create(ram.dir)).inlineWrites).toBe(!swapActive);
    expect((await create(ram.dir, { io: { native: false } })).inlineWrites).toBe(!swapActive);
  });

  it('a file on a disk file system never does: a write there may wait for the device', async () => {
    if (diskIsTmpfs) return void console.warn(`${disk.dir} is tmpfs here: no disk case to test`);
    expect((await create(disk.dir)).inlineWrites).toBe(false);
  });

  it('inlineWrites: false, or inlineReads: false, turns them off', async () => {
    expect((await create(ram.dir, { io: { inlineWrites: false } })).inlineWrites).toBe(false);
    expect((await create(ram.dir, { io: { inlineReads: false } })).inlineWrites).toBe(false);
  });
});

describe('retune: a volume whose io tuning changed', () => {
  it('runs later I/O as told, in this pool and in one that replaces it', async () => {
    const b = await create(ram.dir);
    const mode = b.inlineReads;
    if (!mode) return void console.warn('swap is active: tmpfs reads are not inline');
    const data = randomBuffer(prng(23), 4096);
    await write(b, 0, data);
    // since the open, across pools (inlineStats is the pool's own)
    const served = () => b.pathCounts().inlineReads;
    const readBack = async () => expect((await read(b, 0, 4096)).equals(data)).toBe(true);
    await readBack();
    expect(served()).toBe(1);

    b.retune({ inlineReads: false, completionSpinMicros: 0 });
    expect([b.inlineReads, b.inlineWrites]).toEqual([null, false]);
    const writes = b.pathCounts().inlineWrites; // the first write's, with no swap
    await readBack();
    await write(b, 4096, data);
    expect([served(), b.pathCounts().inlineWrites]).toEqual([1, writes]);
    expect(b.lonePolls).toEqual({ caught: 0, missed: 0 });
    // new threads after a thread died start as retuned
    const pool = (
      b as unknown as { pool: { lanes: { worker: { terminate(): Promise<number> } }[] } }
    ).pool;
    await pool.lanes[0]!.worker.terminate();
    await until(() => b.poolRestarts === 1, 5000, 10);
    expect(b.inlineReads).toBeNull();
    await readBack();
    expect(served()).toBe(1);

    b.retune({});
    expect([b.inlineReads, b.inlineWrites]).toEqual([mode, mode === 'ram']);
    await readBack();
    expect(served()).toBe(2);
  });
});

// With swap active tmpfs pages may be on disk: no inline writes (tested above).
describe.skipIf(swapActive)('inline writes: data and order', () => {
  for (const native of [true, false]) {
    it(`a lone write runs inline and lands (${native ? 'addon' : 'fs.writeSync'})`, async () => {
      const b = await create(ram.dir, { io: { native } });
      const data = randomBuffer(prng(21), 64 * 1024);
      await write(b, MiB + 4096, data);
      expect(b.inlineStats.writes).toBe(1);
      expect(onFile(b.location, MiB + 4096, data.length).equals(data)).toBe(true);
      expect((await read(b, MiB + 4096, data.length)).equals(data)).toBe(true);
    });
  }

  it('writes only the length asked for, from a longer buffer', async () => {
    const b = await create(ram.dir);
    await write(b, 0, Buffer.alloc(8192, 7));
    const done = new Promise<void>((resolve, reject) =>
      b.write(0, Buffer.alloc(8192, 9).subarray(0, 4096), false, (e) =>
        e ? reject(e) : resolve(),
      ),
    );
    await done;
    expect(b.inlineStats.writes).toBe(2);
    const got = onFile(b.location, 0, 8192);
    expect(got.subarray(0, 4096).every((x) => x === 9)).toBe(true);
    expect(got.subarray(4096).every((x) => x === 7)).toBe(true);
  });

  it('a write submitted while another is pending goes to a worker, behind it', async () => {
    const b = await create(ram.dir);
    // The first goes to a worker (too large to run inline), so it is still pending.
    const big = Buffer.alloc(INLINE_READ_MAX * 2, 1);
    const first = write(b, 0, big);
    const second = write(b, 4096, Buffer.alloc(4096, 2)); // overlaps the first
    await Promise.all([first, second]);
    expect(b.inlineStats.writes).toBe(0);
    const got = onFile(b.location, 0, 3 * 4096);
    expect([got[0], got[4096], got[8192]]).toEqual([1, 2, 1]);
    // Nothing pending any more: the next write runs inline again.
    await write(b, 0, Buffer.alloc(4096, 3));
    expect(b.inlineStats.writes).toBe(1);
    expect(onFile(b.location, 0, 1)[0]).toBe(3);
  });

  it('a write submitted while a read is in a worker goes to a worker too', async () => {
    const b = await create(ram.dir);
    await write(b, 0, Buffer.alloc(2 * INLINE_READ_MAX, 4));
    const writes = b.inlineStats.writes;
    const reading = read(b, 0, 2 * INLINE_READ_MAX); // too large for inline: a worker's
    await write(b, 4 * INLINE_READ_MAX, Buffer.alloc(4096, 5));
    await reading;
    expect(b.inlineStats.writes).toBe(writes);
  });

  it('FUA writes and writes larger than the inline bound go to a worker', async () => {
    const b = await create(ram.dir);
    await write(b, 0, Buffer.alloc(4096, 1), true);
    await write(b, 0, Buffer.alloc(INLINE_READ_MAX + 4096, 2));
    expect(b.inlineStats.writes).toBe(0);
    await write(b, 0, Buffer.alloc(INLINE_READ_MAX, 3));
    expect(b.inlineStats.writes).toBe(1);
    expect(onFile(b.location, INLINE_READ_MAX, 1)[0]).toBe(2);
  });

  it('a read behind an inline write sees it, and is served inline', async () => {
    const b = await create(ram.dir);
    const served = b.inlineStats.served;
    const writing = write(b, 0, Buffer.alloc(4096, 6)); // not awaited
    const got = await read(b, 0, 4096);
    await writing;
    expect(got.every((x) => x === 6)).toBe(true);
    expect(b.inlineStats).toMatchObject({ served: served + 1, writes: 1 });
  });

  it('close waits for an inline write to complete', async () => {
    const b = await create(ram.dir);
    let completed = false;
    b.write(0, Buffer.alloc(4096, 1), false, () => (completed = true));
    await b.close();
    expect(completed).toBe(true);
  });

  it('a full file system fails an inline write with no-space; earlier data stays', async (ctx) => {
    if (!canMountTmpfs) return ctx.skip();
    const dir = smallFs('branchsan-inline-full-', '1m');
    for (const native of [true, false]) {
      const b = await create(dir, { io: { native } });
      const kept = randomBuffer(prng(5), 4096);
      await write(b, 0, kept);
      const filler = fillFs(dir);
      const err = await failure(write(b, MiB, Buffer.alloc(64 * 1024, 8)));
      expect(b.inlineStats.writes).toBe(2);
      expect(err.kind).toBe('no-space');
      expect(err.errno).toBe('ENOSPC');
      expect((await read(b, 0, 4096)).equals(kept)).toBe(true);
      await b.close();
      truncateSync(filler, 0);
    }
  });
});

describe('the addon calls of the event loop', () => {
  it('readInline and writeInline answer -errno for a failed call, and throw on bad arguments', async (ctx) => {
    const addon = NATIVE_BUILT ? await loadNativeAddon() : null;
    if (!addon?.readInline || !addon.writeInline) return ctx.skip();
    const buf = Buffer.alloc(512);
    expect(addon.writeInline(-1, buf, 0)).toBe(-9); // EBADF
    expect(addon.readInline(-1, buf, 0, false)).toBe(-9);
    const bad = [
      () => addon.writeInline!(3, new Uint16Array(4) as unknown as Uint8Array, 0),
      () => addon.writeInline!(3, buf, -1),
      () => (addon.writeInline as unknown as (fd: number) => number)(3),
      () => addon.readInline!(3, buf, -1, false),
    ];
    for (const call of bad) expect(call).toThrow(/EINVAL/);
  });
});
