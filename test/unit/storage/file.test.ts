/**
 * The file backend end to end: real files on tmpfs, real worker threads, the
 * native addon when it is built (the fallback has its own file).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { BlockBackend } from '../../../engine/src/storage/backend.js';
import {
  openFileBackend,
  type FdBackend,
  type IoThreadsEvent,
} from '../../../engine/src/storage/file.js';
import {
  deallocate,
  failure,
  flush,
  prng,
  randomBuffer,
  read,
  scratchDir,
  write,
  writeZeroes,
} from './helpers.js';
import { NATIVE_BUILT } from '../../helpers/engine.js';

const MiB = 1024 * 1024;
const scratch = scratchDir('file');
let n = 0;
const fresh = () => join(scratch.dir, `vol${n++}.img`);
const open: BlockBackend[] = [];

async function create(
  sizeBytes = 8 * MiB,
  extra: Partial<Parameters<typeof openFileBackend>[0]> = {},
) {
  const b = await openFileBackend({ path: fresh(), sizeBytes, create: true, ...extra });
  open.push(b);
  return b;
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((b) => b.close()));
});
afterAll(() => scratch.cleanup());

describe('file backend: create and open', () => {
  it('creates a sparse file of the given size and declares its capabilities', async () => {
    const b = await create(64 * MiB);
    const st = statSync(b.location);
    expect(st.size).toBe(64 * MiB);
    expect(st.blocks).toBe(0); // sparse: nothing allocated yet
    expect(b.blockSize).toBe(512);
    expect(b.caps).toMatchObject({
      flush: true,
      fua: true,
      readZeroesAfterDeallocate: true,
      volatileWriteCache: true,
    });
    expect(b.caps.deallocate).toBe(NATIVE_BUILT);
    expect(b.caps.writeZeroes).toBe(NATIVE_BUILT);
  });

  it('refuses to create over an existing file and to open a missing one', async () => {
    const path = fresh();
    writeFileSync(path, Buffer.alloc(4096));
    const exists = await failure(openFileBackend({ path, sizeBytes: 4096, create: true }));
    expect(exists.message).toMatch(/already exists/);
    const missing = await failure(openFileBackend({ path: fresh() }));
    expect(missing.kind).toBe('unavailable');
    expect(missing.message).toMatch(/ENOENT.*does not exist/);
  });

  it('a backend that fails to start after creating its file leaves no file behind', async () => {
    const path = fresh();
    // An I/O option the pool refuses: the file exists by then.
    const err = await openFileBackend({
      path,
      sizeBytes: 4096,
      create: true,
      io: { slotSize: 1000 },
    }).then(
      () => null,
      (e: Error) => e,
    );
    expect(err?.message).toMatch(/slotSize 1000/);
    expect(existsSync(path)).toBe(false); // before: an empty 4 KiB file stayed
  });

  it('rejects sizes that are not a multiple of the block size', async () => {
    const bad = await failure(
      openFileBackend({ path: fresh(), sizeBytes: 4096 + 512, create: true, blockSize: 4096 }),
    );
    expect(bad.kind).toBe('out-of-range');
    const path = fresh();
    writeFileSync(path, Buffer.alloc(1000));
    expect((await failure(openFileBackend({ path }))).message).toMatch(
      /not a positive multiple of 512/,
    );
    writeFileSync(path, Buffer.alloc(4096));
    expect((await failure(openFileBackend({ path, sizeBytes: 8192 }))).message).toMatch(
      /expected 8192/,
    );
  });

  it('keeps data across close and reopen', async () => {
    const b = await create(4 * MiB, { blockSize: 4096 });
    const data = randomBuffer(prng(7), 64 * 1024);
    await write(b, 3 * MiB, data);
    await b.close();
    const again = await openFileBackend({ path: b.location, blockSize: 4096 });
    open.push(again);
    expect(again.sizeBytes).toBe(4 * MiB);
    expect((await read(again, 3 * MiB, data.length)).equals(data)).toBe(true);
  });
});

describe('file backend: access times (O_NOATIME)', () => {
  /** A week-old access time: with relatime, the next plain read refreshes it. */
  const ageAtime = (path: string): number => {
    const old = new Date(Date.now() - 7 * 86_400_000);
    utimesSync(path, old, statSync(path).mtime);
    return statSync(path).atimeMs;
  };

  it('reads through the backend leave the access time alone, created or reopened', async () => {
    const b = await create(1 * MiB);
    await write(b, 0, randomBuffer(prng(3), 8192));
    let before = ageAtime(b.location);
    await read(b, 0, 8192);
    expect(statSync(b.location).atimeMs).toBe(before);
    await b.close();
    const again = await openFileBackend({ path: b.location });
    open.push(again);
    before = ageAtime(b.location);
    await read(again, 4096, 4096);
    expect(statSync(b.location).atimeMs).toBe(before);
    // Control: on this file system a plain read does move it, so the checks above mean something.
    readFileSync(b.location);
    expect(statSync(b.location).atimeMs).toBeGreaterThan(before);
  });

  const root = process.getuid?.() === 0;
  it.skipIf(!root)(
    'opens a file it does not own as before (EPERM for O_NOATIME; needs root to run as nobody)',
    () => {
      const dir = mkdtempSync('/dev/shm/branchsan-noatime-');
      try {
        chmodSync(dir, 0o755);
        const path = join(dir, 'theirs.img');
        writeFileSync(path, Buffer.alloc(MiB, 0x5a));
        chmodSync(path, 0o644); // root's file: nobody may read it, but not set O_NOATIME
        const mod = fileURLToPath(
          new URL('../../../dist/engine/src/storage/file.js', import.meta.url),
        );
        const script = [
          `const { openFileBackend } = await import(${JSON.stringify(mod)});`,
          `const b = await openFileBackend({ path: ${JSON.stringify(path)}, readOnly: true });`,
          `b.read(0, 4096, (err, d) => { console.log(err ? 'ERR ' + err.message : 'OK ' + d[0]);`,
          `  b.close().then(() => process.exit(0)); });`,
        ].join('\n');
        const runner = join(dir, 'open.mjs');
        writeFileSync(runner, script);
        chmodSync(runner, 0o644);
        const out = execFileSync(process.execPath, [runner], {
          uid: 65534,
          gid: 65534,
          encoding: 'utf8',
        });
        expect(out.trim()).toBe('OK 90');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('file backend: one process per file (lock)', () => {
  const opening = (path: string, extra: Partial<Parameters<typeof openFileBackend>[0]> = {}) =>
    openFileBackend({ path, ...extra }).then((b) => (open.push(b), b));

  it.runIf(NATIVE_BUILT)(
    'a read-write open holds the file: every other open is refused until it closes',
    async () => {
      const first = await create();
      const path = first.location;
      const busy = `cannot open ${path}: another process has it open (`;
      await expect(opening(path)).rejects.toMatchObject({ kind: 'unavailable', errno: 'EBUSY' });
      await expect(opening(path)).rejects.toThrow(busy);
      await expect(opening(path, { readOnly: true })).rejects.toThrow(
        `cannot open ${path}: another process has it open for writing (`,
      );
      await write(first, 0, randomBuffer(prng(41), 4096)); // the holder is unaffected
      await first.close();
      const again = await opening(path);
      expect((await read(again, 0, 4096)).equals(randomBuffer(prng(41), 4096))).toBe(true);
    },
  );

  it.runIf(NATIVE_BUILT)(
    'read-only opens share the file; a writer waits for all of them',
    async () => {
      const path = (await create()).location;
      await open.pop()!.close();
      const r1 = await opening(path, { readOnly: true });
      const r2 = await opening(path, { readOnly: true });
      await expect(opening(path)).rejects.toThrow('another process has it open (');
      await r1.close();
      await expect(opening(path)).rejects.toThrow('another process has it open (');
      await r2.close();
      await opening(path);
    },
  );

  it.runIf(NATIVE_BUILT)('exclusive: false opens without the lock (the benchmark)', async () => {
    const path = (await create(8 * MiB, { exclusive: false })).location;
    const second = await opening(path, { exclusive: false });
    await write(second, 4096, randomBuffer(prng(42), 4096));
    expect((await read(open[0]!, 4096, 4096)).equals(randomBuffer(prng(42), 4096))).toBe(true);
  });

  const hasQemuIo = spawnSync('qemu-io', ['--version']).status === 0;
  it.runIf(NATIVE_BUILT && hasQemuIo)(
    "a running QEMU's disk image is refused, and QEMU cannot open a file we serve (needs qemu-io)",
    async () => {
      const served = await create();
      const path = served.location;
      // QEMU guards images with fcntl (OFD) locks, which flock does not see.
      for (const ro of [[], ['-r']]) {
        const q = spawnSync('qemu-io', [...ro, '-f', 'raw', '-c', 'read 0 4k', path], {
          encoding: 'utf8',
        });
        expect(q.status).not.toBe(0);
        expect(q.stderr).toMatch(/Failed to (lock|get .* lock)/);
      }
      await served.close();
      // The other way round: QEMU holds the image (qemu-io waits at its prompt).
      const q = spawn('qemu-io', ['-f', 'raw', path], { stdio: ['pipe', 'pipe', 'pipe'] });
      try {
        await once(q.stdout, 'data');
        await expect(opening(path)).rejects.toMatchObject({ kind: 'unavailable', errno: 'EBUSY' });
        await expect(opening(path)).rejects.toThrow(
          `cannot open ${path}: another program holds a lock on it (a QEMU or libvirt virtual machine`,
        );
      } finally {
        q.stdin.end('quit\n');
        await once(q, 'exit');
      }
      await opening(path); // QEMU is gone: the file is ours again
    },
  );

  it.runIf(NATIVE_BUILT && hasQemuIo)(
    'a read-only open refuses an image a QEMU writes, and shares one a QEMU only reads (needs qemu-io)',
    async () => {
      const path = (await create()).location;
      await open.pop()!.close();
      const holding = async (args: string[], body: () => Promise<void>): Promise<void> => {
        const q = spawn('qemu-io', [...args, '-f', 'raw', path], { stdio: 'pipe' });
        try {
          await once(q.stdout, 'data'); // the prompt: the image is open and locked
          await body();
        } finally {
          q.stdin.end('quit\n');
          await once(q, 'exit');
        }
      };
      await holding([], async () => {
        // Its locks are all shared ones, which a shared lock alone would not see.
        await expect(opening(path, { readOnly: true })).rejects.toThrow(
          `cannot open ${path}: a QEMU or libvirt virtual machine has it open for writing, ` +
            'so a read-only volume would serve data that changes under the hosts',
        );
      });
      await holding(['-r'], async () => {
        const b = await opening(path, { readOnly: true });
        expect((await read(b, 0, 4096)).length).toBe(4096);
        await b.close();
        await expect(opening(path)).rejects.toMatchObject({ errno: 'EBUSY' }); // but not for writing
      });
      await opening(path, { readOnly: true }); // no VM: read-only is fine
    },
  );

  it('without the native addon the file is served unlocked (documented)', async () => {
    const path = (await create(8 * MiB, { io: { native: false } })).location;
    await opening(path, { io: { native: false } });
  });
});

describe('file backend: is the path still the served file?', () => {
  it('says ok, moved (renamed away or replaced), ok again when put back, and deleted', async () => {
    const b = await create();
    const path = b.location;
    expect((await b.backingState()).state).toBe('ok');
    renameSync(path, `${path}.away`);
    expect((await b.backingState()).state).toBe('moved');
    writeFileSync(path, Buffer.alloc(8 * MiB)); // another file under the same name
    expect((await b.backingState()).state).toBe('moved');
    renameSync(`${path}.away`, path); // the served file back in place
    expect((await b.backingState()).state).toBe('ok');
    unlinkSync(path);
    const gone = await b.backingState();
    expect(gone.state).toBe('deleted');
    expect(gone.fd).toBeGreaterThan(2);
    await b.close();
    expect((await b.backingState()).state).toBe('ok'); // closed: nothing to say
  });
});

describe('file backend: data path', () => {
  it('reads back what was written at random aligned offsets (model check)', async () => {
    const size = 2 * MiB;
    const b = await create(size);
    const model = Buffer.alloc(size);
    const op = fc.record({
      kind: fc.constantFrom('write', 'fua', 'zeroes', 'deallocate', 'read'),
      block: fc.integer({ min: 0, max: size / 512 - 1 }),
      blocks: fc.integer({ min: 1, max: 600 }), // up to 300 KiB: crosses 128 KiB slots
      seed: fc.integer({ min: 1 }),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 20 }), async (ops) => {
        for (const o of ops) {
          const offset = o.block * 512;
          const length = Math.min(o.blocks * 512, size - offset);
          if (o.kind === 'write' || o.kind === 'fua') {
            const data = randomBuffer(prng(o.seed), length);
            await write(b, offset, data, o.kind === 'fua');
            data.copy(model, offset);
          } else if (o.kind === 'zeroes' || o.kind === 'deallocate') {
            await (o.kind === 'zeroes'
              ? writeZeroes(b, offset, length)
              : deallocate(b, offset, length));
            model.fill(0, offset, offset + length);
          }
          const got = await read(b, offset, length);
          expect(got.equals(model.subarray(offset, offset + length))).toBe(true);
        }
      }),
      { numRuns: 30 },
    );
    expect((await read(b, 0, size)).equals(model)).toBe(true);
  });

  it('completes FUA writes, FUA write-zeroes and flushes', async () => {
    const b = await create();
    const data = randomBuffer(prng(3), 8192);
    await Promise.all([
      write(b, 0, data, true),
      write(b, 8192, data, true),
      flush(b),
      writeZeroes(b, 16384, 4096, true),
    ]);
    await flush(b);
    expect((await read(b, 0, 8192)).equals(data)).toBe(true);
    expect((await read(b, 16384, 4096)).equals(Buffer.alloc(4096))).toBe(true);
  });

  it.runIf(NATIVE_BUILT)(
    'punches holes on deallocate: zeroes read back and st_blocks shrinks',
    async () => {
      const b = await create(8 * MiB);
      await write(b, 0, randomBuffer(prng(5), 4 * MiB));
      await flush(b);
      const before = statSync(b.location).blocks;
      await deallocate(b, MiB, 2 * MiB);
      const after = statSync(b.location).blocks;
      expect(before - after).toBeGreaterThanOrEqual((2 * MiB) / 512);
      expect((await read(b, MiB, 2 * MiB)).equals(Buffer.alloc(2 * MiB))).toBe(true);
      expect((await read(b, 0, 512)).equals(Buffer.alloc(512))).toBe(false);
    },
  );

  it('refuses out-of-range and misaligned I/O with out-of-range errors', async () => {
    const b = await create(MiB);
    for (const p of [
      read(b, MiB, 512),
      read(b, MiB - 512, 1024),
      read(b, -512, 512),
      write(b, MiB, Buffer.alloc(512)),
      writeZeroes(b, 0, MiB + 512),
      deallocate(b, MiB - 512, 1024),
      read(b, 100, 512),
      write(b, 0, Buffer.alloc(100)),
    ]) {
      const err = await failure(p);
      expect(err.kind).toBe('out-of-range');
      expect(err.message).toMatch(/beyond the 1048576-byte volume|not aligned/);
    }
    // The backend still works after refusing.
    await write(b, 0, Buffer.alloc(512, 1));
  });

  it('runs 64 mixed operations at once with consistent results', async () => {
    const b = await create(4 * MiB, { io: { maxInflight: 8 } }); // most of them queue
    const rand = prng(99);
    const blocks = Array.from({ length: 64 }, (_, i) => i * 64 * 1024); // disjoint 64 KiB regions
    const datas = blocks.map(() => randomBuffer(rand, 16 * 1024));
    await Promise.all(blocks.map((off, i) => write(b, off, datas[i]!, i % 3 === 0)));
    const ops: Promise<unknown>[] = [];
    blocks.forEach((off, i) => {
      const kind = i % 4;
      if (kind === 0)
        ops.push(read(b, off, 16 * 1024).then((d) => expect(d.equals(datas[i]!)).toBe(true)));
      if (kind === 1)
        ops.push(write(b, off, (datas[i] = randomBuffer(rand, 16 * 1024)), i % 8 === 1));
      if (kind === 2) ops.push(writeZeroes(b, off, 16 * 1024).then(() => datas[i]!.fill(0)));
      if (kind === 3) ops.push(flush(b));
    });
    await Promise.all(ops);
    for (const [i, off] of blocks.entries()) {
      expect((await read(b, off, 16 * 1024)).equals(datas[i]!)).toBe(true);
    }
  });

  it.runIf(NATIVE_BUILT)(
    "with the addon the I/O threads write from and read into the caller's own buffers, views at any offset, piece by piece",
    async () => {
      // Small slots: each I/O is many pieces, each at its own address in the caller's buffer.
      const io = { slotSize: 8192, workers: 2, inlineReads: false };
      const b = (await create(4 * MiB, { io })) as FdBackend;
      expect(b.pointerIo).toBe(true);
      const rand = prng(21);
      // A view that starts at an odd byte of its memory, as a socket chunk's view would.
      const outer = randomBuffer(rand, 300 * 1024 + 7);
      const data = outer.subarray(3, 3 + 300 * 1024);
      await write(b, 4096, data);
      await write(b, MiB, data, true); // FUA goes through the sync threads' own descriptor
      const file = readFileSync(b.location);
      expect(file.subarray(4096, 4096 + data.length).equals(data)).toBe(true);
      expect(file.subarray(MiB, MiB + data.length).equals(data)).toBe(true);
      // A read offered a view lands in exactly that view: nothing before or after it changes.
      const into = Buffer.alloc(data.length + 10, 0xee);
      const view = into.subarray(5, 5 + data.length);
      const got = await new Promise<Buffer>((resolve, reject) =>
        b.read(4096, data.length, (err, d) => (err ? reject(err) : resolve(d!)), view),
      );
      expect(got).toBe(view);
      expect(view.equals(data)).toBe(true);
      expect(into.subarray(0, 5).equals(Buffer.alloc(5, 0xee))).toBe(true);
      expect(into.subarray(5 + data.length).equals(Buffer.alloc(5, 0xee))).toBe(true);
      // The buffer is the caller's again once the write completed: changing it changes nothing.
      data.fill(0x11);
      expect(
        (await read(b, 4096, data.length)).equals(file.subarray(4096, 4096 + data.length)),
      ).toBe(true);
    },
  );

  it('splits I/O larger than a slot and bounds what is in flight', async () => {
    const b = await create(8 * MiB, { io: { slotSize: 8192, maxInflight: 2, workers: 2 } });
    const data = randomBuffer(prng(11), 3 * MiB + 4096);
    await write(b, 512, data);
    expect((await read(b, 512, data.length)).equals(data)).toBe(true);
  });
});

describe('file backend: close', () => {
  it('finishes in-flight I/O, then refuses with unavailable; close is idempotent', async () => {
    const b: FdBackend = await openFileBackend({ path: fresh(), sizeBytes: 4 * MiB, create: true });
    const data = randomBuffer(prng(1), 64 * 1024);
    const writes = Array.from({ length: 32 }, (_, i) => write(b, i * 64 * 1024, data, i % 2 === 0));
    const closing = b.close();
    await Promise.all(writes); // every write issued before close completes successfully
    await Promise.all([closing, b.close()]);
    for (const p of [
      read(b, 0, 512),
      write(b, 0, Buffer.alloc(512)),
      flush(b),
      deallocate(b, 0, 512),
    ]) {
      const err = await failure(p);
      expect(err.kind).toBe('unavailable');
      expect(err.message).toMatch(/is closed/);
    }
    const again = await openFileBackend({ path: b.location });
    open.push(again);
    expect((await read(again, 31 * 64 * 1024, data.length)).equals(data)).toBe(true);
  });

  it('a read-only backend reads and refuses writes', async () => {
    const b = await create(MiB);
    await write(b, 0, Buffer.alloc(512, 9));
    await b.close();
    const ro = await openFileBackend({ path: b.location, readOnly: true });
    open.push(ro);
    expect((await read(ro, 0, 512))[0]).toBe(9);
    expect((await failure(write(ro, 0, Buffer.alloc(512)))).kind).toBe('read-only');
  });
});

beforeAll(() => {
  if (!NATIVE_BUILT)
    console.warn(
      'native addon not built: hole punching tests are skipped (run node engine/native/build.js)',
    );
});

describe('file backend: a dying I/O thread', () => {
  it('fails the I/O in flight as unavailable without crashing, then serves on new threads', async () => {
    const b = await create(4 * MiB);
    const fd = b as unknown as {
      pool: { lanes: { worker: { terminate(): Promise<number> } }[] };
      poolRestarts: number;
    };
    const told: IoThreadsEvent[] = [];
    (b as FdBackend).onIoThreads = (e) => told.push(e);
    await write(b, 64 * 4096, Buffer.alloc(4096, 9));
    const inflight = Array.from({ length: 16 }, (_, i) =>
      write(b, i * 4096, Buffer.alloc(4096, 1)).catch((e: unknown) => e),
    );
    await fd.pool.lanes[0]!.worker.terminate();
    const results = await Promise.all(inflight);
    for (const r of results) if (r) expect((r as { kind: string }).kind).toBe('unavailable');
    const failed = results.find((r) => r) as { message: string } | undefined;
    if (failed) expect(failed.message).toMatch(/I\/O thread .* stopped .*new threads take over/);
    for (let i = 0; i < 100 && fd.poolRestarts === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(fd.poolRestarts).toBe(1);
    // Told, for the log and the event log: why, when new threads came, after how long.
    expect(told).toEqual([
      { kind: 'failed', reason: 'I/O thread exited (code 1)', retryInMs: 0 },
      { kind: 'restarted', downMs: expect.any(Number) as number, restarts: 1 },
    ]);
    expect((b as FdBackend).ioThreadsDown).toBe(false);
    // Served again, with what was written before the failure still there.
    expect((await read(b, 64 * 4096, 4096)).every((x) => x === 9)).toBe(true);
    await write(b, 65 * 4096, Buffer.alloc(4096, 7));
    expect((await read(b, 65 * 4096, 4096)).every((x) => x === 7)).toBe(true);
    await b.close();
  });

  it("threads that died leave no descriptor of the file open (Node closes a worker's own); nor does close", async () => {
    const file = fresh();
    const b = await openFileBackend({ path: file, sizeBytes: 4 * MiB, create: true });
    open.push(b);
    const fd = b as unknown as {
      pool: { lanes: { worker: { terminate(): Promise<number> } }[] };
      poolRestarts: number;
    };
    // this process's descriptors of the volume's file: the backend's and each thread's own
    const ofFile = () =>
      readdirSync('/proc/self/fd').filter((n) => {
        try {
          return readlinkSync(`/proc/self/fd/${n}`) === file;
        } catch {
          return false; // closed while listed (readdir's own)
        }
      }).length;
    await write(b, 0, Buffer.alloc(4096, 3));
    const before = ofFile();
    expect(before).toBeGreaterThan(1);
    await fd.pool.lanes[0]!.worker.terminate();
    for (let i = 0; i < 100 && fd.poolRestarts === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(fd.poolRestarts).toBe(1);
    await write(b, 4096, Buffer.alloc(4096, 4)); // the new threads serve
    // Before: every thread of the failed pool left its two descriptors open.
    expect(ofFile()).toBe(before);
    await b.close();
    expect(ofFile()).toBe(0);
  });

  it('new threads that cannot start are tried again after a back-off, and each step is told', async () => {
    const b = await create(4 * MiB);
    const fd = b as unknown as {
      pool: { lanes: { worker: { terminate(): Promise<number> } }[] };
      poolOptions: { fd: number };
      poolRestarts: number;
    };
    const told: IoThreadsEvent[] = [];
    (b as FdBackend).onIoThreads = (e) => told.push(e);
    const realFd = fd.poolOptions.fd;
    fd.poolOptions.fd = 1_000_000; // new threads cannot open the file: they fail to start
    await fd.pool.lanes[0]!.worker.terminate();
    for (let i = 0; i < 100 && told.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    expect(told[0]).toEqual({ kind: 'failed', reason: 'I/O thread exited (code 1)', retryInMs: 0 });
    expect(told[1]).toMatchObject({ kind: 'start-failed', retryInMs: 1000, attempt: 1 });
    expect((told[1] as { reason: string }).reason).toMatch(/\/proc\/self\/fd\/1000000/);
    expect((b as FdBackend).ioThreadsDown).toBe(true);
    expect((await failure(read(b, 0, 4096))).kind).toBe('unavailable');
    fd.poolOptions.fd = realFd;
    for (let i = 0; i < 100 && fd.poolRestarts === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(told.slice(2)).toEqual([
      { kind: 'restarted', downMs: expect.any(Number) as number, restarts: 1 },
    ]);
    expect((told[2] as { downMs: number }).downMs).toBeGreaterThanOrEqual(1000);
    expect(await read(b, 0, 4096)).toHaveLength(4096);
    await b.close();
  });

  it('a failure again and again is replaced ever more slowly, and close ends the wait', async () => {
    const b = await create(4 * MiB);
    const fd = b as unknown as {
      pool: { lanes: { worker: { terminate(): Promise<number> } }[] };
      poolRestarts: number;
    };
    await fd.pool.lanes[0]!.worker.terminate();
    for (let i = 0; i < 100 && fd.poolRestarts === 0; i++)
      await new Promise((r) => setTimeout(r, 20));
    expect(fd.poolRestarts).toBe(1); // the first at once
    const told: IoThreadsEvent[] = [];
    (b as FdBackend).onIoThreads = (e) => {
      told.push(e);
      throw new Error('a listener that throws'); // changes nothing
    };
    await fd.pool.lanes[0]!.worker.terminate();
    await new Promise((r) => setTimeout(r, 500));
    expect(fd.poolRestarts).toBe(1); // the second waits a second
    expect(told).toEqual([
      { kind: 'failed', reason: 'I/O thread exited (code 1)', retryInMs: 1000 },
    ]);
    expect((b as FdBackend).ioThreadsDown).toBe(true);
    const later = await failure(read(b, 0, 4096));
    expect(later.kind).toBe('unavailable');
    const closed = Date.now();
    await b.close(); // does not sit out the back-off
    expect(Date.now() - closed).toBeLessThan(900);
    expect(fd.poolRestarts).toBe(1);
  });
});
