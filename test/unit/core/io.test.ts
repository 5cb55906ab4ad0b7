/**
 * NVM I/O against a MemoryBackend with data verification, and every refusal the
 * core gives before data moves (range, length, namespace, ANA), plus the backend
 * error mapping.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import type { AnaState } from '../../../engine/src/core/ana.js';
import { MAX_TIME_EVERY } from '../../../engine/src/core/stats.js';
import { FID, IO } from '../../../engine/src/protocol/opcodes.js';
import { encodeSqe } from '../../../engine/src/protocol/sqe.js';
import { DNR, SC } from '../../../engine/src/protocol/status.js';
import {
  BackendError,
  type BackendErrorKind,
  type BlockBackend,
} from '../../../engine/src/storage/backend.js';
import { openFileBackend } from '../../../engine/src/storage/file.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import { scratchDir } from '../storage/helpers.js';
import {
  BLOCK,
  SUBNQN,
  makeTarget,
  ok,
  readSqe,
  rwSqe,
  session,
  setFeaturesSqe,
  writeSqe,
} from './helpers.js';

function zeroesSqe(slba: number, nlb: number, cdw12 = 0): Buffer {
  return encodeSqe({ opcode: IO.WRITE_ZEROES, nsid: 1, cdw10: slba, cdw12: (nlb - 1) | cdw12 });
}

function dsmSqe(nr: number, ad = true, len = 4096): Buffer {
  return encodeSqe({ opcode: IO.DSM, nsid: 1, sglLength: len, cdw10: nr - 1, cdw11: ad ? 4 : 0 });
}

/** DSM ranges: [slba, nlb (not 0's based)], padded to 4096 bytes as Linux sends them. */
function dsmData(ranges: Array<[number, number]>): Buffer {
  const b = Buffer.alloc(4096);
  ranges.forEach(([slba, nlb], i) => {
    b.writeUInt32LE(nlb, i * 16 + 4);
    b.writeBigUInt64LE(BigInt(slba), i * 16 + 8);
  });
  return b;
}

