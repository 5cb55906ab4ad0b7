/**
 * Test helpers: hand-built SQEs (as the Linux host sends them) and connect sequences
 * over the loop transport.
 */
import { expect } from 'vitest';
import { Target } from '../../../engine/src/core/target.js';
import type { TargetOptions } from '../../../engine/src/core/options.js';
import type { PortInfo } from '../../../engine/src/core/seam.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import { LoopQueue, type LoopCompletion } from '../../../engine/src/transport/loop.js';
import {
  ADMIN,
  CNTLID_DYNAMIC,
  DISCOVERY_NQN,
  FABRICS_OPCODE,
  FCTYPE,
  IO,
  PROP,
} from '../../../engine/src/protocol/opcodes.js';
import { encodeConnectData, encodeSqe, SGL_TYPE_OFFSET } from '../../../engine/src/protocol/sqe.js';
import { SC, statusName } from '../../../engine/src/protocol/status.js';

export const SUBNQN = 'nqn.2024-01.com.branchsan:vol1';
export const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:6a0e8d6c-1b7a-4c4e-9b3e-0a1b2c3d4e5f';
export const OTHER_HOST = 'nqn.2014-08.org.nvmexpress:uuid:00000000-1111-2222-3333-444444444444';
export const HOSTID = Buffer.from('6a0e8d6c1b7a4c4e9b3e0a1b2c3d4e5f', 'hex');
export const NGUID = '0123456789abcdef0123456789abcdef';
export const EUI64 = '0011223344556677';
export const UUID = '6b4a8f3e-2d1c-4b5a-9e8f-7a6b5c4d3e2f';
export const BLOCK = 512;
export const NS_BYTES = 4 << 20; // 8192 blocks

export const TCP_PORT: PortInfo = {
  portId: 1,
  trtype: 'tcp',
  adrfam: 'ipv4',
  traddr: '192.0.2.10',
  trsvcid: '4420',
};

/** A target with one subsystem (HOSTNQN allowed) holding one 4 MiB namespace, and a port. */
export function makeTarget(opts: TargetOptions = {}): { target: Target; backend: MemoryBackend } {
  const target = new Target(opts);
  const backend = new MemoryBackend({ sizeBytes: NS_BYTES, blockSize: BLOCK });
  target.addSubsystem({
    nqn: SUBNQN,
    serial: 'BSAN0001',
    model: 'BranchSAN volume',
    hosts: [HOSTNQN],
  });
  target.addNamespace(SUBNQN, { nsid: 1, backend, nguid: NGUID, eui64: EUI64, uuid: UUID });
  target.addPort(TCP_PORT);
  return { target, backend };
}

// ---- SQE builders ----

let cid = 0;
const nextCid = (): number => (cid = (cid + 1) & 0xfff);

export function connectSqe(qid: number, sqsize: number, kato = 0, recfmt = 0): Buffer {
  const sqe = encodeSqe({
    opcode: FABRICS_OPCODE,
    fctype: FCTYPE.CONNECT,
    cid: nextCid(),
    sglLength: 1024,
    sglType: SGL_TYPE_OFFSET,
  });
  sqe.writeUInt16LE(recfmt, 40);
  sqe.writeUInt16LE(qid, 42);
  sqe.writeUInt16LE(sqsize, 44);
  sqe.writeUInt32LE(kato, 48);
  return sqe;
}

export function connectData(subnqn: string, hostnqn: string, cntlid = CNTLID_DYNAMIC): Buffer {
  return encodeConnectData({ hostid: HOSTID, cntlid, subnqn, hostnqn });
}

export function propGetSqe(offset: number, size8 = false): Buffer {
  const sqe = encodeSqe({ opcode: FABRICS_OPCODE, fctype: FCTYPE.PROPERTY_GET, cid: nextCid() });
  sqe[40] = size8 ? 1 : 0;
  sqe.writeUInt32LE(offset, 44);
  return sqe;
}

export function propSetSqe(offset: number, value: number, size8 = false): Buffer {
  const sqe = encodeSqe({ opcode: FABRICS_OPCODE, fctype: FCTYPE.PROPERTY_SET, cid: nextCid() });
  sqe[40] = size8 ? 1 : 0;
  sqe.writeUInt32LE(offset, 44);
  sqe.writeUInt32LE(value, 48);
  return sqe;
}

export function identifySqe(cns: number, nsid = 0, csi = 0, len = 4096): Buffer {
  return encodeSqe({
    opcode: ADMIN.IDENTIFY,
    cid: nextCid(),
    nsid,
    sglLength: len,
    cdw10: cns,
    cdw11: csi << 24,
  });
}

export interface LogArgs {
  lpo?: number;
  rae?: boolean;
  lsp?: number;
  nsid?: number;
}

