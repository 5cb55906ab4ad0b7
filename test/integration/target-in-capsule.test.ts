/**
 * The in-capsule data the TCP transport accepts is what the core announces as IOCCSZ
 * (TargetOptions.inCapsuleBytes), and at least the 8 KiB the Linux host sends in the
 * capsule on the admin queue whatever IOCCSZ says: a host that trusts IOCCSZ must not
 * have its connection ended for it, and a peer must not get more buffered than that.
 * In-process Target and TCP transport on 127.0.0.1, on ports the kernel picks.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { Target } from '../../engine/src/core/index.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { IO } from '../../engine/src/protocol/opcodes.js';
import { SGL_DATA_BLOCK_OFFSET } from '../../engine/src/protocol/pdu-capsule.js';
import { Fes, PduType } from '../../engine/src/protocol/pdu.js';
import { MemoryBackend } from '../../engine/src/storage/memory.js';
import type { TcpTransport } from '../../engine/src/transport/tcp/index.js';
import { adminConnect, enableController, ioConnect, RawHost, rwSqe } from '../helpers/raw-nvme.js';
import { serveOnLoopback } from '../helpers/target.js';

const NQN = 'nqn.2026-01.io.branchsan.test:in-capsule';
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:0000cccc-0000-4000-8000-0000000000ca';
const BS = 512;
let served: TcpTransport | null = null;
const hosts: RawHost[] = [];

async function serve(inCapsuleBytes: number): Promise<number> {
  const target = new Target({ inCapsuleBytes });
  target.addSubsystem({ nqn: NQN, serial: 'INCAPS1', model: 'BranchSAN', allowAnyHost: true });
  target.addNamespace(NQN, {
    nsid: 1,
    backend: new MemoryBackend({ sizeBytes: 16 << 20 }),
    nguid: 'c1'.repeat(16),
  });
  const at = await serveOnLoopback(target);
  served = at.transport;
  return at.port;
}

/** A raw I/O queue (qid 1) of a fresh, enabled controller. */
async function rawIoQueue(port: number): Promise<RawHost> {
  const admin = await RawHost.connect(port);
  hosts.push(admin);
  const c = await adminConnect(admin, { subnqn: NQN, hostnqn: HOSTNQN });
  expect(c.status).toBe(0);
  await enableController(admin);
  const io = await RawHost.connect(port);
  hosts.push(io);
  expect(
    (await ioConnect(io, { subnqn: NQN, hostnqn: HOSTNQN, cntlid: c.dw0, qid: 1 })).status,
  ).toBe(0);
  return io;
}

function inCapsuleWrite(cid: number, bytes: number): Buffer {
  return rwSqe({
    opcode: IO.WRITE,
    cid,
    nsid: 1,
    slba: 64,
    nlb: bytes / BS,
    sgl: SGL_DATA_BLOCK_OFFSET,
  });
}

afterEach(async () => {
  for (const h of hosts.splice(0)) h.close();
  await served?.close();
  served = null;
});

describe('in-capsule data against TargetOptions.inCapsuleBytes', () => {
  it('a host sending the 32 KiB in-capsule writes IOCCSZ allows has them land', async () => {
    const port = await serve(32768);
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: NQN,
      ioQueues: 1,
    });
    try {
      expect(ctrl.identity.inCapsuleDataSize).toBe(32768);
      const ns = await ctrl.namespace(1);
      const data = randomBytes(32768); // in the capsule: IOCCSZ allows it
      await ns.write(64, data);
      expect((await ns.read(64, data.length / BS)).equals(data)).toBe(true);
    } finally {
      await ctrl.close();
    }
  });

  it('the raw 32 KiB in-capsule write is answered, not cut off', async () => {
    const io = await rawIoQueue(await serve(32768));
    io.command(inCapsuleWrite(5, 32768), randomBytes(32768));
    expect(await io.nextCqe()).toMatchObject({ cid: 5, status: 0 });
  });

  it('below 8 KiB, 8 KiB still lands (admin data the Linux host sends), and more ends the connection with FES 5', async () => {
    const io = await rawIoQueue(await serve(4096));
    io.command(inCapsuleWrite(6, 8192), randomBytes(8192));
    expect(await io.nextCqe()).toMatchObject({ cid: 6, status: 0 });
    io.command(inCapsuleWrite(7, 12288), randomBytes(12288));
    const o = await io.settle(10_000);
    expect(o.closed).toBe(true);
    expect(o.pdus.at(-1)?.type).toBe(PduType.C2HTermReq);
    expect(o.term).toMatchObject({ fes: Fes.DATA_LIMIT_EXCEEDED });
  });

  it('an inCapsuleBytes the transport cannot take is refused up front', () => {
    expect(() => new Target({ inCapsuleBytes: 256 * 1024 })).toThrow(/inCapsuleBytes/);
  });
});