describe('I/O data path', () => {
  it('writes and reads back, in-capsule sized and large', async () => {
    const { target } = makeTarget();
    const { io } = await session(target);
    const small = randomBytes(8 * BLOCK);
    ok(await io.submit(writeSqe(10, 8), small));
    expect(ok(await io.submit(readSqe(10, 8))).data).toEqual(small);
    const big = randomBytes(2048 * BLOCK); // 1 MiB = MDTS
    ok(await io.submit(writeSqe(100, 2048), big));
    expect(ok(await io.submit(readSqe(100, 2048))).data!.equals(big)).toBe(true);
    const last = ok(await io.submit(readSqe(8191, 1))).data!;
    expect(last.length).toBe(BLOCK);
    const stats = target.namespaceStats(SUBNQN, 1)!;
    expect(stats).toMatchObject({
      writeOps: 2,
      readOps: 3,
      writeBytes: small.length + big.length,
      errors: 0,
    });
    expect(target.listControllers()[0]!.stats.readBytes).toBe(small.length + big.length + BLOCK);
  });

  it('counts every read of a fast burst; its latencies stand for all of them', async () => {
    const { target } = makeTarget();
    const { io } = await session(target);
    const n = 20_000;
    const depth = 64;
    const worker = async (w: number) => {
      for (let i = w; i < n; i += depth) ok(await io.submit(readSqe(i % 8192, 1)));
    };
    await Promise.all(Array.from({ length: depth }, (_, w) => worker(w)));
    const hist = (h: Float64Array) => h.reduce((a, c) => a + c, 0);
    for (const stats of [target.namespaceStats(SUBNQN, 1)!, target.listControllers()[0]!.stats]) {
      expect(stats.readOps).toBe(n);
      expect(stats.readBytes).toBe(n * BLOCK);
      // Timed or not (LatencySampler), each read counts once in the histogram; the last
      // timed one may stand for a few that did not come.
      expect(hist(stats.readLatencyHist)).toBeGreaterThanOrEqual(n);
      expect(hist(stats.readLatencyHist)).toBeLessThan(n + 2 * MAX_TIME_EVERY);
      expect(stats.readLatencyUs).toBeGreaterThan(0);
    }
  });

  it('compares: equal succeeds, different is Compare Failure 2/85', async () => {
    const { target } = makeTarget();
    const { io } = await session(target);
    const data = randomBytes(4 * BLOCK);
    ok(await io.submit(writeSqe(0, 4), data));
    ok(await io.submit(rwSqe(IO.COMPARE, 0, 4), data));
    const other = Buffer.from(data);
    other[700] = other[700]! ^ 1;
    expect((await io.submit(rwSqe(IO.COMPARE, 0, 4), other)).status).toBe(SC.COMPARE_FAILED | DNR);
  });

  it('flushes one namespace or all of them', async () => {
    const { target } = makeTarget();
    const cached = new MemoryBackend({ sizeBytes: 1 << 20 });
    Object.defineProperty(cached, 'caps', { value: { ...cached.caps, volatileWriteCache: true } });
    target.addNamespace(SUBNQN, { nsid: 2, backend: cached, nguid: 'cd'.repeat(16) });
    const { io } = await session(target);
    const spy = vi.spyOn(cached, 'flush');
    ok(await io.submit(encodeSqe({ opcode: IO.FLUSH, nsid: 2 })));
    ok(await io.submit(encodeSqe({ opcode: IO.FLUSH, nsid: 0xffffffff })));
    expect(spy).toHaveBeenCalledTimes(2);
  });

  it('sends no FUA and no Flush to a backend without a volatile cache', async () => {
    // VWC is present on every controller, so hosts ask for FUA and Flush on every
    // namespace; on a write-through device (or memory) each completed write is already
    // as durable as it gets, and FUA there would only queue behind the sync threads.
    const { target, backend } = makeTarget(); // memory: no volatile cache
    expect(backend.caps.volatileWriteCache).toBe(false);
    const { io } = await session(target);
    const write = vi.spyOn(backend, 'write');
    const flush = vi.spyOn(backend, 'flush');
    ok(await io.submit(writeSqe(0, 1, { fua: true }), Buffer.alloc(BLOCK)));
    ok(await io.submit(encodeSqe({ opcode: IO.FLUSH, nsid: 1 })));
    ok(await io.submit(encodeSqe({ opcode: IO.FLUSH, nsid: 0xffffffff })));
    expect(write.mock.calls.map((c) => c[2])).toEqual([false]);
    expect(flush).not.toHaveBeenCalled();
  });

  it('write zeroes, with and without DEAC, reads back zeroes', async () => {
    const { target, backend } = makeTarget();
    const { io } = await session(target);
    const dealloc = vi.spyOn(backend, 'deallocate');
    for (const deac of [0, 1 << 25]) {
      ok(await io.submit(writeSqe(20, 16), randomBytes(16 * BLOCK)));
      ok(await io.submit(zeroesSqe(20, 16, deac)));
      const back = ok(await io.submit(readSqe(20, 16))).data!;
      expect(back.every((x) => x === 0)).toBe(true);
    }
    expect(dealloc).toHaveBeenCalled(); // DEAC used deallocate (memory reads zeroes after it)
  });

  it('write zeroes falls back to zero buffers when the backend cannot', async () => {
    const target = makeTarget().target;
    const plain = new MemoryBackend({ sizeBytes: 4 << 20 });
    Object.defineProperty(plain, 'caps', { value: { ...plain.caps, writeZeroes: false } });
    target.removeNamespace(SUBNQN, 1);
    target.addNamespace(SUBNQN, { nsid: 1, backend: plain, nguid: 'ab'.repeat(16) });
    const { io } = await session(target);
    ok(await io.submit(writeSqe(0, 8), randomBytes(8 * BLOCK)));
    const write = vi.spyOn(plain, 'write');
    ok(await io.submit(zeroesSqe(0, 8)));
    expect(write).toHaveBeenCalledTimes(1);
    expect(ok(await io.submit(readSqe(0, 8))).data!.every((x) => x === 0)).toBe(true);
  });

  it('write zeroes without the addon writes one shared zero buffer, not one per command', async () => {
    // A host could otherwise make the engine hold up to 1 MiB per queued Write Zeroes.
    const target = makeTarget().target;
    const scratch = scratchDir('wz-shared');
    const file = await openFileBackend({
      path: join(scratch.dir, 'ns.img'),
      sizeBytes: 16 << 20,
      blockSize: BLOCK,
      create: true,
      io: { native: false },
    });
    try {
      expect(file.caps.writeZeroes).toBe(false); // the zero-buffer path is what runs
      target.removeNamespace(SUBNQN, 1);
      target.addNamespace(SUBNQN, { nsid: 1, backend: file, nguid: 'ab'.repeat(16) });
      const { io } = await session(target);
      ok(await io.submit(writeSqe(0, 64), randomBytes(64 * BLOCK)));
      const write = vi.spyOn(file, 'write');
      const cmds = Array.from({ length: 8 }, (_, i) => io.submit(zeroesSqe(i * 4096, 4096)));
      for (const c of await Promise.all(cmds)) ok(c);
      expect(write).toHaveBeenCalledTimes(16); // 2 MiB each, in 1 MiB writes
      expect(new Set(write.mock.calls.map((c) => c[1].buffer)).size).toBe(1);
      expect(ok(await io.submit(readSqe(0, 64))).data!.every((x) => x === 0)).toBe(true);
    } finally {
      await file.close();
      scratch.cleanup();
    }
  });

  it('deallocates DSM ranges from a 4096-byte buffer whatever NR is', async () => {
    const { target } = makeTarget();
    const { io } = await session(target);
    ok(await io.submit(writeSqe(0, 64), randomBytes(64 * BLOCK)));
    ok(
      await io.submit(
        dsmSqe(2),
        dsmData([
          [0, 8],
          [32, 8],
        ]),
      ),
    );
    const back = ok(await io.submit(readSqe(0, 64))).data!;
    expect(back.subarray(0, 8 * BLOCK).every((x) => x === 0)).toBe(true);
    expect(back.subarray(8 * BLOCK, 32 * BLOCK).some((x) => x !== 0)).toBe(true);
    expect(back.subarray(32 * BLOCK, 40 * BLOCK).every((x) => x === 0)).toBe(true);
    // Exactly NR*16 bytes is fine too; fewer is an SGL length error; a range past the end is LBA range.
    ok(await io.submit(dsmSqe(1, true, 16), dsmData([[0, 1]]).subarray(0, 16)));
    expect((await io.submit(dsmSqe(2, true, 16), Buffer.alloc(16))).status).toBe(
      SC.SGL_INVALID_DATA_LEN | DNR,
    );
    expect((await io.submit(dsmSqe(1), dsmData([[8190, 8]]))).status).toBe(SC.LBA_RANGE | DNR);
    ok(await io.submit(dsmSqe(1, false), dsmData([[0, 8]]))); // no AD: hints only
  });

  it('passes FUA to the backend, and forces it when the host disables the write cache', async () => {
    const { target } = makeTarget();
    const cached = new MemoryBackend({ sizeBytes: 1 << 20 });
    Object.defineProperty(cached, 'caps', { value: { ...cached.caps, volatileWriteCache: true } });
    target.addNamespace(SUBNQN, { nsid: 2, backend: cached, nguid: 'cd'.repeat(16) });
    const { admin, io } = await session(target);
    const write = vi.spyOn(cached, 'write');
    ok(await io.submit(writeSqe(0, 1, { nsid: 2, fua: true }), Buffer.alloc(BLOCK)));
    ok(await io.submit(writeSqe(0, 1, { nsid: 2 }), Buffer.alloc(BLOCK)));
    ok(await admin.submit(setFeaturesSqe(FID.VOLATILE_WC, 0)));
    ok(await io.submit(writeSqe(0, 1, { nsid: 2 }), Buffer.alloc(BLOCK)));
    expect(write.mock.calls.map((c) => c[2])).toEqual([true, false, true]);
  });
});

