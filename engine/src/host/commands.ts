/**
 * Fillers for the commands the host sends: each sets the SQE fields and data of an
 * NvmeRequest (facts §3, §4.4, §6). Pure; no I/O. Field packing follows the spec's
 * byte layout, noted per command where a dword holds several fields.
 */
import {
  ADMIN,
  CONNECT_DATA_SIZE,
  FABRICS_OPCODE,
  FCTYPE,
  IDENTIFY_DATA_SIZE,
  IO,
} from '../protocol/opcodes.js';
import { encodeConnectData } from '../protocol/sqe.js';
import { NO_TIMEOUT, type NvmeRequest } from './request.js';

const U32 = 0x1_0000_0000;

/** Split a 64-bit value (< 2^53) into the low/high dwords of an SQE field pair. */
function lo32(v: number): number {
  return (v % U32) >>> 0;
}
function hi32(v: number): number {
  return Math.floor(v / U32) >>> 0;
}

export interface ConnectParams {
  readonly qid: number;
  /** 0's based submission queue size. */
  readonly sqsize: number;
  /** Keep-alive timeout in ms (admin queue only; 0 = none). */
  readonly kato: number;
  /** Connect attributes (b2 = disable SQ flow control). */
  readonly cattr?: number;
  readonly hostid: Buffer;
  /** 0xFFFF on the admin queue (dynamic controller), the admin's cntlid on I/O queues. */
  readonly cntlid: number;
  readonly subnqn: string;
  readonly hostnqn: string;
}

export function fillConnect(req: NvmeRequest, p: ConnectParams): NvmeRequest {
  req.opcode = FABRICS_OPCODE;
  req.fctype = FCTYPE.CONNECT;
  req.cdw10 = (p.qid & 0xffff) << 16; // RECFMT 0 in bits 15:0, QID in 31:16
  req.cdw11 = (p.sqsize & 0xffff) | ((p.cattr ?? 0) << 16);
  req.cdw12 = p.kato;
  req.dataOut = encodeConnectData({
    hostid: p.hostid,
    cntlid: p.cntlid,
    subnqn: p.subnqn,
    hostnqn: p.hostnqn,
  });
  if (req.dataOut.length !== CONNECT_DATA_SIZE) throw new Error('bad Connect data size');
  return req;
}

/** Property Get; the value comes back in dw0 (and dw1 for 8-byte properties). */
export function fillPropertyGet(req: NvmeRequest, offset: number, eightBytes: boolean) {
  req.opcode = FABRICS_OPCODE;
  req.fctype = FCTYPE.PROPERTY_GET;
  req.cdw10 = eightBytes ? 1 : 0; // ATTRIB b0: size
  req.cdw11 = offset;
  return req;
}

export function fillPropertySet(req: NvmeRequest, offset: number, value: number, eight = false) {
  req.opcode = FABRICS_OPCODE;
  req.fctype = FCTYPE.PROPERTY_SET;
  req.cdw10 = eight ? 1 : 0;
  req.cdw11 = offset;
  req.cdw12 = lo32(value);
  req.cdw13 = hi32(value);
  return req;
}

export function fillIdentify(req: NvmeRequest, cns: number, nsid = 0, csi = 0) {
  req.opcode = ADMIN.IDENTIFY;
  req.nsid = nsid;
  req.cdw10 = cns & 0xff; // CNTID 31:16 = 0
  req.cdw11 = (csi & 0xff) << 24;
  req.readLength = IDENTIFY_DATA_SIZE;
  return req;
}

export interface LogPageParams {
  readonly lid: number;
  /** Bytes to read; a multiple of 4. */
  readonly length: number;
  readonly nsid?: number;
  /** Log specific field (7 bits). */
  readonly lsp?: number;
  /** Retain Asynchronous Event: true keeps the AEN masked (libnvme sets it on all but the
   * last chunk). */
  readonly rae?: boolean;
  /** Byte offset into the log (dword aligned). */
  readonly lpo?: number;
  /** Log specific identifier. */
  readonly lsi?: number;
  readonly csi?: number;
}

export function fillGetLogPage(req: NvmeRequest, p: LogPageParams): NvmeRequest {
  if (p.length <= 0 || p.length % 4 !== 0) {
    throw new RangeError(`log page length must be a positive multiple of 4, got ${p.length}`);
  }
  const lpo = p.lpo ?? 0;
  if (lpo % 4 !== 0) throw new RangeError(`log page offset must be dword aligned, got ${lpo}`);
  const numd = p.length / 4 - 1; // 0's based dword count, split NUMDL/NUMDU
  req.opcode = ADMIN.GET_LOG_PAGE;
  req.nsid = p.nsid ?? 0;
  req.cdw10 =
    (p.lid & 0xff) | (((p.lsp ?? 0) & 0x7f) << 8) | (p.rae ? 1 << 15 : 0) | ((numd & 0xffff) << 16);
  req.cdw11 = (numd >>> 16) | (((p.lsi ?? 0) & 0xffff) << 16);
  req.cdw12 = lo32(lpo);
  req.cdw13 = hi32(lpo);
  req.cdw14 = ((p.csi ?? 0) & 0xff) << 24;
  req.readLength = p.length;
  return req;
}

export interface FeatureParams {
  readonly cdw11?: number;
  readonly nsid?: number;
  /** Get Features SEL (0 current, 1 default, 2 saved, 3 supported capabilities). */
  readonly sel?: number;
  /** Set Features SV: make the value persist across power cycles. */
  readonly save?: boolean;
  /** Feature data buffer: sent (Set) or the length to receive (Get). */
  readonly data?: Buffer;
  readonly dataLength?: number;
  readonly cdw12?: number;
  readonly cdw13?: number;
  readonly cdw14?: number;
  readonly cdw15?: number;
}