export function getLogSqe(lid: number, length: number, a: LogArgs = {}): Buffer {
  const numd = length / 4 - 1;
  const cdw10 = lid | ((a.lsp ?? 0) << 8) | (a.rae ? 1 << 15 : 0) | ((numd & 0xffff) << 16);
  const lpo = a.lpo ?? 0;
  return encodeSqe({
    opcode: ADMIN.GET_LOG_PAGE,
    cid: nextCid(),
    nsid: a.nsid ?? 0xffffffff,
    sglLength: length,
    cdw10,
    cdw11: numd >>> 16,
    cdw12: lpo % 0x1_0000_0000,
    cdw13: Math.floor(lpo / 0x1_0000_0000),
  });
}

export function setFeaturesSqe(fid: number, cdw11: number): Buffer {
  return encodeSqe({ opcode: ADMIN.SET_FEATURES, cid: nextCid(), cdw10: fid, cdw11 });
}

export function getFeaturesSqe(fid: number, cdw11 = 0, sel = 0): Buffer {
  return encodeSqe({ opcode: ADMIN.GET_FEATURES, cid: nextCid(), cdw10: fid | (sel << 8), cdw11 });
}

export const aerSqe = (): Buffer => encodeSqe({ opcode: ADMIN.ASYNC_EVENT, cid: 31 });
export const keepAliveSqe = (): Buffer => encodeSqe({ opcode: ADMIN.KEEP_ALIVE, cid: nextCid() });

export interface RwArgs {
  nsid?: number;
  fua?: boolean;
  sglLength?: number;
  cdw12?: number;
}

/** Read, Write or Compare of nlb blocks (1's based here) at slba. */
export function rwSqe(opcode: number, slba: number, nlb: number, a: RwArgs = {}): Buffer {
  return encodeSqe({
    opcode,
    cid: nextCid(),
    nsid: a.nsid ?? 1,
    sglLength: a.sglLength ?? nlb * BLOCK,
    cdw10: slba % 0x1_0000_0000,
    cdw11: Math.floor(slba / 0x1_0000_0000),
    cdw12: ((nlb - 1) & 0xffff) | (a.fua ? 1 << 30 : 0) | (a.cdw12 ?? 0),
  });
}

export const readSqe = (slba: number, nlb: number, a?: RwArgs): Buffer =>
  rwSqe(IO.READ, slba, nlb, a);
export const writeSqe = (slba: number, nlb: number, a?: RwArgs): Buffer =>
  rwSqe(IO.WRITE, slba, nlb, a);

// ---- sequences ----

/** CC as the Linux host programs it: CSS 0, MPS 0, AMS 0, SHN 0, IOSQES 6, IOCQES 4. */
export const CC_LINUX = (6 << 16) | (4 << 20);

export function ok(c: LoopCompletion): LoopCompletion {
  expect(statusName(c.status)).toBe(statusName(SC.SUCCESS));
  return c;
}

export interface Session {
  admin: LoopQueue;
  cntlid: number;
}

/** Admin Connect with SQSIZE 31 (as Linux); returns the queue and CNTLID. */
export async function connectAdmin(
  target: Target,
  subnqn = SUBNQN,
  hostnqn = HOSTNQN,
  kato = 5000,
  port: PortInfo = TCP_PORT,
): Promise<Session> {
  const admin = new LoopQueue(target, { port });
  const c = ok(await admin.submit(connectSqe(0, 31, kato), connectData(subnqn, hostnqn)));
  return { admin, cntlid: c.dw0 & 0xffff };
}

/** facts §4.1 step 2: CAP, CC, CAP, CC|EN, poll CSTS.RDY, VS. */
export async function enable(admin: LoopQueue, cc = CC_LINUX): Promise<void> {
  ok(await admin.submit(propGetSqe(PROP.CAP, true)));
  ok(await admin.submit(propSetSqe(PROP.CC, cc)));
  ok(await admin.submit(propGetSqe(PROP.CAP, true)));
  ok(await admin.submit(propSetSqe(PROP.CC, cc | 1)));
  const csts = ok(await admin.submit(propGetSqe(PROP.CSTS)));
  expect(csts.dw0 & 1).toBe(1);
  ok(await admin.submit(propGetSqe(PROP.VS)));
}

export async function connectIo(
  target: Target,
  cntlid: number,
  qid: number,
  sqsize = 127,
  hostnqn = HOSTNQN,
): Promise<{ q: LoopQueue; c: LoopCompletion }> {
  const q = new LoopQueue(target, { port: TCP_PORT });
  const c = await q.submit(connectSqe(qid, sqsize), connectData(SUBNQN, hostnqn, cntlid));
  return { q, c };
}

/** Connected, enabled admin queue plus one I/O queue. */
export async function session(target: Target): Promise<Session & { io: LoopQueue }> {
  const s = await connectAdmin(target);
  await enable(s.admin);
  const { q, c } = await connectIo(target, s.cntlid, 1);
  ok(c);
  return { ...s, io: q };
}

export const DISC_NQN = DISCOVERY_NQN;

/** Lets queued microtasks (backend callbacks, closures) run. */
export const settle = (): Promise<void> => new Promise((r) => setImmediate(r));
