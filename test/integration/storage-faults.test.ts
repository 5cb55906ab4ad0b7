/**
 * Storage backends under a bad environment, for real (root: mount, losetup):
 * - a file on a full tmpfs: writes that need space fail with 'no-space', each to
 *   its own command, while overwrites, reads and FUA writes beside them succeed;
 * - a loop device whose backing file sits on a full tmpfs: writes land in the page
 *   cache and fail only at write-back, which is how a dying disk looks (fdatasync
 *   reports EIO once per open file, then 0: Linux's errseq). A flush must never
 *   report success for writes the kernel already lost;
 * - a block device that shrinks and a file truncated underneath: errors, never
 *   stale bytes, and the rest keeps working;
 * - close while I/O is in flight and an I/O thread dies: every callback once;
 * - a stalled disk (fsfreeze): a closed host queue's writes that had not started are
 *   dropped, reads pass stuck FUA writes, and a dying I/O thread fails the writes
 *   another thread holds only once they can no longer land.
 * When the sandbox refuses mount or losetup, the tests that need them are skipped.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { BackendError, BlockBackend } from '../../engine/src/storage/backend.js';
import { openBlockBackend } from '../../engine/src/storage/block.js';
import { openFileBackend, type IoOptions } from '../../engine/src/storage/file.js';
import { tempDir } from '../helpers/engine.js';
import { mountExt4 } from '../helpers/ext4.js';
import {
  failure,
  flush,
  prng,
  randomBuffer,
  read,
  tryRun,
  write,
  writeZeroes,
} from '../unit/storage/helpers.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const root = tempDir('branchsan-storage-faults-');
const mounts: string[] = [];
const loops: string[] = [];
const open: BlockBackend[] = [];
let mountRefused: string | null = null;
let loopRefused: string | null = null;

/** A fresh tmpfs of `size` (e.g. '2m') under the test directory, or null when refused. */
function tinyTmpfs(name: string, size: string): string | null {
  const dir = join(root, name);
  mkdirSync(dir);
  const r = tryRun('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  if ('refused' in r) {
    mountRefused = r.refused;
    return null;
  }
  mounts.push(dir);
  return dir;
}

function losetup(image: string): string | null {
  const r = tryRun('losetup', ['-f', '--show', image]);
  if ('refused' in r) {
    loopRefused = r.refused;
    return null;
  }
  loops.push(r.out);
  return r.out;
}

function track<T extends BlockBackend>(b: T): T {
  open.push(b);
  return b;
}

/** Settles to null (success) or the BackendError, never rejects. */
function outcome(p: Promise<unknown>): Promise<BackendError | null> {
  return p.then(
    () => null,
    (e: unknown) => e as BackendError,
  );
}

/**
 * Waits until `b` serves I/O again after its I/O threads were replaced (`replaced`
 * says so), proving it with a write of the last block read back.
 */
async function servingAgain(b: BlockBackend, replaced: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !replaced(); i++) await new Promise((r) => setTimeout(r, 50));
  expect(replaced()).toBe(true);
  const last = b.sizeBytes - 4096;
  await write(b, last, Buffer.alloc(4096, 0x77));
  expect((await read(b, last, 4096)).every((x) => x === 0x77)).toBe(true);
}

beforeAll(() => {
  // One probe so a sandbox without mount/losetup skips with the reason, once.
  const probe = tinyTmpfs('probe', '1m');
  if (!probe) console.warn(`SKIPPED storage fault tests that need mount: ${mountRefused}`);
  else {
    writeFileSync(join(probe, 'img'), '');
    truncateSync(join(probe, 'img'), MiB);
    const dev = losetup(join(probe, 'img'));
    if (!dev) console.warn(`SKIPPED storage fault tests that need losetup: ${loopRefused}`);
  }
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close().catch(() => undefined)));
});

