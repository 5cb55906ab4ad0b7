/**
 * NVMe/TCP PDUs: constants, the decoded shapes the parser hands out, and one pure
 * encoder per PDU type (facts §1). Used by both roles: the target (controller) and our
 * host library. The streaming parser is in pdu-parser.ts.
 *
 * Encoders allocate exactly the header bytes they fill (Buffer.allocUnsafe) and never
 * copy payloads: PDUs that carry data return Buffer[] = [header+HDGST+PAD, data, DDGST?]
 * for a corked socket (one writev).
 */
import { crc32c } from './crc32c.js';
import { writeCqe, type Cqe } from './pdu-capsule.js';

export const PduType = {
  ICReq: 0x00,
  ICResp: 0x01,
  H2CTermReq: 0x02,
  C2HTermReq: 0x03,
  CapsuleCmd: 0x04,
  CapsuleResp: 0x05,
  H2CData: 0x06,
  C2HData: 0x07,
  R2T: 0x09,
} as const;
export type PduType = (typeof PduType)[keyof typeof PduType];

/** Common header flags. */
export const PduFlag = {
  HDGST: 0x01,
  DDGST: 0x02,
  /** Last data PDU of a C2H transfer or of one R2T's H2C window. */
  LAST_PDU: 0x04,
  /** C2HData only: the PDU also completes the command (we never send it). */
  SUCCESS: 0x08,
} as const;

/** Header lengths (hlen) per type. */
export const HLEN_IC = 128;
export const HLEN_TERM = 24;
export const HLEN_CMD = 72;
export const HLEN_RESP = 24;
export const HLEN_DATA = 24;
export const HLEN_R2T = 24;
/** Common header size. */
export const CH_SIZE = 8;
/** Digest size (HDGST and DDGST). */
export const DIGEST_SIZE = 4;
/** A TermReq carries at most this many bytes of the offending PDU header. */
export const TERM_MAX_HEADER = 128;

/** TermReq Fatal Error Status. */
export const Fes = {
  INVALID_HEADER_FIELD: 1,
  PDU_SEQUENCE_ERROR: 2,
  HEADER_DIGEST_ERROR: 3,
  DATA_OUT_OF_RANGE: 4,
  DATA_LIMIT_EXCEEDED: 5,
  UNSUPPORTED_PARAMETER: 6,
} as const;

// Byte offsets of PDU fields, used as FEI (Fatal Error Information) values.
export const OFF_TYPE = 0;
export const OFF_FLAGS = 1;
export const OFF_HLEN = 2;
export const OFF_PDO = 3;
export const OFF_PLEN = 4;
export const OFF_PFV = 8;
export const OFF_HPDA = 10;
export const OFF_DGST = 11;
export const OFF_MAXR2T = 12;
export const OFF_CCCID = 8;
export const OFF_TTAG = 10;
export const OFF_DATAO = 12;
export const OFF_DATAL = 16;
export const OFF_R2TO = 12;
export const OFF_R2TL = 16;

/** Digest settings of a connection after the IC exchange. */
export interface Digests {
  readonly hdgst: boolean;
  readonly ddgst: boolean;
}

/** Digests off: the state before ICReq/ICResp and when none were negotiated. */
export const NO_DIGESTS: Digests = { hdgst: false, ddgst: false };

/** Options for encoders of data-carrying PDUs. */
export interface DataPduOptions extends Digests {
  /** PDO alignment in bytes: (HPDA+1)*4 for C2H data, (CPDA+1)*4 for H2C; default 4. */
  readonly align?: number;
}

// ---- decoded PDUs (what PduParser hands out) ----
// Buffer fields are views; see the ownership note in pdu-parser.ts.

export interface ICReqPdu {
  readonly type: typeof PduType.ICReq;
  readonly pfv: number;
  /** Host PDU data alignment, dwords, 0's based. */
  readonly hpda: number;
  readonly hdgst: boolean;
  readonly ddgst: boolean;
  /** Outstanding R2Ts per command the host accepts, 0's based. */
  readonly maxr2t: number;
}