describe('I/O refusals at parse', () => {
  const cases: Array<[string, () => [Buffer, Buffer?], number]> = [
    ['read past the end', () => [readSqe(8190, 4)], SC.LBA_RANGE | DNR],
    ['write past the end', () => [writeSqe(8192, 1), Buffer.alloc(BLOCK)], SC.LBA_RANGE | DNR],
    ['write zeroes past the end', () => [zeroesSqe(8191, 2)], SC.LBA_RANGE | DNR],
    ['huge SLBA', () => [readSqe(2 ** 40, 1)], SC.LBA_RANGE | DNR],
    [
      'SGL shorter than NLB',
      () => [readSqe(0, 4, { sglLength: 1024 })],
      SC.SGL_INVALID_DATA_LEN | DNR,
    ],
    [
      'SGL longer than NLB',
      () => [writeSqe(0, 1, { sglLength: 1024 }), Buffer.alloc(1024)],
      SC.SGL_INVALID_DATA_LEN | DNR,
    ],
    ['beyond MDTS', () => [readSqe(0, 4096)], SC.INVALID_FIELD | DNR],
    ['unknown nsid', () => [readSqe(0, 1, { nsid: 9 })], SC.INVALID_NS | DNR],
    ['nsid 0', () => [readSqe(0, 1, { nsid: 0 })], SC.INVALID_NS | DNR],
    ['unknown opcode', () => [encodeSqe({ opcode: 0x7e, nsid: 1 })], SC.INVALID_OPCODE | DNR],
    [
      'write uncorrectable',
      () => [encodeSqe({ opcode: IO.WRITE_UNCORRECTABLE, nsid: 1 })],
      SC.INVALID_OPCODE | DNR,
    ],
    [
      'flush with data',
      () => [encodeSqe({ opcode: IO.FLUSH, nsid: 1, sglLength: 512 }), Buffer.alloc(512)],
      SC.SGL_INVALID_DATA_LEN | DNR,
    ],
  ];
  it.each(cases)('%s', async (_name, build, status) => {
    const { target } = makeTarget();
    const { io } = await session(target);
    const [sqe, data] = build();
    expect((await io.submit(sqe, data)).status).toBe(status);
    expect(target.namespaceStats(SUBNQN, 1)).toMatchObject({ readOps: 0, writeOps: 0 });
  });

  const ana: Array<[AnaState, number]> = [
    ['optimized', SC.SUCCESS],
    ['non-optimized', SC.SUCCESS],
    ['inaccessible', SC.ANA_INACCESSIBLE],
    ['persistent-loss', SC.ANA_PERSISTENT_LOSS],
    ['change', SC.ANA_TRANSITION],
  ];
  it('refuses a write or compare whose data came after this node gave its group up', async () => {
    // The ANA check at parse passed; the data (sent by R2T) comes after a failover. A
    // compare answered from here then judged a copy that may be stale (with DNR on a
    // miscompare, never retried on the node that now holds the data).
    const { target } = makeTarget();
    const { io } = await session(target);
    const failover = () => target.setAnaState(1, 'inaccessible');
    for (const sqe of [writeSqe(0, 8), rwSqe(IO.COMPARE, 0, 8)]) {
      target.setAnaState(1, 'optimized');
      const c = await io.submit(sqe, Buffer.alloc(8 * BLOCK, 0xab), undefined, failover);
      expect(c.status).toBe(SC.ANA_INACCESSIBLE);
    }
    target.setAnaState(1, 'optimized');
    expect(ok(await io.submit(readSqe(0, 8))).data!.equals(Buffer.alloc(8 * BLOCK))).toBe(true);
  });

  it.each(ana)('ANA %s -> status %i (no DNR)', async (state, status) => {
    const { target } = makeTarget();
    const { io, admin } = await session(target);
    target.setAnaState(1, state);
    expect((await io.submit(readSqe(0, 1))).status).toBe(status);
    // Admin commands still work in every state.
    ok(await admin.submit(setFeaturesSqe(FID.KATO, 5000)));
  });
});