afterAll(() => {
  for (const dev of loops.splice(0)) tryRun('losetup', ['-d', dev]);
  for (const dir of mounts.splice(0)) tryRun('umount', [dir]);
  rmSync(root, { recursive: true, force: true });
});

describe('a file on a full file system', () => {
  for (const native of [true, false]) {
    it(`fails only the writes that need space, each to its own command (native ${native})`, async (ctx) => {
      const fs = tinyTmpfs(`full-${native}`, '1m');
      if (!fs) return ctx.skip();
      const io: IoOptions = { native, workers: 2, syncWorkers: 2, maxInflight: 8 };
      const b = track(
        await openFileBackend({ path: join(fs, 'vol.img'), sizeBytes: 4 * MiB, create: true, io }),
      );
      // Fill the file system from the start of the volume; `allocated` ends where space did.
      const chunk = 64 * KiB;
      let allocated = 0;
      for (;;) {
        const err = await outcome(write(b, allocated, Buffer.alloc(chunk, 0x11)));
        if (err) {
          expect(err.kind).toBe('no-space');
          break;
        }
        allocated += chunk;
      }
      expect(allocated).toBeGreaterThanOrEqual(8 * chunk);
      const hole = 3 * MiB; // far beyond anything allocated
      const rand = prng(5);
      // Interleaved, all in flight together (most queue behind maxInflight): overwrites
      // of allocated blocks (plain and FUA) must succeed, writes into the hole must fail
      // with no-space, reads and flushes of the allocated part must succeed.
      const expected = new Map<number, Buffer>();
      const ops: { what: string; p: Promise<BackendError | null>; fails: boolean }[] = [];
      const piece = 16 * KiB; // disjoint: overlapping writes in flight have no order
      expect(24 * piece).toBeLessThanOrEqual(allocated);
      for (let i = 0; i < 24; i++) {
        const off = i * piece;
        if (i % 4 === 0) {
          ops.push({
            what: `hole ${i}`,
            p: outcome(write(b, hole + i * 4096, Buffer.alloc(4096, 1))),
            fails: true,
          });
        } else if (i % 4 === 1 || i % 4 === 2) {
          const data = randomBuffer(rand, piece);
          expected.set(off, data);
          ops.push({
            what: `overwrite ${i}`,
            p: outcome(write(b, off, data, i % 4 === 2)),
            fails: false,
          });
        } else {
          ops.push({ what: `flush ${i}`, p: outcome(flush(b)), fails: false });
        }
      }
      const results = await Promise.all(ops.map((o) => o.p));
      results.forEach((err, i) => {
        const o = ops[i]!;
        if (o.fails) {
          expect(err?.kind, o.what).toBe('no-space');
          expect(err?.errno, o.what).toBe('ENOSPC');
        } else expect(err, o.what).toBeNull();
      });
      for (const [off, data] of expected) {
        expect((await read(b, off, piece)).equals(data)).toBe(true);
      }
      expect((await read(b, hole, 4096)).equals(Buffer.alloc(4096))).toBe(true);
      // Write Zeroes on a full file system still zeroes (punching frees space).
      await writeZeroes(b, 0, chunk, true);
      expect((await read(b, 0, chunk)).equals(Buffer.alloc(chunk))).toBe(true);
    });
  }
});

/**
 * A loop device over a sparse 32 MiB file on a 4 MiB tmpfs, and a block backend
 * through the page cache on it: 8 MiB of plain writes are acknowledged (page cache),
 * and the next fdatasync of the device finds that write-back failed.
 */
async function deviceThatLosesWrites(
  name: string,
  io: IoOptions = {},
): Promise<BlockBackend | null> {
  const fs = tinyTmpfs(name, '4m');
  if (!fs) return null;
  const image = join(fs, 'backing.img');
  writeFileSync(image, '');
  truncateSync(image, 32 * MiB);
  const dev = losetup(image);
  if (!dev) return null;
  const b = track(await openBlockBackend({ path: dev, io: { syncWorkers: 1, ...io } }));
  const data = randomBuffer(prng(9), MiB);
  for (let i = 0; i < 8; i++) await write(b, (4 + i) * MiB, data);
  return b;
}