export interface ICRespPdu {
  readonly type: typeof PduType.ICResp;
  readonly pfv: number;
  /** Controller PDU data alignment, dwords, 0's based. */
  readonly cpda: number;
  readonly hdgst: boolean;
  readonly ddgst: boolean;
  readonly maxh2cdata: number;
}

export interface TermReqPdu {
  readonly type: typeof PduType.H2CTermReq | typeof PduType.C2HTermReq;
  readonly fes: number;
  readonly fei: number;
  /** The offending header as the peer copied it (may be empty). */
  readonly header: Buffer;
}

export interface CapsuleCmdPdu {
  readonly type: typeof PduType.CapsuleCmd;
  /** The 64-byte SQE. */
  readonly sqe: Buffer;
  /** In-capsule data, or null when the PDU carries none. */
  readonly data: Buffer | null;
  /** The data digest did not match (data is untrustworthy; the PDU framing is fine). */
  readonly ddgstError: boolean;
}

export interface CapsuleRespPdu {
  readonly type: typeof PduType.CapsuleResp;
  /** The 16-byte CQE (decode with readCqe). */
  readonly cqe: Buffer;
}

export interface H2CDataPdu {
  readonly type: typeof PduType.H2CData;
  readonly flags: number;
  readonly cccid: number;
  readonly ttag: number;
  readonly datao: number;
  readonly datal: number;
  readonly data: Buffer;
  readonly ddgstError: boolean;
  /** The data already sits where the parser's DataSink said it should land (no copy). */
  readonly landed: boolean;
}

export interface C2HDataPdu {
  readonly type: typeof PduType.C2HData;
  readonly flags: number;
  readonly cccid: number;
  readonly datao: number;
  readonly datal: number;
  readonly data: Buffer;
  readonly ddgstError: boolean;
  /** The data already sits where the parser's DataSink said it should land (no copy). */
  readonly landed: boolean;
}

export interface R2TPdu {
  readonly type: typeof PduType.R2T;
  readonly cccid: number;
  readonly ttag: number;
  readonly r2to: number;
  readonly r2tl: number;
}

/** PDUs a controller (target) receives. */
export type H2CPdu = ICReqPdu | TermReqPdu | CapsuleCmdPdu | H2CDataPdu;
/** PDUs a host receives. */
export type C2HPdu = ICRespPdu | TermReqPdu | CapsuleRespPdu | C2HDataPdu | R2TPdu;
export type Pdu = H2CPdu | C2HPdu;

// ---- encoders ----

function writeCh(b: Buffer, type: number, flags: number, hlen: number, pdo: number, plen: number) {
  b[0] = type;
  b[1] = flags;
  b[2] = hlen;
  b[3] = pdo;
  b.writeUInt32LE(plen, 4);
}

/** Append HDGST after the hlen header bytes when enabled; returns the bytes used (hlen+hd). */
function sealHeader(b: Buffer, hlen: number, hdgst: boolean): number {
  if (!hdgst) return hlen;
  b.writeUInt32LE(crc32c(b.subarray(0, hlen)), hlen);
  return hlen + DIGEST_SIZE;
}

function encodeIc(type: number, pfv: number, align: number, dg: Digests, max: number): Buffer {
  const b = Buffer.alloc(HLEN_IC); // reserved bytes must be zero
  writeCh(b, type, 0, HLEN_IC, 0, HLEN_IC);
  b.writeUInt16LE(pfv, OFF_PFV);
  b[OFF_HPDA] = align;
  b[OFF_DGST] = (dg.hdgst ? 1 : 0) | (dg.ddgst ? 2 : 0);
  b.writeUInt32LE(max >>> 0, OFF_MAXR2T);
  return b;
}

export function encodeICReq(p: Omit<ICReqPdu, 'type' | 'pfv'> & { pfv?: number }): Buffer {
  return encodeIc(PduType.ICReq, p.pfv ?? 0, p.hpda, p, p.maxr2t);
}

export function encodeICResp(p: Omit<ICRespPdu, 'type' | 'pfv'> & { pfv?: number }): Buffer {
  return encodeIc(PduType.ICResp, p.pfv ?? 0, p.cpda, p, p.maxh2cdata);
}

