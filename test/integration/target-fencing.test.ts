/**
 * The NVMe/TCP target's fencing: once a controller is gone (keep-alive expiry,
 * its admin queue closed) nothing its host sent may start on the backend any more, and a
 * silent host's controller is gone within KATO plus the configured slack. A multipath
 * host resends its in-doubt writes on the other node after that time; a write starting
 * here later would land out of order. The same holds for a write whose data arrives after
 * this node gave its ANA group up (a failover), and for writes waiting in the backend of
 * a namespace removed from this node.
 *
 * Real in-process Targets on 127.0.0.1 with a memory backend behind a recording (and,
 * where needed, stalling) wrapper, driven by a raw scripted host.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { KA_TICK_MS } from '../../engine/src/core/controller.js';
import { Target, type TargetOptions } from '../../engine/src/core/index.js';
import { resolveOptions } from '../../engine/src/core/options.js';
import { defaultFenceMs } from '../../engine/src/host/multipath.js';
import { IO, PROP } from '../../engine/src/protocol/opcodes.js';
import {
  SGL_DATA_BLOCK_OFFSET,
  SGL_TRANSPORT_DATA_BLOCK,
} from '../../engine/src/protocol/pdu-capsule.js';
import { PduType } from '../../engine/src/protocol/pdu.js';
import { SC } from '../../engine/src/protocol/status.js';
import { encodeSqe } from '../../engine/src/protocol/sqe.js';
import {
  BackendError,
  type BlockBackend,
  type IoCallback,
  type IoOwner,
} from '../../engine/src/storage/backend.js';
import { MemoryBackend } from '../../engine/src/storage/memory.js';
import {
  adminConnect,
  enableController,
  ioConnect,
  propertyGetSqe,
  RawHost,
  rwSqe,
} from '../helpers/raw-nvme.js';
import { serveOnLoopback } from '../helpers/target.js';
import { overBackend } from '../helpers/backend.js';

const NQN = 'nqn.2026-01.io.branchsan.test:target-fencing';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:0000dddd-0000-4000-8000-000000000001';
const BS = 512;
const SIZE = 16 << 20;

/**
 * Every backend call that changes data, in order; `stall` holds them before they start
 * (as a backend's queue behind a stalled disk would), and abandon() drops the held
 * calls of an owner, as the file backend does.
 */
interface Recorder {
  readonly calls: string[];
  stall: boolean;
  readonly held: (() => void)[];
  /** The owner each call carried, in order. */
  readonly owners: (IoOwner | undefined)[];
  /** Owners abandon() was called with. */
  readonly abandoned: IoOwner[];
}

function recording(
  b: BlockBackend,
  caps: Partial<BlockBackend['caps']> = {},
): [BlockBackend, Recorder] {
  const rec: Recorder = { calls: [], stall: false, held: [], owners: [], abandoned: [] };
  const heldOwners: (IoOwner | undefined)[] = [];
  const heldCbs: IoCallback[] = [];
  const hold = (cb: IoCallback, run: (cb: IoCallback) => void, owner?: IoOwner): void => {
    rec.owners.push(owner);
    if (!rec.stall) return run(cb);
    rec.held.push(() => run(cb));
    heldOwners.push(owner);
    heldCbs.push(cb);
  };
  const backend = overBackend(b, {
    caps: { ...b.caps, ...caps },
    write: (o, d, f, cb, owner) => {
      rec.calls.push(`write ${o}+${d.length}`);
      hold(cb, (c) => b.write(o, Buffer.from(d), f, c), owner);
    },
    writeZeroes: (o, l, f, cb, owner) => {
      rec.calls.push(`writeZeroes ${o}+${l}`);
      hold(cb, (c) => b.writeZeroes(o, l, f, c), owner);
    },
    deallocate: (o, l, cb, owner) => {
      rec.calls.push(`deallocate ${o}+${l}`);
      hold(cb, (c) => b.deallocate(o, l, c), owner);
    },
    abandon: (owner) => {
      rec.abandoned.push(owner);
      for (let i = rec.held.length - 1; i >= 0; i--) {
        if (heldOwners[i] !== owner) continue;
        const cb = heldCbs[i]!;
        rec.held.splice(i, 1);
        heldOwners.splice(i, 1);
        heldCbs.splice(i, 1);
        cb(new BackendError('unavailable', 'dropped: its queue closed'));
      }
    },
    close: () => Promise.resolve(),
  });
  return [backend, rec];
}