/** How the command that sees a lost write-back fails: the kernel's errno (EIO here, ENOSPC elsewhere). */
const LOST = ['io', 'no-space'];

/** The flush's outcome, or 'never completed' when its callback does not run in time. */
function boundedFlush(b: BlockBackend, ms = 10_000): Promise<BackendError | null | string> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    outcome(flush(b)).finally(() => clearTimeout(timer)),
    new Promise<string>((resolve) => (timer = setTimeout(() => resolve('never completed'), ms))),
  ]);
}

describe('write-back failure (loop device on a full tmpfs)', () => {
  it('a flush whose fdatasync fails completes, with an io error', async (ctx) => {
    const b = await deviceThatLosesWrites('wb-complete');
    if (!b) return ctx.skip();
    const err = await boundedFlush(b);
    expect(err).not.toBe('never completed');
    expect(LOST).toContain((err as BackendError).kind);
    expect((err as BackendError).message).toMatch(/flush .* failed \((EIO|ENOSPC)\)/);
    // The same through group commit: a flush and a FUA write share one fdatasync.
    const c = await deviceThatLosesWrites('wb-complete-group');
    if (!c) return ctx.skip();
    const [fua, flushed] = await Promise.all([
      outcome(write(c, 0, Buffer.alloc(4096, 1), true)),
      boundedFlush(c),
    ]);
    expect(flushed).not.toBe('never completed');
    expect(LOST).toContain((flushed as BackendError).kind);
    expect(LOST).toContain(fua?.kind);
  });

  it('a flush after a failed flush fails too: the lost writes never became durable', async (ctx) => {
    const b = await deviceThatLosesWrites('wb-flush');
    if (!b) return ctx.skip();
    const first = await boundedFlush(b);
    expect(LOST).toContain((first as BackendError | null)?.kind);
    // The kernel reports a write-back error once per open file; the data is gone all
    // the same, so no later flush may claim that the earlier writes are durable.
    for (let i = 0; i < 3; i++) {
      const again = await failure(flush(b));
      expect(again.kind).toBe('io');
      expect(again.message).toMatch(/earlier write-back .* failed .*may not be on the medium/);
    }
    // Reads and writes keep being served meanwhile.
    await write(b, 0, Buffer.alloc(4096, 3));
    expect((await read(b, 0, 4096)).every((x) => x === 3)).toBe(true);
  });

  it('new I/O threads that replace dead ones still fail every flush after a lost write-back', async (ctx) => {
    const b = await deviceThatLosesWrites('wb-restart');
    if (!b) return ctx.skip();
    expect(LOST).toContain(((await boundedFlush(b)) as BackendError | null)?.kind);
    // A thread dies; the backend replaces the whole pool.
    const fd = b as unknown as { pool: { lanes: { worker: Worker }[] }; poolRestarts: number };
    await fd.pool.lanes[0]!.worker.terminate();
    for (let i = 0; i < 100 && fd.poolRestarts === 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(fd.poolRestarts).toBe(1);
    // The kernel told the old threads, once (nothing was written since, so it has
    // nothing new to report); the new ones must not forget it.
    const again = await failure(flush(b));
    expect(again.kind).toBe('io');
    expect(again.message).toMatch(/earlier write-back .* failed .*may not be on the medium/);
  });

  // A lone FUA write syncs through its thread's O_DSYNC description, which the kernel
  // then tells of the lost write-back, and marks it seen: descriptions opened after that
  // (the threads that replace a dead pool) would never hear of it. The data is lost all
  // the same, so no flush may succeed after the replacement either.
  it('new I/O threads fail every flush after a lost write-back that only a FUA write saw', async (ctx) => {
    const b = await deviceThatLosesWrites('wb-fua-restart');
    if (!b) return ctx.skip();
    execFileSync('sync'); // the kernel's own write-back runs, and loses the writes
    const fua = await outcome(write(b, 0, Buffer.alloc(4096, 1), true));
    expect(LOST).toContain(fua?.kind);
    const fd = b as unknown as { pool: { lanes: { worker: Worker }[] }; poolRestarts: number };
    await fd.pool.lanes[0]!.worker.terminate();
    for (let i = 0; i < 100 && fd.poolRestarts === 0; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(fd.poolRestarts).toBe(1);
    const again = await boundedFlush(b);
    expect((again as BackendError | null)?.kind).toBe('io');
  });

  it('the first flush fails even when FUA writes consumed the write-back error', async (ctx) => {
    const b = await deviceThatLosesWrites('wb-fua');
    if (!b) return ctx.skip();
    // Two FUA writes submitted together share one fdatasync on the sync thread (group
    // commit); that fdatasync is the one the kernel tells about the lost write-back.
    const fua = await Promise.all([
      outcome(write(b, 0, Buffer.alloc(4096, 1), true)),
      outcome(write(b, 4096, Buffer.alloc(4096, 2), true)),
    ]);
    expect(fua.some((e) => e !== null)).toBe(true);
    const err = await boundedFlush(b);
    expect((err as BackendError | null)?.kind).toBe('io');
  });

  it('with two sync threads (the default) no FUA write or flush succeeds over a lost write-back', async (ctx) => {
    for (let trial = 0; trial < 5; trial++) {
      const b = await deviceThatLosesWrites(`wb-two-sync-${trial}`, { syncWorkers: 2 });
      if (!b) return ctx.skip();
      // Four FUA writes and a flush at once: each sync thread group-commits some of them.
      // Before the fix both threads synced through one open file description, which the
      // kernel tells of a lost write-back once: in about one run of six the second
      // thread's fdatasync returned 0, and its FUA writes (or flush) were acknowledged.
      const results = await Promise.all([
        ...[0, 1, 2, 3].map((k) =>
          outcome(write(b, (k + 1) * 4096, Buffer.alloc(4096, 0x10 + k), true)),
        ),
        outcome(flush(b)),
      ]);
      for (const err of results) expect(LOST).toContain(err?.kind);
    }
  });

  it('the first flush fails even when a FUA Write Zeroes consumed the write-back error', async (ctx) => {
    const b = await deviceThatLosesWrites('wb-zeroes', { native: false });
    if (!b) return ctx.skip();
    expect(LOST).toContain((await failure(writeZeroes(b, 0, 4096, true))).kind);
    const err = await boundedFlush(b);
    expect((err as BackendError | null)?.kind).toBe('io');
  });
});

describe('a device or file that shrinks underneath', () => {
  for (const direct of [false, true]) {
    it(`a shrunk block device: errors past its new end, data before it intact (direct ${direct})`, async (ctx) => {
      const fs = tinyTmpfs(`shrink-${direct}`, '20m');
      if (!fs) return ctx.skip();
      const image = join(fs, 'disk.img');
      writeFileSync(image, '');
      truncateSync(image, 16 * MiB);
      const dev = losetup(image);
      if (!dev) return ctx.skip();
      const b = track(await openBlockBackend({ path: dev, direct }));
      const data = randomBuffer(prng(3), 128 * KiB);
      await write(b, MiB, data);
      await write(b, 12 * MiB, data);
      await flush(b);
      truncateSync(image, 8 * MiB);
      execFileSync('losetup', ['-c', dev]);
      // A read past the new end fails whether it is served inline or by a worker,
      // also when it starts before the end; it never hands back a buffer.
      for (const [off, len] of [
        [12 * MiB, 4096],
        [12 * MiB, 128 * KiB],
        [8 * MiB - 4096, 8192],
        [8 * MiB - 128 * KiB, 256 * KiB],
      ] as const) {
        const err = await failure(read(b, off, len));
        expect(err.kind, `read ${off}+${len}`).toBe('io');
      }
      // The advice fits a device: nothing to free on a file system, it is too small.
      const beyond = await failure(write(b, 12 * MiB, data));
      expect(beyond.kind).toBe('no-space');
      expect(beyond.message).toMatch(/\(ENOSPC\): the device has no room .* smaller than/);
      expect((await failure(read(b, 12 * MiB, 4096))).message).toMatch(
        /ended before the read at offset 12582912: the device shrank/,
      );
      expect((await read(b, MiB, data.length)).equals(data)).toBe(true);
      await write(b, 2 * MiB, data, true);
      expect((await read(b, 2 * MiB, data.length)).equals(data)).toBe(true);
    });
  }

  it('a file truncated underneath: reads past the new end fail, never with stale bytes', async () => {
    const dir = join(root, 'trunc');
    mkdirSync(dir);
    for (const inlineReads of [true, false]) {
      const path = join(dir, `vol-${inlineReads}.img`);
      const b = track(
        await openFileBackend({ path, sizeBytes: 4 * MiB, create: true, io: { inlineReads } }),
      );
      const data = randomBuffer(prng(1), 512 * KiB);
      await write(b, 0, data);
      await write(b, 2 * MiB, data);
      truncateSync(path, MiB + 1000); // not even a block boundary
      for (const [off, len] of [
        [2 * MiB, 4096],
        [MiB, 4096], // 1000 bytes of it remain
        [MiB - 128 * KiB, 256 * KiB], // the first slot is whole, the second short
      ] as const) {
        const into = Buffer.alloc(len, 0xee);
        const got = await new Promise<{ err: BackendError | null; data?: Buffer }>((resolve) =>
          b.read(off, len, (err, d) => resolve({ err, data: d }), into),
        );
        expect(got.err?.kind, `read ${off}+${len}`).toBe('io');
        expect(got.data).toBeUndefined();
      }
      expect((await read(b, 0, data.length)).equals(data)).toBe(true);
      // Writing there again extends the file: the volume is whole again.
      await write(b, 2 * MiB, data);
      expect((await read(b, 2 * MiB, data.length)).equals(data)).toBe(true);
    }
  });
});

describe('close and a dying I/O thread while I/O is in flight', () => {
  it('runs every callback exactly once, does not crash the process, and still closes', async () => {
    const dir = join(root, 'close');
    mkdirSync(dir);
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown): void => void uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      for (let round = 0; round < 3; round++) {
        const b = track(
          await openFileBackend({
            path: join(dir, `vol${round}.img`),
            sizeBytes: 16 * MiB,
            create: true,
            io: { workers: 2, syncWorkers: 2, maxInflight: 8, slotSize: 16 * KiB },
          }),
        );
        const calls = new Array<number>(200).fill(0);
        const settled: Promise<void>[] = [];
        const data = randomBuffer(prng(2), 64 * KiB);
        for (let i = 0; i < calls.length; i++) {
          settled.push(
            new Promise<void>((resolve) => {
              const cb = (): void => {
                calls[i]!++;
                resolve();
              };
              const off = i * 64 * KiB;
              if (i % 3 === 0) b.read(off, 64 * KiB, cb);
              else if (i % 3 === 1) b.write(off, data, i % 2 === 0, cb);
              else b.flush(cb);
            }),
          );
        }
        // One thread dies (as on an uncaught error in it) while the others still work;
        // the service then closes the volume.
        const pool = (b as unknown as { pool: { lanes: { worker: Worker }[] } }).pool;
        const killed = pool.lanes[1]!.worker.terminate();
        const closing = b.close();
        await Promise.all([...settled, killed, closing]);
        await new Promise((r) => setTimeout(r, 50)); // a second call, or a late completion
        expect(calls.every((n) => n === 1)).toBe(true);
      }
    } finally {
      process.off('uncaughtException', onUncaught);
    }
    expect(uncaught).toEqual([]);
  });
});