/**
 * H2CTermReq or C2HTermReq. `header` is the offending PDU's header (any length; the
 * first 128 bytes are copied). TermReqs never carry digests.
 */
export function encodeTermReq(
  type: typeof PduType.H2CTermReq | typeof PduType.C2HTermReq,
  fes: number,
  fei: number,
  header?: Uint8Array,
): Buffer {
  const n = header ? Math.min(header.length, TERM_MAX_HEADER) : 0;
  const b = Buffer.alloc(HLEN_TERM + n);
  writeCh(b, type, 0, HLEN_TERM, 0, HLEN_TERM + n);
  b.writeUInt16LE(fes, 8);
  b.writeUInt32LE(fei >>> 0, 10);
  if (header && n > 0) b.set(header.subarray(0, n), HLEN_TERM);
  return b;
}

/** Where the data of a PDU with an `hlen`-byte header starts: header, HDGST, padding. */
function dataOffset(hlen: number, o: DataPduOptions): number {
  const align = o.align ?? 4;
  return Math.ceil((hlen + (o.hdgst ? DIGEST_SIZE : 0)) / align) * align;
}

/**
 * Header (+HDGST, +PAD) and room for DDGST of a data-carrying PDU, in one allocation.
 * The caller fills its type-specific fields, then calls finishData.
 */
function dataHead(type: number, flags: number, hlen: number, len: number, o: DataPduOptions) {
  const hd = o.hdgst ? DIGEST_SIZE : 0;
  const pdo = len > 0 ? dataOffset(hlen, o) : 0;
  const dd = len > 0 && o.ddgst ? DIGEST_SIZE : 0;
  const headLen = pdo > 0 ? pdo : hlen + hd;
  const b = Buffer.allocUnsafe(headLen + dd);
  b.fill(0, CH_SIZE, headLen); // reserved fields and padding go out as zero
  flags |= (hd ? PduFlag.HDGST : 0) | (dd ? PduFlag.DDGST : 0);
  writeCh(b, type, flags, hlen, pdo, headLen + len + dd);
  return b;
}

/** Seal the header digest, compute DDGST, and return the pieces to write. */
function finishData(b: Buffer, hlen: number, data: Buffer | null, o: DataPduOptions): Buffer[] {
  sealHeader(b, hlen, o.hdgst);
  if (!data || data.length === 0) return [b];
  const headLen = b[OFF_PDO]!;
  if (b.length === headLen) return [b, data];
  b.writeUInt32LE(crc32c(data), headLen);
  return [b.subarray(0, headLen), data, b.subarray(headLen)];
}

/** CapsuleCmd with optional in-capsule data (the caller sets the SQE's SGL to match). */
export function encodeCapsuleCmd(sqe: Buffer, data: Buffer | null, o: DataPduOptions): Buffer[] {
  const b = dataHead(PduType.CapsuleCmd, 0, HLEN_CMD, data ? data.length : 0, o);
  sqe.copy(b, CH_SIZE, 0, 64);
  return finishData(b, HLEN_CMD, data, o);
}

/** CapsuleResp carrying one CQE; status is the 15-bit value (shifted into place here). */
export function encodeCapsuleResp(cqe: Cqe, hdgst: boolean): Buffer {
  const b = Buffer.allocUnsafe(HLEN_RESP + (hdgst ? DIGEST_SIZE : 0));
  writeCh(b, PduType.CapsuleResp, hdgst ? PduFlag.HDGST : 0, HLEN_RESP, 0, b.length);
  writeCqe(b, 8, cqe);
  sealHeader(b, HLEN_RESP, hdgst);
  return b;
}

export interface DataPduFields {
  readonly cccid: number;
  readonly datao: number;
  /** Set LAST_PDU. */
  readonly last: boolean;
}

