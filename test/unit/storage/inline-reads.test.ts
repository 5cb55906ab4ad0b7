/**
 * Reads served on the event loop (io-worker-pool.ts, InlineReads): real files on
 * tmpfs and on the root file system, the real page cache, real worker threads.
 * Pages are evicted with GNU dd's `nocache` flag (posix_fadvise DONTNEED), so a
 * page-cache miss is a real miss.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, statfsSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { BlockBackend } from '../../../engine/src/storage/backend.js';
import {
  openFileBackend,
  type FdBackend,
  type FileBackendOptions,
} from '../../../engine/src/storage/file.js';
import { INLINE_READ_MAX } from '../../../engine/src/storage/io-worker-pool.js';
import { failure, flush, prng, randomBuffer, read, scratchDir, write } from './helpers.js';
import { NATIVE_BUILT } from '../../helpers/engine.js';

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
});

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
    expect(b.inlineStats).toEqual({ served: served + 1, punted }); // not tried inline
  });

  it('a read submitted behind a pending write goes to the worker and sees the write', async () => {
    const b = await create(ram.dir);
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
    expect(b.inlineStats).toEqual({ served, punted: punted + 1 });
    expect((await read(b, 4096, 4096)).equals(data.subarray(4096, 8192))).toBe(true);
    expect(b.inlineStats).toEqual({ served: served + 1, punted: punted + 1 });
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
