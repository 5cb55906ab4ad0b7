/**
 * The host library against BranchSAN's own target (core + TCP transport + memory
 * backend), in process: discovery, digests off and on, 2 I/O queues, QD 32 write/read
 * verify across in-capsule and R2T sizes; close() draining a write slower than the
 * target's keep-alive timeout.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Target } from '../../../engine/src/core/index.js';
import {
  NvmeController,
  NvmeRequest,
  discover,
  fillFlush,
} from '../../../engine/src/host/index.js';
import { BackendError, type BlockBackend } from '../../../engine/src/storage/backend.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import type { TcpTransport } from '../../../engine/src/transport/tcp/index.js';
import { serveOnLoopback } from '../../helpers/target.js';
import { waitFor } from './helpers.js';
import { overBackend } from '../../helpers/backend.js';

const NQN = 'nqn.2024-01.io.branchsan:host-lib-test';
let transport: TcpTransport;
let port = 0;

beforeAll(async () => {
  const target = new Target({ inCapsuleBytes: 16384 });
  target.addSubsystem({ nqn: NQN, serial: 'HOSTLIB1', model: 'BranchSAN', allowAnyHost: true });
  target.addNamespace(NQN, {
    nsid: 1,
    backend: new MemoryBackend({ sizeBytes: 64 << 20 }),
    nguid: '0123456789abcdef0123456789abcdef',
  });
  ({ transport, port } = await serveOnLoopback(target));
});

afterAll(async () => {
  await transport?.close();
});

describe('host library vs BranchSAN target (in process)', () => {
  it('discovers the subsystem', async () => {
    const log = await discover({ host: '127.0.0.1', port });
    expect(log.entries.find((e) => e.subtype === 2)?.subnqn).toBe(NQN);
  });

  // SQ flow control on: every read ends with a CapsuleResp; off (the library's default):
  // successful reads end with a SUCCESS C2HData and no CapsuleResp.
  it.each([
    [false, true],
    [true, true],
    [false, false],
    [true, false],
  ])(
    'verifies data at QD 32 on 2 I/O queues (digests %s, SQ flow control off %s)',
    async (dg, noFlow) => {
      const ctrl = await NvmeController.connect({
        host: '127.0.0.1',
        port,
        subnqn: NQN,
        hdgst: dg,
        ddgst: dg,
        disableSqFlow: noFlow,
        ioQueues: 2,
        queueSize: 32,
      });
      try {
        expect(ctrl.ioQueueCount).toBe(2);
        const ns = await ctrl.namespace(1);
        expect(ns.identity.nguid.toString('hex')).toBe('0123456789abcdef0123456789abcdef');
        for (const size of [4096, 16384, 65536, 1 << 20]) {
          const d = randomBytes(size);
          await ns.write(64, d, { fua: true });
          expect((await ns.read(64, size / ns.blockSize)).equals(d)).toBe(true);
        }
        const blocks = Array.from({ length: 256 }, () => randomBytes(4096));
        await Promise.all(blocks.map((b, i) => ns.write(4096 + i * 8, b)));
        const back = await Promise.all(blocks.map((_, i) => ns.read(4096 + i * 8, 8)));
        back.forEach((b, i) => expect(b.equals(blocks[i]!)).toBe(true));
        await ns.flush();
        await ns.writeZeroes(64, 8);
        expect((await ns.read(64, 8)).every((b) => b === 0)).toBe(true);
      } finally {
        await ctrl.close();
      }
    },
  );

  // The queue reads the socket into one buffer it reuses (IO_QUEUE_RECEIVE_BYTES), so a
  // read's data handed out without `into` is copied out of it: a buffer of the read's
  // size, not a view that pins a whole socket chunk (Node's fresh 64 KiB per read,
  // before) and not one the next socket read overwrites.
  it('hands out each read as a buffer of its own when many arrive in one socket read', async () => {
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: NQN,
      ioQueues: 1,
      queueSize: 64,
    });
    try {
      const ns = await ctrl.namespace(1);
      const blocks = Array.from({ length: 48 }, () => randomBytes(4096));
      await Promise.all(blocks.map((b, i) => ns.write(8192 + i * 8, b)));
      for (let round = 0; round < 3; round++) {
        const back = await Promise.all(blocks.map((_, i) => ns.read(8192 + i * 8, 8)));
        for (const [i, b] of back.entries()) {
          expect(b.equals(blocks[i]!)).toBe(true);
          expect(b.buffer.byteLength).toBe(4096);
        }
      }
    } finally {
      await ctrl.close();
    }
  });
});

describe('close() against BranchSAN target', () => {
  it('keeps sending keep-alives while it drains a write slower than the keep-alive timeout', async () => {
    const SLOW_NQN = 'nqn.2024-01.io.branchsan:slow-write';
    const mem = new MemoryBackend({ sizeBytes: 16 << 20 });
    // Writes take 2.5 s: longer than the target's keep-alive limit for KATO 1 s (1.5 s).
    const slow: BlockBackend = Object.assign(Object.create(mem) as BlockBackend, {
      write: (o: number, d: Buffer, fua: boolean, cb: Parameters<BlockBackend['write']>[3]) => {
        setTimeout(() => mem.write(o, d, fua, cb), 2500);
      },
    });
    const target = new Target({});
    target.addSubsystem({ nqn: SLOW_NQN, serial: 'SLOW1', model: 'BranchSAN', allowAnyHost: true });
    target.addNamespace(SLOW_NQN, { nsid: 1, backend: slow, nguid: 'ab'.repeat(16) });
    const served = await serveOnLoopback(target);
    try {
      const ctrl = await NvmeController.connect({
        host: '127.0.0.1',
        port: served.port,
        subnqn: SLOW_NQN,
        kato: 1000,
      });
      const ns = await ctrl.namespace(1);
      const data = randomBytes(ns.blockSize);
      const written = ns.write(7, data).then(
        () => 'written',
        (e: Error) => e.message,
      );
      await new Promise((r) => setTimeout(r, 50));
      await ctrl.close(5000); // drains the write, up to 5 s
      // Without keep-alives during the drain the target drops the controller at 1.5 s
      // and the write fails under close().
      expect(await written).toBe('written');
      const back = await new Promise<Buffer>((resolve, reject) =>
        mem.read(7 * ns.blockSize, ns.blockSize, (e, d) => (e ? reject(e) : resolve(d!))),
      );
      expect(back.equals(data)).toBe(true);
    } finally {
      target.close();
      await served.transport.close();
    }
  }, 15_000);
});

describe('a raw request whose onDone throws', () => {
  // Before: the throw escaped the socket's data handler (an uncaught exception, which ends
  // a process) in the middle of a received chunk, so the completions after it in that
  // chunk were never handed out.
  it('is reported as a warning and the queue goes on', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN });
    try {
      const ns = await ctrl.namespace(1);
      const bad = fillFlush(new NvmeRequest(), 1);
      bad.onDone = () => {
        throw new Error('a buggy onDone');
      };
      // Submitted in one turn on one queue: their completions tend to share a chunk.
      ctrl.submitIo(bad, 0);
      const after = Array.from({ length: 8 }, () =>
        ctrl.io(fillFlush(new NvmeRequest(), 1), 'flush', 0),
      );
      await Promise.all(after);
      await ns.write(3, randomBytes(ns.blockSize));
      expect(ctrl.state).toBe('live');
      await waitFor(() => warnings.some((w) => /onDone callback threw: a buggy onDone/.test(w)));
    } finally {
      process.off('warning', onWarning);
      await ctrl.close();
    }
  });
});

// Before: our target's ANA Transition (its ANA group in 'change', or its backend briefly
// unavailable) was sent again 5 times at once, within a millisecond, and the caller got
// ANA_TRANSITION although the namespace was back 300 ms later.
describe('one controller, and a path status from BranchSAN target', () => {
  /** `b`, whose writes fail 'unavailable' (our target: 3/03) while `away()`. */
  function unavailableWhile(b: BlockBackend, away: () => boolean): BlockBackend {
    return overBackend(b, {
      write: (o, d, f, cb) => {
        if (!away()) return b.write(o, d, f, cb);
        setImmediate(() => cb(new BackendError('unavailable', 'storage thread restarting')));
      },
    });
  }

  it.each([
    ['its ANA group is in change', 'change'],
    ['its backend is unavailable', 'backend'],
  ])('waits out an ANA Transition while %s, backing off', async (_, how) => {
    let awayUntil = 0;
    const away = () => performance.now() < awayUntil;
    const target = new Target({ inCapsuleBytes: 16384 });
    const nqn = `${NQN}-ana`;
    target.addSubsystem({ nqn, serial: 'HOSTLIB2', model: 'BranchSAN', allowAnyHost: true });
    const writes: number[] = [];
    const memory = new MemoryBackend({ sizeBytes: 16 << 20 });
    const counting = unavailableWhile(memory, () => {
      writes.push(performance.now());
      return how === 'backend' && away();
    });
    target.addNamespace(nqn, {
      nsid: 1,
      backend: counting,
      nguid: '0123456789abcdef0123456789abcdf0',
    });
    const served = await serveOnLoopback(target);
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port: served.port,
      subnqn: nqn,
    });
    try {
      const ns = await ctrl.namespace(1);
      awayUntil = performance.now() + 300;
      if (how === 'change') {
        target.setAnaState(1, 'change');
        setTimeout(() => target.setAnaState(1, 'optimized'), 300);
      }
      const data = randomBytes(4096);
      await ns.write(3, data);
      expect(performance.now()).toBeGreaterThanOrEqual(awayUntil);
      // A few retries, 50, 100, 200 ms... apart: not a hot loop on the backend.
      expect(writes.length).toBeLessThanOrEqual(6);
      expect((await ns.read(3, 8)).equals(data)).toBe(true);
    } finally {
      await ctrl.close(100);
      target.close();
      await served.transport.close();
    }
  });
});
