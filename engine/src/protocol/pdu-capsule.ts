/**
 * What the NVMe/TCP transport reads from an SQE (PSDT, the one SGL descriptor) and the
 * CQE it writes into a CapsuleResp (facts §1.6, §2). Entries are views at offset 0.
 * (engine/src/protocol/sqe.ts holds the core's fuller SQE readers and builder.)
 */

export const CQE_SIZE = 16;

/** SGL descriptor type byte (SQE byte 39): Data Block, subtype Offset (in-capsule data). */
export const SGL_DATA_BLOCK_OFFSET = 0x01;
/** SGL descriptor type byte: Transport SGL Data Block (data via R2T/H2CData or C2HData). */
export const SGL_TRANSPORT_DATA_BLOCK = 0x5a;
/** PSDT value fabrics require: SGLs, metadata pointer a contiguous buffer (01b). */
export const PSDT_SGL = 1;

/** PRP or SGL for Data Transfer (flags bits 7:6). */
export function sqePsdt(sqe: Buffer): number {
  return sqe[1]! >> 6;
}

/** Fused operation bits (flags bits 1:0); fabrics do not support fused commands. */
export function sqeFuse(sqe: Buffer): number {
  return sqe[1]! & 3;
}

/** SGL descriptor type byte (high nibble type, low nibble subtype). */
export function sglType(sqe: Buffer): number {
  return sqe[39]!;
}

/** SGL descriptor length in bytes. */
export function sglLength(sqe: Buffer): number {
  return sqe.readUInt32LE(32);
}

/** SGL descriptor address (an offset for in-capsule data); exact below 2^53. */
export function sglAddress(sqe: Buffer): number {
  return sqe.readUInt32LE(24) + sqe.readUInt32LE(28) * 0x1_0000_0000;
}

/** Fill the SQE's DPTR with one SGL descriptor and set PSDT to 01b (host side). */
export function setSgl(sqe: Buffer, type: number, length: number, address = 0): void {
  sqe.writeUInt32LE(address % 0x1_0000_0000, 24);
  sqe.writeUInt32LE(Math.floor(address / 0x1_0000_0000), 28);
  sqe.writeUInt32LE(length, 32);
  sqe.fill(0, 36, 39);
  sqe[39] = type;
  sqe[1] = (sqe[1]! & 0x3f) | (PSDT_SGL << 6);
}

/** A decoded completion queue entry. status is the 15-bit value (see status.ts). */
export interface Cqe {
  readonly dw0: number;
  readonly dw1: number;
  readonly sqhd: number;
  readonly sqid: number;
  readonly cid: number;
  readonly status: number;
}

/** Write a CQE at buf[off..off+16); status goes in shifted left by one, phase bit 0. */
export function writeCqe(buf: Buffer, off: number, cqe: Cqe): void {
  buf.writeUInt32LE(cqe.dw0 >>> 0, off);
  buf.writeUInt32LE(cqe.dw1 >>> 0, off + 4);
  buf.writeUInt16LE(cqe.sqhd & 0xffff, off + 8);
  buf.writeUInt16LE(cqe.sqid & 0xffff, off + 10);
  buf.writeUInt16LE(cqe.cid & 0xffff, off + 12);
  buf.writeUInt16LE((cqe.status << 1) & 0xffff, off + 14);
}

/** Decode a 16-byte CQE; the phase bit is dropped from status. */
export function readCqe(cqe: Buffer): Cqe {
  return {
    dw0: cqe.readUInt32LE(0),
    dw1: cqe.readUInt32LE(4),
    sqhd: cqe.readUInt16LE(8),
    sqid: cqe.readUInt16LE(10),
    cid: cqe.readUInt16LE(12),
    status: cqe.readUInt16LE(14) >>> 1,
  };
}