const stops: (() => Promise<void>)[] = [];
const hosts: RawHost[] = [];

afterEach(async () => {
  for (const h of hosts.splice(0)) h.close();
  for (const s of stops.splice(0).reverse()) await s();
});

async function startTarget(
  opts: TargetOptions,
  caps: Partial<BlockBackend['caps']> = {},
): Promise<{ target: Target; rec: Recorder; port: number; memory: MemoryBackend }> {
  const target = new Target(opts);
  const memory = new MemoryBackend({ sizeBytes: SIZE, blockSize: BS });
  const [backend, rec] = recording(memory, caps);
  target.addSubsystem({ nqn: NQN, serial: 'REVIEW0001', model: 'BranchSAN', hosts: [HOST] });
  target.addNamespace(NQN, { nsid: 1, backend, nguid: '00112233445566778899aabbccddeeff' });
  const { transport, port } = await serveOnLoopback(target, { lingerMs: 100 });
  stops.push(async () => {
    target.close();
    await transport.close();
  });
  return { target, rec, port, memory };
}

async function raw(port: number): Promise<RawHost> {
  const h = await RawHost.connect(port);
  hosts.push(h);
  return h;
}

/** An enabled controller with I/O queue 1; KATO in ms. */
async function session(port: number, kato: number): Promise<{ admin: RawHost; io: RawHost }> {
  const admin = await raw(port);
  const c = await adminConnect(admin, { subnqn: NQN, hostnqn: HOST, kato });
  expect(c.status).toBe(0);
  await enableController(admin);
  const io = await raw(port);
  const q = await ioConnect(io, { subnqn: NQN, hostnqn: HOST, cntlid: c.dw0 & 0xffff, qid: 1 });
  expect(q.status).toBe(0);
  return { admin, io };
}

