/**
 * Writes a CapsuleCmd PDU header and its SQE in place, into a buffer each queue slot
 * owns for its lifetime: no allocation per command. This is the hot-path twin of
 * protocol/pdu.ts encodeCapsuleCmd (which allocates); the unit tests check that both
 * produce the same bytes, so the wire format still has one source of truth.
 */
import { crc32c } from '../protocol/crc32c.js';
import { CH_SIZE, DIGEST_SIZE, HLEN_CMD, PduFlag, PduType } from '../protocol/pdu.js';
import { SGL_TRANSPORT_DATA_BLOCK, SGL_DATA_BLOCK_OFFSET } from '../protocol/pdu-capsule.js';
import { SQE_FLAGS_SGL } from '../protocol/sqe.js';
import type { NvmeRequest } from './request.js';

/** Bytes a slot reserves: header, HDGST, then the 4-byte DDGST of in-capsule data. */
export const SLOT_HEADER_BYTES = HLEN_CMD + DIGEST_SIZE + DIGEST_SIZE;

/**
 * Fill slot[0..72+hd) with the CapsuleCmd header and SQE for `req` with command id
 * `cid`. `inCapsule` = the request's dataOut travels inside this PDU (SGL 0x01);
 * otherwise data, if any, moves by R2T/H2CData or C2HData (SGL 0x5A).
 * Returns the header length (72 or 76). The DDGST of in-capsule data is written at
 * slot[76..80) by the caller only if ddgst is on (see ddgstView).
 */
export function writeCapsule(
  slot: Buffer,
  req: NvmeRequest,
  cid: number,
  inCapsule: boolean,
  hdgst: boolean,
  ddgst: boolean,
): number {
  const hd = hdgst ? DIGEST_SIZE : 0;
  const head = HLEN_CMD + hd;
  const len = req.transferLength;
  const dataLen = inCapsule ? len : 0;
  const dd = dataLen > 0 && ddgst ? DIGEST_SIZE : 0;
  slot[0] = PduType.CapsuleCmd;
  slot[1] = (hd ? PduFlag.HDGST : 0) | (dd ? PduFlag.DDGST : 0);
  slot[2] = HLEN_CMD;
  slot[3] = dataLen > 0 ? head : 0;
  slot.writeUInt32LE(head + dataLen + dd, 4);
  writeSqe(slot, CH_SIZE, req, cid, inCapsule ? SGL_DATA_BLOCK_OFFSET : SGL_TRANSPORT_DATA_BLOCK);
  if (hd) slot.writeUInt32LE(crc32c(slot.subarray(0, HLEN_CMD)), HLEN_CMD);
  return head;
}

/** The 64-byte SQE at b[o..o+64): every byte is written (the slot is reused). */
function writeSqe(b: Buffer, o: number, req: NvmeRequest, cid: number, sglType: number): void {
  b[o] = req.opcode;
  b[o + 1] = SQE_FLAGS_SGL; // PSDT 01b, no fused bits: nvmet rejects anything else
  b.writeUInt16LE(cid, o + 2);
  if (req.fctype >= 0) {
    b.writeUInt32LE(req.fctype, o + 4); // fctype in byte 4, bytes 5..7 reserved
  } else {
    b.writeUInt32LE(req.nsid >>> 0, o + 4);
  }
  b.writeUInt32LE(req.cdw2 >>> 0, o + 8);
  b.writeUInt32LE(req.cdw3 >>> 0, o + 12);
  b.fill(0, o + 16, o + 32); // MPTR, SGL address (ICDOFF 0 / transport: 0)
  b.writeUInt32LE(req.transferLength, o + 32);
  b[o + 36] = 0;
  b[o + 37] = 0;
  b[o + 38] = 0;
  b[o + 39] = sglType;
  b.writeUInt32LE(req.cdw10 >>> 0, o + 40);
  b.writeUInt32LE(req.cdw11 >>> 0, o + 44);
  b.writeUInt32LE(req.cdw12 >>> 0, o + 48);
  b.writeUInt32LE(req.cdw13 >>> 0, o + 52);
  b.writeUInt32LE(req.cdw14 >>> 0, o + 56);
  b.writeUInt32LE(req.cdw15 >>> 0, o + 60);
}

/** Where a slot keeps the DDGST of its in-capsule data. */
export function ddgstView(slot: Buffer): Buffer {
  return slot.subarray(HLEN_CMD + DIGEST_SIZE, SLOT_HEADER_BYTES);
}