function fillFeatureCommon(req: NvmeRequest, p: FeatureParams): void {
  req.nsid = p.nsid ?? 0;
  req.cdw11 = p.cdw11 ?? 0;
  req.cdw12 = p.cdw12 ?? 0;
  req.cdw13 = p.cdw13 ?? 0;
  req.cdw14 = p.cdw14 ?? 0;
  req.cdw15 = p.cdw15 ?? 0;
}

export function fillGetFeatures(req: NvmeRequest, fid: number, p: FeatureParams = {}) {
  req.opcode = ADMIN.GET_FEATURES;
  fillFeatureCommon(req, p);
  req.cdw10 = (fid & 0xff) | (((p.sel ?? 0) & 7) << 8);
  req.readLength = p.dataLength ?? 0;
  return req;
}

export function fillSetFeatures(req: NvmeRequest, fid: number, p: FeatureParams = {}) {
  req.opcode = ADMIN.SET_FEATURES;
  fillFeatureCommon(req, p);
  req.cdw10 = (fid & 0xff) | (p.save ? 0x8000_0000 : 0);
  req.dataOut = p.data ?? null;
  return req;
}

export function fillKeepAlive(req: NvmeRequest): NvmeRequest {
  req.opcode = ADMIN.KEEP_ALIVE;
  return req;
}

/** Async Event Request: held by the controller until an event, so it never times out. */
export function fillAsyncEventRequest(req: NvmeRequest): NvmeRequest {
  req.opcode = ADMIN.ASYNC_EVENT;
  req.timeoutMs = NO_TIMEOUT;
  return req;
}

/** Largest NLB+1 one command can carry (CDW12 NLB is 16 bits, 0's based). */
export const MAX_BLOCKS_PER_COMMAND = 0x10000;

function checkBlocks(nlb: number): void {
  if (!Number.isInteger(nlb) || nlb < 1 || nlb > MAX_BLOCKS_PER_COMMAND) {
    throw new RangeError(`block count must be 1..${MAX_BLOCKS_PER_COMMAND}, got ${nlb}`);
  }
}

/**
 * An LBA must be a whole number the SLBA dwords can carry exactly: split into them, 1.9
 * would address LBA 1 and NaN LBA 0, and the command would touch blocks the caller never
 * named. (The namespace's size is the target's to check: it answers LBA Out of Range.)
 */
function checkLba(slba: number, what = 'starting LBA'): void {
  if (!Number.isSafeInteger(slba) || slba < 0) {
    throw new RangeError(`${what} must be a whole number 0..2^53-1, got ${slba} (not sent)`);
  }
}

/** Read, Write or Compare of `nlb` blocks (1's based here) at `slba`. */
export function fillRw(
  req: NvmeRequest,
  opcode: typeof IO.READ | typeof IO.WRITE | typeof IO.COMPARE,
  nsid: number,
  slba: number,
  nlb: number,
  fua = false,
): NvmeRequest {
  checkBlocks(nlb);
  checkLba(slba);
  req.opcode = opcode;
  req.nsid = nsid;
  req.cdw10 = lo32(slba);
  req.cdw11 = hi32(slba);
  req.cdw12 = (nlb - 1) | (fua ? 1 << 30 : 0);
  return req;
}

export function fillFlush(req: NvmeRequest, nsid: number): NvmeRequest {
  req.opcode = IO.FLUSH;
  req.nsid = nsid;
  return req;
}

export function fillWriteZeroes(
  req: NvmeRequest,
  nsid: number,
  slba: number,
  nlb: number,
  opts: { deac?: boolean; fua?: boolean } = {},
): NvmeRequest {
  checkBlocks(nlb);
  checkLba(slba);
  req.opcode = IO.WRITE_ZEROES;
  req.nsid = nsid;
  req.cdw10 = lo32(slba);
  req.cdw11 = hi32(slba);
  req.cdw12 = (nlb - 1) | (opts.deac ? 1 << 25 : 0) | (opts.fua ? 1 << 30 : 0);
  return req;
}

export interface DsmRange {
  readonly slba: number;
  /** Blocks in the range (not 0's based, as the range format has it). */
  readonly nlb: number;
  readonly cattr?: number;
}

/** Dataset Management with the Deallocate attribute (TRIM/UNMAP) over up to 256 ranges. */
export function fillDeallocate(req: NvmeRequest, nsid: number, ranges: readonly DsmRange[]) {
  if (ranges.length < 1 || ranges.length > 256) {
    throw new RangeError(`DSM takes 1..256 ranges, got ${ranges.length}`);
  }
  const data = Buffer.alloc(ranges.length * 16);
  ranges.forEach((r, i) => {
    checkLba(r.slba, `range ${i}'s starting LBA`);
    // 32 bits, 1's based: wrapped into them, -1 would deallocate 2^32-1 blocks
    if (!Number.isInteger(r.nlb) || r.nlb < 1 || r.nlb > 0xffff_ffff) {
      throw new RangeError(`range ${i}'s block count must be 1..${0xffff_ffff}, got ${r.nlb}`);
    }
    data.writeUInt32LE(r.cattr ?? 0, i * 16);
    data.writeUInt32LE(r.nlb, i * 16 + 4);
    data.writeUInt32LE(lo32(r.slba), i * 16 + 8);
    data.writeUInt32LE(hi32(r.slba), i * 16 + 12);
  });
  req.opcode = IO.DSM;
  req.nsid = nsid;
  req.cdw10 = ranges.length - 1; // NR, 0's based
  req.cdw11 = 1 << 2; // AD: deallocate
  req.dataOut = data;
  return req;
}