/** H2CData: `data` must be non-empty and at most the peer's MAXH2CDATA. */
export function encodeH2CData(
  f: DataPduFields & { readonly ttag: number },
  data: Buffer,
  o: DataPduOptions,
): Buffer[] {
  const b = dataHead(PduType.H2CData, f.last ? PduFlag.LAST_PDU : 0, HLEN_DATA, data.length, o);
  b.writeUInt16LE(f.cccid, OFF_CCCID);
  b.writeUInt16LE(f.ttag, OFF_TTAG);
  b.writeUInt32LE(f.datao, OFF_DATAO);
  b.writeUInt32LE(data.length, OFF_DATAL);
  return finishData(b, HLEN_DATA, data, o);
}

/** C2HData: `data` must be non-empty. `success` (with last) completes the command. */
export function encodeC2HData(
  f: DataPduFields & { readonly success?: boolean },
  data: Buffer,
  o: DataPduOptions,
): Buffer[] {
  const flags = (f.last ? PduFlag.LAST_PDU : 0) | (f.success ? PduFlag.SUCCESS : 0);
  const b = dataHead(PduType.C2HData, flags, HLEN_DATA, data.length, o);
  b.writeUInt16LE(f.cccid, OFF_CCCID);
  b.writeUInt32LE(f.datao, OFF_DATAO);
  b.writeUInt32LE(data.length, OFF_DATAL);
  return finishData(b, HLEN_DATA, data, o);
}

/**
 * Bytes in front of the data of a C2HData PDU with these options: the PDO (header,
 * HDGST, padding to the host's alignment). A reader that puts `len` bytes of data at
 * frame[c2hDataHeadroom(o)] of a frame of c2hDataFrameSize(len, o) bytes can have the
 * whole PDU written around it by frameC2HData, and send it as one buffer.
 */
export function c2hDataHeadroom(o: DataPduOptions): number {
  return dataOffset(HLEN_DATA, o);
}

export function c2hDataFrameSize(len: number, o: DataPduOptions): number {
  return c2hDataHeadroom(o) + len + (o.ddgst ? DIGEST_SIZE : 0);
}

/**
 * Writes a C2HData header (and DDGST) around data already in place in `frame` (see
 * c2hDataHeadroom); returns frame, which is then the whole PDU. The same bytes as
 * encodeC2HData, without a copy or a second buffer.
 */
export function frameC2HData(
  frame: Buffer,
  f: DataPduFields & { readonly success?: boolean },
  o: DataPduOptions,
): Buffer {
  const pdo = c2hDataHeadroom(o);
  const dd = o.ddgst ? DIGEST_SIZE : 0;
  const len = frame.length - pdo - dd;
  const flags =
    (f.last ? PduFlag.LAST_PDU : 0) |
    (f.success ? PduFlag.SUCCESS : 0) |
    (o.hdgst ? PduFlag.HDGST : 0) |
    (dd ? PduFlag.DDGST : 0);
  frame.fill(0, CH_SIZE, pdo); // reserved fields and padding go out as zero
  writeCh(frame, PduType.C2HData, flags, HLEN_DATA, pdo, frame.length);
  frame.writeUInt16LE(f.cccid, OFF_CCCID);
  frame.writeUInt32LE(f.datao, OFF_DATAO);
  frame.writeUInt32LE(len, OFF_DATAL);
  sealHeader(frame, HLEN_DATA, o.hdgst);
  if (dd) frame.writeUInt32LE(crc32c(frame.subarray(pdo, pdo + len)), pdo + len);
  return frame;
}

export function encodeR2T(f: Omit<R2TPdu, 'type'>, hdgst: boolean): Buffer {
  const b = Buffer.allocUnsafe(HLEN_R2T + (hdgst ? DIGEST_SIZE : 0));
  writeCh(b, PduType.R2T, hdgst ? PduFlag.HDGST : 0, HLEN_R2T, 0, b.length);
  b.writeUInt16LE(f.cccid, OFF_CCCID);
  b.writeUInt16LE(f.ttag, OFF_TTAG);
  b.writeUInt32LE(f.r2to, OFF_R2TO);
  b.writeUInt32LE(f.r2tl, OFF_R2TL);
  b.writeUInt32LE(0, 20);
  sealHeader(b, HLEN_R2T, hdgst);
  return b;
}