/**
 * A file system frozen with fsfreeze: a write blocks in the kernel until it thaws, as
 * on a stalled disk, and the writes behind it wait in the backend. Frozen writers sleep
 * uninterruptibly, so every path thaws in `finally`.
 */
describe('a stalled disk (frozen file system)', () => {
  /** An ext4 file system on a loop device, or null (and the reason) when refused. */
  function ext4(name: string): string | { refused: string } {
    const dir = mountExt4(join(root, name));
    if (typeof dir === 'string') mounts.push(dir);
    return dir;
  }

  /** Waits until a thread of this process sleeps uninterruptibly (state D): the frozen write. */
  async function someThreadStalled(): Promise<void> {
    for (let i = 0; i < 500; i++) {
      for (const t of readdirSync('/proc/self/task')) {
        const stat = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
        if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('D')) return;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error('no I/O thread blocked on the frozen file system within 5 s');
  }

  /** Threads of this process asleep uninterruptibly (state D) now. */
  function countStalled(): number {
    let n = 0;
    for (const t of readdirSync('/proc/self/task')) {
      try {
        const stat = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
        if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('D')) n++;
      } catch {
        // the thread ended meanwhile
      }
    }
    return n;
  }

  /** Waits until at least `n` threads of this process sleep uninterruptibly. */
  async function stalledThreads(n: number): Promise<void> {
    for (let i = 0; i < 500; i++) {
      if (countStalled() >= n) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`fewer than ${n} threads blocked on the frozen file system within 5 s`);
  }

  const bs = 4 * KiB;

  /**
   * A 4 MiB volume on its own ext4, one data and one sync thread with 4 tags each, its
   * first 16 blocks filled with `fill` and flushed.
   */
  async function smallVolume(
    name: string,
    fill: number,
    workers = 1,
  ): Promise<{ dir: string; b: BlockBackend } | { refused: string }> {
    const dir = ext4(name);
    if (typeof dir !== 'string')
      return { refused: `needs mkfs.ext4 and a loop mount: ${dir.refused}` };
    const io: IoOptions = { workers, syncWorkers: 1, maxInflight: 4 * workers };
    const b = track(
      await openFileBackend({ path: join(dir, 'vol.img'), sizeBytes: 4 * MiB, create: true, io }),
    );
    await write(b, 0, Buffer.alloc(16 * bs, fill));
    await flush(b);
    return { dir, b };
  }

  it("drops the closed queue's writes that had not started; the running one and other queues' writes land", async (ctx) => {
    // One data thread with 4 tags: 1 write runs (and blocks), 3 wait in its ring, the
    // rest in the backend's queue.
    const opened = await smallVolume('frozen', 0xaa);
    if ('refused' in opened) return ctx.skip(opened.refused);
    const { dir, b } = opened;
    const closing = { isClosed: false }; // the host queue that will close
    const staying = { isClosed: false }; // another host's queue
    const results = new Map<number, Promise<BackendError | null>>();
    let abandoning = false;
    const calledInside: number[] = []; // callbacks must come later, never inside abandon()
    const submit = (block: number, owner: { isClosed: boolean }): void => {
      const data = Buffer.alloc(bs, block + 1);
      results.set(
        block,
        outcome(
          new Promise<void>((ok, no) =>
            b.write(
              block * bs,
              data,
              false,
              (e) => {
                if (abandoning) calledInside.push(block);
                return e ? no(e) : ok();
              },
              owner,
            ),
          ),
        ),
      );
    };
    const frozen = tryRun('fsfreeze', ['--freeze', dir]);
    if ('refused' in frozen) return ctx.skip(`needs fsfreeze: ${frozen.refused}`);
    try {
      submit(0, closing);
      await someThreadStalled(); // write 0 is in the kernel, waiting for the thaw
      for (let block = 1; block < 10; block++) submit(block, block % 4 === 3 ? staying : closing);
      await new Promise((r) => setTimeout(r, 50));
      closing.isClosed = true;
      abandoning = true;
      b.abandon!(closing);
      abandoning = false;
      submit(10, closing); // after the close: never starts either
    } finally {
      tryRun('fsfreeze', ['--unfreeze', dir]);
    }
    expect(calledInside).toEqual([]);
    const staid = [3, 7];
    for (const [block, result] of results) {
      const err = await result;
      if (block === 0 || staid.includes(block)) expect(err, `block ${block}`).toBeNull();
      else {
        expect(err?.kind, `block ${block}`).toBe('unavailable');
        expect(err?.message).toContain('was not started: the host connection that sent it closed');
      }
    }
    const after = await read(b, 0, 16 * bs);
    for (let block = 0; block < 16; block++) {
      const want = block === 0 || staid.includes(block) ? block + 1 : 0xaa;
      expect(
        after.subarray(block * bs, (block + 1) * bs).every((x) => x === want),
        `block ${block}`,
      ).toBe(true);
    }
    // The backend serves on: a new write after all this lands.
    await write(b, 15 * bs, Buffer.alloc(bs, 0x55));
    expect((await read(b, 15 * bs, bs))[0]).toBe(0x55);
  });

  it("holds a new write over a closed queue's write still running until that one has landed", async (ctx) => {
    // Three data threads. The stale write runs (blocked) for a queue that then closes:
    // its host resends it elsewhere after its fence and writes on. A write that meets
    // its blocks must not run beside it (the disk could take them in either order and
    // the stale bytes land last); one elsewhere runs at once.
    const opened = await smallVolume('frozen-orphan', 0x11, 3);
    if ('refused' in opened) return ctx.skip(opened.refused);
    const { dir, b } = opened;
    const closing = { isClosed: false };
    const staying = { isClosed: false };
    const put = (offset: number, fill: number, owner: { isClosed: boolean }) =>
      outcome(
        new Promise<void>((ok, no) =>
          b.write(offset, Buffer.alloc(2 * bs, fill), false, (e) => (e ? no(e) : ok()), owner),
        ),
      );
    const frozen = tryRun('fsfreeze', ['--freeze', dir]);
    if ('refused' in frozen) return ctx.skip(`needs fsfreeze: ${frozen.refused}`);
    let stale: Promise<BackendError | null>;
    let resent: Promise<BackendError | null>;
    let elsewhere: Promise<BackendError | null>;
    let stalled: number;
    try {
      stale = put(0, 0xaa, closing); // blocks 0-1
      await stalledThreads(1);
      closing.isClosed = true;
      b.abandon!(closing);
      resent = put(bs, 0xbb, staying); // blocks 1-2: meets the stale write
      elsewhere = put(8 * bs, 0xcc, staying);
      await stalledThreads(2);
      await new Promise((r) => setTimeout(r, 300));
      // before: 3, the resent write blocked in the kernel beside the stale one
      stalled = countStalled();
    } finally {
      tryRun('fsfreeze', ['--unfreeze', dir]);
    }
    expect(stalled).toBe(2);
    expect(await stale).toBeNull(); // it ran: its host learns nothing, the queue is gone
    expect(await resent).toBeNull();
    expect(await elsewhere).toBeNull();
    const after = await read(b, 0, 10 * bs);
    const fills = [0, 1, 2, 3, 8, 9].map((block) => after[block * bs]);
    expect(fills).toEqual([0xaa, 0xbb, 0xbb, 0x11, 0xcc, 0xcc]);
    expect(after.subarray(bs, 3 * bs).every((x) => x === 0xbb)).toBe(true);
  });

  it('serves reads while FUA writes stuck on the stalled disk fill the sync threads and wait behind them', async (ctx) => {
    // One sync thread with 4 tags: 1 FUA write blocks in the kernel, 3 wait in its ring,
    // 2 more wait in the backend for a tag. The data thread is idle.
    const opened = await smallVolume('frozen-sync', 0x11);
    if ('refused' in opened) return ctx.skip(opened.refused);
    const { dir, b } = opened;
    const frozen = tryRun('fsfreeze', ['--freeze', dir]);
    if ('refused' in frozen) return ctx.skip(`needs fsfreeze: ${frozen.refused}`);
    const fua: Promise<void>[] = [];
    let got: Buffer | string;
    try {
      fua.push(write(b, 0, Buffer.alloc(bs, 0x22), true));
      await someThreadStalled();
      for (let block = 1; block < 6; block++)
        fua.push(write(b, block * bs, Buffer.alloc(bs, 0x22), true));
      // A write is pending, so this read cannot be served inline: it needs the data
      // thread, which is free. Before, it waited behind the sync jobs until the thaw.
      got = await Promise.race([
        read(b, 8 * bs, bs),
        new Promise<string>((r) => setTimeout(() => r('still waiting after 3 s'), 3000)),
      ]);
    } finally {
      tryRun('fsfreeze', ['--unfreeze', dir]);
    }
    if (typeof got === 'string') expect.fail(`the read behind the stuck sync jobs: ${got}`);
    expect(got.every((x) => x === 0x11)).toBe(true);
    await Promise.all(fua);
    const after = await read(b, 0, 6 * bs);
    expect(after.every((x) => x === 0x22)).toBe(true);
  });

  it('a dying I/O thread fails the writes another thread holds only once that thread has stopped', async (ctx) => {
    // One data thread with 4 tags: write 0 blocks in the kernel, 1-3 wait in its ring,
    // 4-6 wait in the backend for a tag. Then the sync thread dies.
    const opened = await smallVolume('frozen-death', 0x33);
    if ('refused' in opened) return ctx.skip(opened.refused);
    const { dir, b } = opened;
    const pool = (b as unknown as { pool: { lanes: { worker: Worker; role: string }[] } }).pool;
    const frozen = tryRun('fsfreeze', ['--freeze', dir]);
    if ('refused' in frozen) return ctx.skip(`needs fsfreeze: ${frozen.refused}`);
    const failedAt = new Map<number, 'frozen' | 'thawed'>();
    let phase: 'frozen' | 'thawed' = 'frozen';
    const writes: Promise<BackendError | null>[] = [];
    try {
      const submit = (block: number) =>
        writes.push(
          outcome(write(b, block * bs, Buffer.alloc(bs, block + 1))).then((err) => {
            failedAt.set(block, phase);
            return err;
          }),
        );
      submit(0);
      await someThreadStalled();
      for (let block = 1; block < 7; block++) submit(block);
      await new Promise((r) => setTimeout(r, 50));
      await pool.lanes.find((l) => l.role === 'sync')!.worker.terminate();
      await new Promise((r) => setTimeout(r, 300));
      // Never taken by a thread: failed at once, and they can never land.
      // Held by the data thread, which may still write them: not yet. Before, all seven
      // failed here, "not executed", while write 0 still waited to land.
      expect([...failedAt.keys()].sort()).toEqual([4, 5, 6]);
    } finally {
      phase = 'thawed';
      tryRun('fsfreeze', ['--unfreeze', dir]);
    }
    const errors = await Promise.all(writes);
    expect([0, 1, 2, 3].map((block) => failedAt.get(block))).toEqual(Array(4).fill('thawed'));
    for (const err of errors) {
      expect(err?.kind).toBe('unavailable');
      expect(err?.message).toContain('stopped');
      expect(err?.message).toContain('new threads take over in a moment and the host retries');
    }
    // New threads serve the volume; the writes no thread had taken never landed.
    await servingAgain(b, () => (b as unknown as { poolRestarts: number }).poolRestarts === 1);
    const after = await read(b, 4 * bs, 3 * bs);
    expect(after.every((x) => x === 0x33)).toBe(true);
  });
});
