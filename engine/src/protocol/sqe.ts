/**
 * Submission queue entry (64 bytes) readers and a builder, plus the Connect data
 * block. Pure functions over Buffers; offsets from the NVMe base spec and NVMe-oF.
 *
 * Readers take a view of the SQE and copy nothing; the builder is for hosts and tests.
 */
import { CONNECT_DATA_SIZE, NQN_FIELD_SIZE } from './opcodes.js';

export const SQE_SIZE = 64;

/** SQE flags byte: PSDT bits 7:6 = 01b (SGL, metadata pointer is an address). */
export const SQE_FLAGS_SGL = 0x40;
export const SQE_FLAGS_FUSE_MASK = 0x03;
export const SQE_FLAGS_PSDT_MASK = 0xc0;

/** SGL descriptor type bytes used by NVMe/TCP (SQE byte 39). */
export const SGL_TYPE_OFFSET = 0x01;
export const SGL_TYPE_TRANSPORT = 0x5a;

export const sqeOpcode = (sqe: Buffer): number => sqe[0]!;
export const sqeFlags = (sqe: Buffer): number => sqe[1]!;
export const sqeCid = (sqe: Buffer): number => sqe.readUInt16LE(2);
export const sqeNsid = (sqe: Buffer): number => sqe.readUInt32LE(4);
/** Fabrics command type (SQE byte 4, where other commands hold the nsid). */
export const sqeFctype = (sqe: Buffer): number => sqe[4]!;
export const sqeSglLength = (sqe: Buffer): number => sqe.readUInt32LE(32);
export const sqeSglType = (sqe: Buffer): number => sqe[39]!;

/** Command dword n (10..15) as an unsigned 32-bit value. */
export function cdw(sqe: Buffer, n: 10 | 11 | 12 | 13 | 14 | 15): number {
  return sqe.readUInt32LE(n * 4);
}

/** A 64-bit field made of two dwords (SLBA, LPO); exact below 2^53. */
export function cdwPair(sqe: Buffer, lo: 10 | 12 | 14): number {
  return sqe.readUInt32LE((lo + 1) * 4) * 0x1_0000_0000 + sqe.readUInt32LE(lo * 4);
}

/** Connect command fields (SQE bytes 40..51). */
export interface ConnectCmd {
  readonly recfmt: number;
  readonly qid: number;
  /** 0's based submission queue size. */
  readonly sqsize: number;
  readonly cattr: number;
  /** Keep-alive timeout in ms (admin queue only). */
  readonly kato: number;
}

export function decodeConnectCmd(sqe: Buffer): ConnectCmd {
  return {
    recfmt: sqe.readUInt16LE(40),
    qid: sqe.readUInt16LE(42),
    sqsize: sqe.readUInt16LE(44),
    cattr: sqe[46]!,
    kato: sqe.readUInt32LE(48),
  };
}

/** The 1024-byte Connect data block. */
export interface ConnectData {
  /** 16-byte host identifier (a UUID for Linux). */
  readonly hostid: Buffer;
  readonly cntlid: number;
  readonly subnqn: string;
  readonly hostnqn: string;
}

/** Byte offsets in the Connect data, also used as IATTR=1 error locators. */
export const CONNECT_DATA_OFFSET = { hostid: 0, cntlid: 16, subnqn: 256, hostnqn: 512 } as const;
/** SQE byte offsets used as IATTR=0 error locators. */
export const CONNECT_SQE_OFFSET = { recfmt: 40, qid: 42, sqsize: 44, cattr: 46, kato: 48 } as const;
/**
 * Connect CATTR bit 2: the host asks the controller not to flow-control the SQ. A
 * controller may then end a successful read with a C2HData carrying SUCCESS instead of
 * a CapsuleResp (one PDU per read instead of two).
 */
export const CATTR_DISABLE_SQFLOW = 0x04;

export function decodeConnectData(data: Buffer): ConnectData {
  return {
    hostid: Buffer.from(data.subarray(0, 16)),
    cntlid: data.readUInt16LE(CONNECT_DATA_OFFSET.cntlid),
    subnqn: readNqn(data, CONNECT_DATA_OFFSET.subnqn),
    hostnqn: readNqn(data, CONNECT_DATA_OFFSET.hostnqn),
  };
}

export function encodeConnectData(d: ConnectData): Buffer {
  const out = Buffer.alloc(CONNECT_DATA_SIZE);
  d.hostid.copy(out, 0, 0, 16);
  out.writeUInt16LE(d.cntlid, CONNECT_DATA_OFFSET.cntlid);
  out.write(d.subnqn, CONNECT_DATA_OFFSET.subnqn, NQN_FIELD_SIZE - 1, 'utf8');
  out.write(d.hostnqn, CONNECT_DATA_OFFSET.hostnqn, NQN_FIELD_SIZE - 1, 'utf8');
  return out;
}

/** A NUL-terminated NQN field; the last byte is treated as NUL whatever it holds (as nvmet does). */
function readNqn(data: Buffer, at: number): string {
  const field = data.subarray(at, at + NQN_FIELD_SIZE - 1);
  const nul = field.indexOf(0);
  return field.toString('utf8', 0, nul < 0 ? field.length : nul);
}

/** Fields of an SQE for the builder; absent fields are zero. */
export interface SqeFields {
  opcode: number;
  flags?: number;
  cid?: number;
  nsid?: number;
  /** Fabrics commands: fctype overrides byte 4 (the nsid position). */
  fctype?: number;
  cdw2?: number;
  cdw3?: number;
  sglAddr?: bigint;
  sglLength?: number;
  sglType?: number;
  cdw10?: number;
  cdw11?: number;
  cdw12?: number;
  cdw13?: number;
  cdw14?: number;
  cdw15?: number;
}

/** Builds a 64-byte SQE; PSDT defaults to SGL (flags 0x40) as NVMe-oF requires. */
export function encodeSqe(f: SqeFields): Buffer {
  const sqe = Buffer.alloc(SQE_SIZE);
  sqe[0] = f.opcode;
  sqe[1] = f.flags ?? SQE_FLAGS_SGL;
  sqe.writeUInt16LE(f.cid ?? 0, 2);
  sqe.writeUInt32LE((f.nsid ?? 0) >>> 0, 4);
  if (f.fctype !== undefined) sqe[4] = f.fctype;
  sqe.writeUInt32LE((f.cdw2 ?? 0) >>> 0, 8);
  sqe.writeUInt32LE((f.cdw3 ?? 0) >>> 0, 12);
  sqe.writeBigUInt64LE(f.sglAddr ?? 0n, 24);
  sqe.writeUInt32LE((f.sglLength ?? 0) >>> 0, 32);
  sqe[39] = f.sglType ?? SGL_TYPE_TRANSPORT;
  const dws = [f.cdw10, f.cdw11, f.cdw12, f.cdw13, f.cdw14, f.cdw15];
  dws.forEach((v, i) => sqe.writeUInt32LE((v ?? 0) >>> 0, 40 + i * 4));
  return sqe;
}
