/**
 * One command in flight on a TCP queue, and the transport's own checks of a CapsuleCmd
 * (PSDT, fused bits, the SGL descriptor against the in-capsule data), after nvmet's
 * nvmet_tcp_map_data and nvmet_req_init (facts §1.6).
 */
import type { Completion, DataDirection, ParseResult } from '../../core/seam.js';
import {
  PSDT_SGL,
  SGL_DATA_BLOCK_OFFSET,
  SGL_TRANSPORT_DATA_BLOCK,
  sglAddress,
  sglLength,
  sglType,
  sqeFuse,
  sqePsdt,
} from '../../protocol/pdu-capsule.js';
import { DNR, SC } from '../../protocol/status.js';

type Exec = Extract<ParseResult, { kind: 'exec' }>['exec'];

/** Where a queue sends a finished command. */
export interface CommandSink {
  complete(cmd: TcpCommand, status: number, dw0: number, dw1: number, data?: Buffer): void;
}

const FABRICS_OPCODE = 0x7f;
const FCTYPE_CONNECT = 0x01;

/**
 * Whether the command moves data host to controller, by its opcode's bit 0 (fabrics
 * commands: their fctype's), as nvmet's nvme_is_write decides it.
 */
function isWrite(sqe: Buffer): boolean {
  return ((sqe[0] === FABRICS_OPCODE ? sqe[4]! : sqe[0]!) & 1) === 1;
}

export class TcpCommand {
  readonly cid: number;
  readonly sglLength: number;
  /** Connect's QID, so the CQE can carry the SQID once Connect succeeds; else -1. */
  readonly connectQid: number;
  /** Connect's CATTR (SQE byte 46), read when it succeeds; 0 for other commands. */
  readonly connectCattr: number;
  dir: DataDirection = 'none';
  length = 0;
  exec: Exec | null = null;
  /** ParseResult's unused: the command ends without exec. */
  unused: (() => void) | null = null;
  /** R2T transfer: TTAG, bytes received so far, end of the current R2T window. */
  ttag = -1;
  received = 0;
  r2tEnd = 0;
  /**
   * Gathered write data: a view of the one H2CData PDU that held it all, or a copy, or
   * (pooled) the queue's buffer the parser put the data in as it arrived.
   */
  buf: Buffer | null = null;
  /** buf belongs to the queue's pool: it goes back when the command completes. */
  pooled = false;
  /** A data digest failed in some H2CData of this command. */
  dataError = false;
  /**
   * Reads: a whole C2HData PDU's worth of memory, and `into`, the part of it where the
   * data goes (see frameC2HData). Null when the read is sent the general way.
   */
  frame: Buffer | null = null;
  into: Buffer | null = null;
  /** A read counted in its queue's READ_BUDGET from execution until it completes. */
  budgeted = false;
  private finished = false;

  /** The Completion handed to the core; later calls after the first are ignored. */
  readonly done: Completion = (status, dw0, dw1, readData) => {
    if (this.finished) return;
    this.finished = true;
    this.sink.complete(this, status, dw0 ?? 0, dw1 ?? 0, readData);
  };

  /**
   * sqe is a view into a received chunk: the command reads what it needs and keeps no
   * reference. The chunk's memory takes the next read (TcpQueue's RX); where Node gave
   * a fresh chunk instead, a command the peer can hold for ever (an AER; a write or
   * read waiting for its turn) would pin all of it, unseen by PeerMemoryGuard.
   */
  constructor(
    private readonly sink: CommandSink,
    sqe: Buffer,
  ) {
    this.cid = sqe.readUInt16LE(2);
    this.sglLength = sglLength(sqe);
    const isConnect = sqe[0] === FABRICS_OPCODE && sqe[4] === FCTYPE_CONNECT;
    this.connectQid = isConnect ? sqe.readUInt16LE(42) : -1;
    this.connectCattr = isConnect ? sqe[46]! : 0;
  }

  prepare(dir: DataDirection, length: number, exec: Exec, unused?: () => void): void {
    this.dir = dir;
    this.length = length;
    this.exec = exec;
    this.unused = unused ?? null;
  }

  /**
   * Take one H2CData payload at datao (already checked to be the next bytes); landed:
   * the parser's DataSink put it in this.buf already.
   */
  accept(data: Buffer, datao: number, ddgstError: boolean, landed: boolean): void {
    if (ddgstError) this.dataError = true;
    if (landed) {
      // already in place: the parser's DataSink put it there
    } else if (datao === 0 && data.length === this.length && !this.pooled) {
      this.buf = data; // the whole write in one PDU: no copy
    } else {
      this.buf ??= Buffer.allocUnsafe(this.length);
      data.copy(this.buf, datao);
    }
    this.received = datao + data.length;
  }
}

/**
 * Transport-level checks of a CapsuleCmd before the core sees it; returns an NVMe status
 * to complete with, or 0. data is the in-capsule data (null when the PDU has none);
 * inCapsuleBytes, how much of it the queue accepts.
 */
export function validateCapsule(sqe: Buffer, data: Buffer | null, inCapsuleBytes: number): number {
  if (sqePsdt(sqe) !== PSDT_SGL || sqeFuse(sqe) !== 0) return SC.INVALID_FIELD | DNR;
  const type = sglType(sqe);
  const len = sglLength(sqe);
  if (type === SGL_TRANSPORT_DATA_BLOCK) return data ? SC.INVALID_FIELD | DNR : 0;
  if (type !== SGL_DATA_BLOCK_OFFSET) return SC.SGL_INVALID_TYPE | DNR;
  // In-capsule data only goes host to controller: a read, Flush or Write Zeroes naming
  // some is refused as nvmet_tcp_map_data does (Invalid Field), data or none with it.
  if (len > 0 && !isWrite(sqe)) return SC.INVALID_FIELD | DNR;
  // In-capsule: the offset is ICDOFF (0) and the data must be exactly what the SGL says.
  if (sglAddress(sqe) !== 0 || len > inCapsuleBytes) return SC.SGL_INVALID_OFFSET | DNR;
  if ((data ? data.length : 0) !== len) return SC.SGL_INVALID_DATA_LEN | DNR;
  return 0;
}