/** Writes 1..count (CIDs), 8 blocks each at LBA cid * 8, their data in the capsule. */
function sendWrites(io: RawHost, count: number): void {
  for (let cid = 1; cid <= count; cid++) {
    const sqe = rwSqe({
      opcode: IO.WRITE,
      cid,
      nsid: 1,
      slba: cid * 8,
      nlb: 8,
      sgl: SGL_DATA_BLOCK_OFFSET,
    });
    io.command(sqe, Buffer.alloc(8 * BS, cid));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * Once the first backend step of a command is held: the host goes away (or its keep-alive
 * expired), so the controller is deleted; then the backend finishes the step it had.
 * No further step may start after that.
 */
async function goneWhileFirstStepHeld(
  target: Target,
  rec: Recorder,
  admin: RawHost,
  io: RawHost,
): Promise<void> {
  await until('the first step to reach the backend', () => rec.calls.length === 1);
  admin.close();
  await until('the controller to be deleted', () => target.listControllers().length === 0);
  await until('the I/O connection to close', () => io.isClosed);
  rec.stall = false;
  for (const run of rec.held.splice(0)) run();
  await sleep(200);
}

describe('keep-alive expiry fences the controller', () => {
  it('a write arriving after KATO + slack of silence never reaches the backend', async () => {
    const KATO = 2000;
    const SLACK = 100;
    const { target, rec, port } = await startTarget({ kaSlackMs: SLACK });
    const { admin, io } = await session(port, KATO);
    // The host's last command; the target received it before this answer came back.
    admin.command(propertyGetSqe(9, PROP.CSTS));
    expect(await admin.nextCqe()).toMatchObject({ cid: 9, status: 0, dw0: 1 });
    const lastCommand = Date.now();
    // Silence for KATO + slack (2.1 s) plus 0.8 s, then a write on the I/O queue: the
    // controller must be gone by now (within one keep-alive tick of 2.1 s), so the
    // write finds a closed connection. Before the fix it lived up to 2 x 2.1 s.
    await sleep(lastCommand + KATO + SLACK + 800 - Date.now());
    const w = rwSqe({
      opcode: IO.WRITE,
      cid: 5,
      nsid: 1,
      slba: 0,
      nlb: 8,
      sgl: SGL_DATA_BLOCK_OFFSET,
    });
    if (!io.isClosed) io.command(w, Buffer.alloc(4096, 0xab));
    await until('the I/O connection to close', () => io.isClosed, 5000);
    expect(rec.calls).toEqual([]);
    expect(target.listControllers()).toEqual([]);
  });

  it("outlives no multipath host's default fence: the host waits longer than the worst case", () => {
    // The controller ends at most one tick after ceil(KATO) + slack of silence; a host
    // that gave the path up resends in-doubt writes elsewhere defaultFenceMs later.
    const { kaSlackMs } = resolveOptions();
    for (const kato of [1, 999, 1000, 1001, 5000, 30_000]) {
      const worst = Math.ceil(kato / 1000) * 1000 + kaSlackMs + KA_TICK_MS;
      expect(defaultFenceMs(kato), `KATO ${kato} ms`).toBeGreaterThanOrEqual(worst);
    }
  });

  it('a KATO beyond the range of a Node timer does not end the controller at once', async () => {
    const { target, port } = await startTarget({});
    const admin = await raw(port);
    // 0xFFFFFFFF ms (about 49 days): a host's way of saying "practically never".
    const c = await adminConnect(admin, { subnqn: NQN, hostnqn: HOST, kato: 0xffffffff });
    expect(c.status).toBe(0);
    await sleep(300);
    expect(admin.isClosed).toBe(false);
    admin.command(propertyGetSqe(9, PROP.CSTS));
    expect(await admin.nextCqe()).toMatchObject({ cid: 9, status: 0 });
    expect(target.listControllers()).toHaveLength(1);
  });
});

describe('a command whose controller is gone starts nothing more on the backend', () => {
  it('Write Zeroes done as zero-buffer writes stops after the controller is deleted', async () => {
    // No native write-zeroes: the core writes 1 MiB zero buffers one after another.
    const { target, rec, port } = await startTarget({}, { writeZeroes: false });
    const { admin, io } = await session(port, 0);
    rec.stall = true;
    const nlb = (3 << 20) / BS; // three 1 MiB pieces
    io.command(encodeSqe({ opcode: IO.WRITE_ZEROES, cid: 4, nsid: 1, cdw10: 0, cdw12: nlb - 1 }));
    await goneWhileFirstStepHeld(target, rec, admin, io);
    expect(rec.calls).toEqual([`write 0+${1 << 20}`]);
  });

  it('writes waiting inside the backend are abandoned when their queue closes, never started', async () => {
    const { target, rec, port, memory } = await startTarget({});
    const { admin, io } = await session(port, 0);
    rec.stall = true; // the backend queues them: a stalled disk ahead of them
    sendWrites(io, 4);
    await until('four writes to reach the backend', () => rec.calls.length === 4);
    const owner = rec.owners[0];
    expect(owner).toBeDefined();
    expect(rec.owners.every((o) => o === owner)).toBe(true); // one queue, one owner
    expect(rec.abandoned).toEqual([]);
    admin.close(); // the host is gone: the controller and its I/O queue with it
    await until('the I/O connection to close', () => io.isClosed);
    expect(rec.abandoned).toContain(owner);
    expect(owner!.isClosed).toBe(true);
    expect(rec.held).toEqual([]); // nothing of that queue is left to start
    const landed = await new Promise<Buffer>((ok, no) =>
      memory.read(0, 48 * BS, (e, d) => (e ? no(e) : ok(d!))),
    );
    expect(landed.every((x) => x === 0)).toBe(true);
    expect(target.listControllers()).toEqual([]);
  });

  it('writes waiting inside the backend of a removed namespace are abandoned, never started', async () => {
    const { target, rec, port, memory } = await startTarget({});
    const { io } = await session(port, 0);
    rec.stall = true; // a stalled disk ahead of them
    sendWrites(io, 3);
    await until('three writes to reach the backend', () => rec.calls.length === 3);
    target.removeNamespace(NQN, 1); // the volume leaves this node
    // Before the fix: still held, to start whenever the disk moved (or the backend closed).
    expect(rec.abandoned).toEqual([rec.owners[0]]);
    expect(rec.held).toEqual([]);
    const cqes = [await io.nextCqe(), await io.nextCqe(), await io.nextCqe()];
    // not executed: a multipath host sends them to the other node at once
    expect(cqes.map((c) => c.status)).toEqual([3, 3, 3].map(() => SC.ANA_TRANSITION));
    const landed = await new Promise<Buffer>((ok, no) =>
      memory.read(0, 32 * BS, (e, d) => (e ? no(e) : ok(d!))),
    );
    expect(landed.every((x) => x === 0)).toBe(true);
  });

  it('a multi-range deallocate stops after the controller is deleted', async () => {
    const { target, rec, port } = await startTarget({});
    const { admin, io } = await session(port, 0);
    rec.stall = true;
    const ranges = Buffer.alloc(4096);
    for (let i = 0; i < 3; i++) {
      ranges.writeUInt32LE(8, i * 16 + 4); // NLB (not 0's based)
      ranges.writeUInt32LE(i * 64, i * 16 + 8); // SLBA
    }
    const dsm = encodeSqe({
      opcode: IO.DSM,
      cid: 6,
      nsid: 1,
      cdw10: 2, // three ranges
      cdw11: 1 << 2, // AD
      sglType: SGL_DATA_BLOCK_OFFSET,
      sglLength: 4096,
    });
    io.command(dsm, ranges);
    await goneWhileFirstStepHeld(target, rec, admin, io);
    expect(rec.calls).toEqual([`deallocate 0+${8 * BS}`]);
  });
});

describe('a failover while a write waits for its data', () => {
  it.each([
    ['write', IO.WRITE, 4096],
    ['deallocate', IO.DSM, 4096],
  ] as const)(
    'a %s whose data arrives after the group became inaccessible never reaches the backend',
    async (_what, opcode, length) => {
      const { target, rec, port } = await startTarget({}, { deallocate: true });
      const { io } = await session(port, 0);
      // The data travels by R2T: the command is parsed (ANA optimized) before it comes.
      const sqe =
        opcode === IO.WRITE
          ? rwSqe({ opcode, cid: 7, nsid: 1, slba: 8, nlb: 8, sgl: SGL_TRANSPORT_DATA_BLOCK })
          : encodeSqe({
              opcode,
              cid: 7,
              nsid: 1,
              sglType: SGL_TRANSPORT_DATA_BLOCK,
              sglLength: length,
              cdw10: 0, // one range
              cdw11: 1 << 2, // AD: deallocate
            });
      io.command(sqe, null);
      const r2t = await io.nextOf(PduType.R2T);
      // This node gives the volume up (the pair's other node takes it over).
      target.setAnaState(1, 'inaccessible');
      const data = Buffer.alloc(length, 0xcd);
      if (opcode === IO.DSM) {
        data.fill(0);
        data.writeUInt32LE(8, 4); // NLB 8
        data.writeUInt32LE(8, 8); // SLBA 8
      }
      io.h2c(r2t.cccid, r2t.ttag, 0, data, true);
      const cqe = await io.nextCqe();
      // Before the fix: success, and the data landed after the group was given up.
      expect(cqe).toMatchObject({ cid: 7, status: SC.ANA_INACCESSIBLE });
      expect(rec.calls).toEqual([]);
    },
  );
});