/** A backend whose every call fails with `kind`. */
function failing(kind: BackendErrorKind): BlockBackend {
  const err = () => new BackendError(kind, `injected ${kind}`);
  const later = (fn: () => void) => queueMicrotask(fn);
  return {
    kind: 'test',
    location: 'test',
    blockSize: 512,
    sizeBytes: 1 << 20,
    caps: {
      flush: true,
      fua: true,
      writeZeroes: true,
      deallocate: true,
      readZeroesAfterDeallocate: true,
      volatileWriteCache: true,
    },
    read: (_o, _l, cb) => later(() => cb(err())),
    write: (_o, _d, _f, cb) => later(() => cb(err())),
    flush: (cb) => later(() => cb(err())),
    writeZeroes: (_o, _l, _f, cb) => later(() => cb(err())),
    deallocate: (_o, _l, cb) => later(() => cb(err())),
    close: async () => {},
  };
}

describe('backend error mapping', () => {
  const table: Array<[BackendErrorKind, number, number]> = [
    ['out-of-range', SC.LBA_RANGE | DNR, SC.LBA_RANGE | DNR],
    ['no-space', SC.CAP_EXCEEDED | DNR, SC.CAP_EXCEEDED | DNR],
    ['read-only', SC.NS_WRITE_PROTECTED | DNR, SC.NS_WRITE_PROTECTED | DNR],
    ['io', SC.READ_ERROR, SC.WRITE_FAULT],
    ['unavailable', SC.ANA_TRANSITION, SC.ANA_TRANSITION],
    ['unsupported', SC.INVALID_FIELD | DNR, SC.INVALID_FIELD | DNR],
  ];
  it.each(table)('%s -> read %i, write %i', async (kind, readStatus, writeStatus) => {
    const { target } = makeTarget();
    target.addNamespace(SUBNQN, { nsid: 2, backend: failing(kind), nguid: 'ee'.repeat(16) });
    const { io } = await session(target);
    expect((await io.submit(readSqe(0, 1, { nsid: 2 }))).status).toBe(readStatus);
    expect((await io.submit(writeSqe(0, 1, { nsid: 2 }), Buffer.alloc(512))).status).toBe(
      writeStatus,
    );
    expect((await io.submit(encodeSqe({ opcode: IO.FLUSH, nsid: 2 }))).status).toBe(writeStatus);
    expect(target.namespaceStats(SUBNQN, 2)!.errors).toBe(3);
  });

  it('turns a throwing backend into Internal Error with exactly one completion', async () => {
    const { target } = makeTarget();
    const bad = failing('io');
    bad.read = () => {
      throw new Error('boom');
    };
    target.addNamespace(SUBNQN, { nsid: 2, backend: bad, nguid: 'dd'.repeat(16) });
    const { io } = await session(target);
    expect((await io.submit(readSqe(0, 1, { nsid: 2 }))).status).toBe(SC.INTERNAL);
    expect(io.doubleCompletions).toBe(0);
  });
});
