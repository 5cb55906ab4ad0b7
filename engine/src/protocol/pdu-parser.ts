/**
 * Streaming NVMe/TCP PDU parser, in the shape of node-postgres' pg-protocol parser:
 * it keeps leftover bytes, loops while a whole PDU is present, and never touches a
 * socket. One parser per connection, for either role.
 *
 * Validation order for each PDU (errors carry the TermReq FES/FEI to send):
 *   common header (type for this role, IC sequence, hlen, digest flags)
 *   -> header digest -> pdo/plen bounds (max data size) -> type-specific fields
 *   -> data digest (a mismatch is reported on the PDU, not as a fatal error, because
 *      the spec completes such a command with Transient Transport Error).
 *
 * Ownership of views: every Buffer in a delivered PDU (sqe, cqe, data, header) is a
 * subarray of memory the parser never writes again: the caller's chunk when the PDU lay
 * inside it, or a buffer allocated for this PDU alone when it spanned chunks (the only
 * copy the parser makes). The receiver owns the views from delivery on, for as long as it
 * holds them; it must not write into them (they may share memory with neighbouring PDUs),
 * and holding a small view keeps the whole chunk alive. A caller that reads every chunk
 * into one buffer it reuses (the host's queues) gets views that are valid only until
 * onPdu returns, so it copies whatever it keeps longer, and says so (chunksReused):
 * what a hold keeps is then copied too, where it would be a view of the chunk.
 */
import { crc32c } from './crc32c.js';
import {
  CH_SIZE,
  DIGEST_SIZE,
  Fes,
  HLEN_CMD,
  HLEN_DATA,
  HLEN_IC,
  HLEN_R2T,
  HLEN_RESP,
  HLEN_TERM,
  OFF_CCCID,
  OFF_DATAL,
  OFF_DATAO,
  OFF_FLAGS,
  OFF_HLEN,
  OFF_PDO,
  OFF_PLEN,
  OFF_R2TL,
  OFF_R2TO,
  OFF_TTAG,
  OFF_TYPE,
  PduFlag,
  PduType,
  TERM_MAX_HEADER,
  type C2HPdu,
  type H2CPdu,
  type Pdu,
} from './pdu.js';

/** A framing or header error that ends the connection: send a TermReq with fes/fei. */
export class PduError extends Error {
  constructor(
    readonly fes: number,
    /** Byte offset of the bad field for FES 1 and 6; 0 otherwise. */
    readonly fei: number,
    /** Copy of the offending header (at most 128 bytes) for the TermReq. */
    readonly header: Buffer,
    message: string,
  ) {
    super(message);
    this.name = 'PduError';
  }
}

/** 'controller' parses what a host sends (target side); 'host' what a controller sends. */
export type PduRole = 'controller' | 'host';

export interface PduParserOptions {
  readonly role: PduRole;
  /** Largest data section (in-capsule or data PDU) accepted; larger → FES 5. */
  readonly maxDataLength: number;
  /**
   * Largest in-capsule data of a CapsuleCmd, when smaller than maxDataLength: a target
   * announces it (IOCCSZ*16-64) apart from MAXH2CDATA, and a capsule beyond it is FES 5
   * as soon as its header is in, before any of its data is gathered.
   */
  readonly maxCapsuleDataLength?: number;
  /**
   * The caller reads every chunk into one buffer it reuses: what a hold() keeps of a
   * chunk is copied (a hold is rare: the peer is not taking its answers).
   */
  readonly chunksReused?: boolean;
}

interface TypeRule {
  readonly hlen: number;
  /** Carries HDGST once negotiated (all but IC and TermReq). */
  readonly digests: boolean;
  /** May carry data (and then DDGST): 'no' | 'optional' | 'required'. */
  readonly data: 'no' | 'optional' | 'required';
}

const IC: TypeRule = { hlen: HLEN_IC, digests: false, data: 'no' };
const TERM: TypeRule = { hlen: HLEN_TERM, digests: false, data: 'no' };
const RULES: Record<PduRole, ReadonlyMap<number, TypeRule>> = {
  controller: new Map([
    [PduType.ICReq, IC],
    [PduType.H2CTermReq, TERM],
    [PduType.CapsuleCmd, { hlen: HLEN_CMD, digests: true, data: 'optional' }],
    [PduType.H2CData, { hlen: HLEN_DATA, digests: true, data: 'required' }],
  ]),
  host: new Map([
    [PduType.ICResp, IC],
    [PduType.C2HTermReq, TERM],
    [PduType.CapsuleResp, { hlen: HLEN_RESP, digests: true, data: 'no' }],
    [PduType.C2HData, { hlen: HLEN_DATA, digests: true, data: 'required' }],
    [PduType.R2T, { hlen: HLEN_R2T, digests: true, data: 'no' }],
  ]),
};

const LENGTHS_OK = -1;
const LIMIT_EXCEEDED = -2;

/**
 * The header of a data PDU (C2HData or H2CData) whose data has not arrived yet, as a
 * DataSink sees it. The fields are read from the header, which checked out; whether
 * they fit a command is the sink's business.
 */
export interface DataHeader {
  readonly type: number;
  readonly cccid: number;
  /** H2CData only (0 for C2HData). */
  readonly ttag: number;
  readonly datao: number;
  readonly datal: number;
}

/**
 * Where a data PDU's data should land when it spans received chunks: exactly
 * `datal` bytes, typically the command's own buffer at `datao`. The parser then
 * copies the data there as it arrives, instead of into a buffer of its own that the
 * consumer would copy once more, and the PDU it hands out carries that very buffer
 * as `data`. Null: the parser gathers the PDU itself, as without a sink. A
 * DataRefusal: the header can never fit a command (unknown command, data outside
 * its range), so the parser fails at once with that FES/FEI, before gathering up to
 * maxDataLength bytes only to throw them away. The bytes land before the PDU is
 * complete and checked, so the buffer must be one whose contents may be garbage if
 * the command fails.
 */
export type DataSink = (h: DataHeader) => Buffer | DataRefusal | null;

/** A DataSink's verdict that a data PDU's header is fatal: the TermReq's FES/FEI, and why. */
export interface DataRefusal {
  readonly fes: number;
  /** Byte offset of the bad field for FES 1; 0 otherwise. */
  readonly fei: number;
  readonly why: string;
}

/** A data PDU arriving straight into a sink's buffer: header, data, digest. */
interface SplitPdu {
  /** The PDU's first pdo bytes (header, header digest, padding). */
  readonly head: Buffer;
  readonly data: Buffer;
  /** The data digest's 4 bytes, when there is one. */
  readonly dgst: Buffer;
  readonly plen: number;
  /** Bytes of the PDU received so far. */
  got: number;
}

/** Room for the largest header plus its digest while a PDU's plen is not yet trusted. */
const HEAD_STAGE = HLEN_IC + DIGEST_SIZE;

/** Parser state of one connection. The parser itself has no other states than these. */
type ParserState =
  /** Waiting for the ICReq (controller) or ICResp (host). */
  | 'ic'
  /** IC exchange done: command and data PDUs flow. */
  | 'ready'
  /** A fatal error was reported or halt() was called: input is ignored. */
  | 'failed';

export class PduParser<T extends Pdu = Pdu> {
  private readonly rules: ReadonlyMap<number, TypeRule>;
  private readonly icType: number;
  private readonly maxData: number;
  private readonly maxCapsuleData: number;
  private readonly chunksReused: boolean;
  private state: ParserState = 'ic';
  private hdgst = false;
  private ddgst = false;
  /** A PDU that spans chunks: its bytes so far, and how many are needed next. */
  private acc: Buffer | null = null;
  private accLen = 0;
  private accNeed = 0;
  // What examine() learnt about the current PDU.
  private curHd = 0;
  private curDd = 0;
  private curPdo = 0;
  private headerChecked = false;
  /** examine() got through the whole header: the PDU's plen and layout are known. */
  private plenKnown = false;
  private sink: DataSink | null = null;
  private split: SplitPdu | null = null;
  /** hold() was called: parsing stops after the PDU being delivered. */
  private holdAsked = false;
  /** What a hold left of its chunk, parsed by resume(). */
  private held: Buffer | null = null;

  constructor(opts: PduParserOptions) {
    this.rules = RULES[opts.role];
    this.icType = opts.role === 'controller' ? PduType.ICReq : PduType.ICResp;
    this.maxData = opts.maxDataLength;
    this.maxCapsuleData = Math.min(opts.maxCapsuleDataLength ?? Infinity, opts.maxDataLength);
    this.chunksReused = opts.chunksReused ?? false;
  }

  /** Digests negotiated in the IC exchange; applies to the next PDU parsed. */
  setDigests(hdgst: boolean, ddgst: boolean): void {
    this.hdgst = hdgst;
    this.ddgst = ddgst;
  }

  /** See DataSink. */
  setDataSink(sink: DataSink | null): void {
    this.sink = sink;
  }

  /** Stop parsing (the connection is being torn down); later input is ignored. */
  halt(): void {
    this.state = 'failed';
    this.acc = null;
    this.split = null;
    this.held = null;
    this.holdAsked = false;
  }

  /**
   * Called from onPdu: parsing stops after this PDU and the rest of the chunk waits,
   * unparsed and uncopied, for resume() (a reader that must not take in more commands
   * until what it owes the peer has drained).
   */
  hold(): void {
    if (this.state !== 'failed') this.holdAsked = true;
  }

  /** A hold is in effect (asked, or with bytes waiting). */
  get holding(): boolean {
    return this.holdAsked || this.held !== null;
  }

  /** Ends a hold: parses what it kept (which may hold again). */
  resume(onPdu: (pdu: T) => void): PduError | null {
    this.holdAsked = false;
    const rest = this.held;
    this.held = null;
    return rest ? this.feed(rest, onPdu) : null;
  }

  /** True once an error was reported or halt() was called (onPdu may do so mid-chunk). */
  halted(): boolean {
    return this.state === 'failed';
  }

  /** Bytes held for a PDU that has not fully arrived. */
  get buffered(): number {
    return this.split ? this.split.got : this.acc ? this.accLen : 0;
  }

  /**
   * Parse a received chunk, calling onPdu for each whole PDU in order. Returns the fatal
   * error that stopped parsing, or null. onPdu may call setDigests() or halt(); it must
   * not throw. After an error every later feed returns null and does nothing.
   */
  feed(chunk: Buffer, onPdu: (pdu: T) => void): PduError | null {
    if (this.state === 'failed') return null;
    if (this.holdAsked) {
      // input that arrived during a hold queues behind what the hold kept
      if (this.held) this.held = Buffer.concat([this.held, chunk]);
      else this.held = this.chunksReused ? Buffer.from(chunk) : chunk;
      return null;
    }
    let off = 0;
    if (this.split) {
      const r = this.continueSplit(chunk, 0, onPdu);
      if (r === null || typeof r !== 'number') return r;
      off = r;
    } else if (this.acc) {
      const r = this.continueSpanning(chunk, onPdu);
      if (r === null || typeof r !== 'number') return r;
      off = r;
    }
    while (off < chunk.length && !this.halted()) {
      if (this.holdAsked) {
        const rest = chunk.subarray(off);
        this.held = this.chunksReused ? Buffer.from(rest) : rest;
        return null;
      }
      const avail = chunk.length - off;
      const need = this.examine(chunk, off, avail);
      if (typeof need !== 'number') return this.fail(need);
      if (need > avail) {
        const split = this.startSplit(chunk, off, avail);
        if (split instanceof PduError) return this.fail(split);
        if (!split) this.startSpanning(chunk, off, need);
        return null;
      }
      const err = this.deliver(chunk, off, need, onPdu);
      if (err) return this.fail(err);
      off += need;
    }
    return null;
  }

  /** Copy the tail of a chunk into a buffer of its own (sized to plen once it is known). */
  private startSpanning(chunk: Buffer, off: number, need: number): void {
    const avail = chunk.length - off;
    this.acc = Buffer.allocUnsafe(need > HEAD_STAGE ? need : HEAD_STAGE);
    chunk.copy(this.acc, 0, off);
    this.accLen = avail;
    this.accNeed = need;
  }

  /** Returns the offset in chunk where whole PDUs continue, null to wait, or an error. */
  private continueSpanning(chunk: Buffer, onPdu: (pdu: T) => void): number | PduError | null {
    let off = 0;
    for (;;) {
      const acc = this.acc!;
      const take = Math.min(this.accNeed - this.accLen, chunk.length - off);
      chunk.copy(acc, this.accLen, off, off + take);
      this.accLen += take;
      off += take;
      if (this.accLen < this.accNeed) return null;
      const need = this.examine(acc, 0, this.accLen);
      if (typeof need !== 'number') return this.fail(need);
      if (need > this.accLen) {
        const split = this.startSplit(acc, 0, this.accLen);
        if (split instanceof PduError) return this.fail(split);
        if (split) {
          this.acc = null;
          return this.continueSplit(chunk, off, onPdu);
        }
        if (need > acc.length) {
          const grown = Buffer.allocUnsafe(need);
          acc.copy(grown, 0, 0, this.accLen);
          this.acc = grown;
        }
        this.accNeed = need;
        continue;
      }
      this.acc = null;
      const err = this.deliver(acc, 0, need, onPdu);
      return err ? this.fail(err) : off;
    }
  }

  /**
   * A data PDU whose header checked out (buf[o..o+avail) is its start) and whose rest
   * is still to come: if the sink gives a buffer for its data, the PDU continues as a
   * SplitPdu and true is returned; if the header can never fit (see DataSink), the error.
   */
  private startSplit(buf: Buffer, o: number, avail: number): boolean | PduError {
    if (!this.sink || !this.plenKnown || this.curPdo === 0) return false;
    const type = buf[o + OFF_TYPE]!;
    if (type !== PduType.C2HData && type !== PduType.H2CData) return false;
    const plen = buf.readUInt32LE(o + OFF_PLEN);
    const datal = plen - this.curPdo - this.curDd;
    if (buf.readUInt32LE(o + OFF_DATAL) !== datal) {
      // decodeData would say so once all of plen arrived: say it before gathering any
      const what = `datal ${buf.readUInt32LE(o + OFF_DATAL)}, plen ${plen}`;
      return headerError(buf, o, avail, Fes.INVALID_HEADER_FIELD, OFF_DATAL, what);
    }
    const data = this.sink({
      type,
      cccid: buf.readUInt16LE(o + OFF_CCCID),
      ttag: type === PduType.H2CData ? buf.readUInt16LE(o + OFF_TTAG) : 0,
      datao: buf.readUInt32LE(o + OFF_DATAO),
      datal,
    });
    if (data && !Buffer.isBuffer(data)) {
      return headerError(buf, o, avail, data.fes, data.fei, data.why);
    }
    if (!data || data.length !== datal || datal === 0) return false;
    const split: SplitPdu = {
      head: Buffer.allocUnsafe(this.curPdo),
      data,
      dgst: Buffer.allocUnsafe(this.curDd),
      plen,
      got: 0,
    };
    this.split = split;
    this.take(buf, o, avail);
    return true;
  }

  /** Routes the next n bytes of the split PDU from src[at..) to head, data and digest. */
  private take(src: Buffer, at: number, n: number): void {
    const sp = this.split!;
    const pdo = sp.head.length;
    const dataEnd = pdo + sp.data.length;
    let pos = sp.got;
    const end = pos + n;
    if (pos < pdo) {
      const k = Math.min(pdo, end) - pos;
      src.copy(sp.head, pos, at, at + k);
      at += k;
      pos += k;
    }
    if (pos < dataEnd && pos < end) {
      const k = Math.min(dataEnd, end) - pos;
      src.copy(sp.data, pos - pdo, at, at + k);
      at += k;
      pos += k;
    }
    if (pos < end) src.copy(sp.dgst, pos - dataEnd, at, at + (end - pos));
    sp.got = end;
  }

  /**
   * Feeds chunk[off..) to the split PDU; once it is whole, hands it out. Returns where
   * the next PDU starts in chunk, null to wait for more, or an error.
   */
  private continueSplit(
    chunk: Buffer,
    off: number,
    onPdu: (pdu: T) => void,
  ): number | PduError | null {
    const sp = this.split!;
    const n = Math.min(sp.plen - sp.got, chunk.length - off);
    this.take(chunk, off, n);
    if (sp.got < sp.plen) return null;
    this.split = null;
    this.headerChecked = false;
    const ddgstError = sp.dgst.length !== 0 && crc32c(sp.data) !== sp.dgst.readUInt32LE(0);
    const pdu = decodeData(sp.head, 0, sp.data, ddgstError, true);
    if (pdu instanceof PduError) return this.fail(pdu);
    onPdu(pdu as T);
    return off + n;
  }

  private fail(err: PduError): PduError {
    this.state = 'failed';
    this.acc = null;
    this.split = null;
    return err;
  }

  /**
   * Validate as much of the PDU at buf[o..o+avail) as is present. Returns the number of
   * bytes needed to go further (the whole PDU's plen once the header checked out).
   */
  private examine(buf: Buffer, o: number, avail: number): number | PduError {
    this.plenKnown = false;
    if (avail < CH_SIZE) return CH_SIZE;
    const type = buf[o + OFF_TYPE]!;
    const flags = buf[o + OFF_FLAGS]!;
    const hlen = buf[o + OFF_HLEN]!;
    const pdo = buf[o + OFF_PDO]!;
    const rule = this.rules.get(type);
    if (!rule) return headerError(buf, o, avail, Fes.INVALID_HEADER_FIELD, OFF_TYPE, 'type');
    const isIc = type === this.icType;
    if (this.state === 'ic' ? !isIc && rule !== TERM : isIc) {
      const what = isIc ? 'repeated IC PDU' : 'PDU before IC exchange';
      return headerError(buf, o, avail, Fes.PDU_SEQUENCE_ERROR, 0, what);
    }
    if (hlen !== rule.hlen) {
      return headerError(buf, o, avail, Fes.INVALID_HEADER_FIELD, OFF_HLEN, 'hlen');
    }
    const hd = rule.digests && this.hdgst ? DIGEST_SIZE : 0;
    const dd = rule.data !== 'no' && this.ddgst && pdo !== 0 ? DIGEST_SIZE : 0;
    const want = (hd ? PduFlag.HDGST : 0) | (dd ? PduFlag.DDGST : 0);
    if ((flags & (PduFlag.HDGST | PduFlag.DDGST)) !== want) {
      return headerError(buf, o, avail, Fes.INVALID_HEADER_FIELD, OFF_FLAGS, 'digest flags');
    }
    if (avail < hlen + hd) return hlen + hd;
    if (hd && !this.headerChecked) {
      if (crc32c(buf.subarray(o, o + hlen)) !== buf.readUInt32LE(o + hlen)) {
        return headerError(buf, o, avail, Fes.HEADER_DIGEST_ERROR, 0, 'header digest mismatch');
      }
      this.headerChecked = true;
    }
    const plen = buf.readUInt32LE(o + OFF_PLEN);
    const max = type === PduType.CapsuleCmd ? this.maxCapsuleData : this.maxData;
    const fei = this.checkLengths(rule, pdo, plen, hlen + hd, dd, max);
    if (fei >= 0) {
      return headerError(buf, o, avail, Fes.INVALID_HEADER_FIELD, fei, `pdo ${pdo} plen ${plen}`);
    }
    if (fei === LIMIT_EXCEEDED) {
      return headerError(buf, o, avail, Fes.DATA_LIMIT_EXCEEDED, 0, `plen ${plen} too large`);
    }
    this.curHd = hd;
    this.curDd = dd;
    this.curPdo = pdo;
    this.plenKnown = true;
    return plen;
  }

  /** pdo/plen consistency: the offset of the bad field, LIMIT_EXCEEDED, or LENGTHS_OK. */
  private checkLengths(
    r: TypeRule,
    pdo: number,
    plen: number,
    head: number,
    dd: number,
    max: number,
  ): number {
    if (r === TERM) {
      // The PDO of a TermReq is used by no one; tolerate what the peer put there.
      return plen < HLEN_TERM || plen > HLEN_TERM + TERM_MAX_HEADER ? OFF_PLEN : LENGTHS_OK;
    }
    if (pdo === 0) {
      if (r.data === 'required') return OFF_PDO;
      return plen !== head ? OFF_PLEN : LENGTHS_OK;
    }
    if (r.data === 'no' || pdo < head) return OFF_PDO;
    if (plen < pdo + dd) return OFF_PLEN;
    return plen - pdo - dd > max ? LIMIT_EXCEEDED : LENGTHS_OK;
  }

  /** Decode the whole PDU at buf[o..o+plen) and hand it out. */
  private deliver(buf: Buffer, o: number, plen: number, onPdu: (pdu: T) => void): PduError | null {
    this.headerChecked = false;
    const pdu = this.decode(buf, o, plen);
    if (pdu instanceof PduError) return pdu;
    if (pdu.type === this.icType) this.state = 'ready';
    onPdu(pdu as T);
    return null;
  }

  private decode(b: Buffer, o: number, plen: number): Pdu | PduError {
    const type = b[o]!;
    const dataStart = o + this.curPdo;
    const dataEnd = o + plen - this.curDd;
    const hasData = this.curPdo !== 0;
    const ddgstError =
      this.curDd !== 0 && crc32c(b.subarray(dataStart, dataEnd)) !== b.readUInt32LE(dataEnd);
    switch (type) {
      case PduType.ICReq:
      case PduType.ICResp:
        return decodeIc(b, o);
      case PduType.H2CTermReq:
      case PduType.C2HTermReq:
        return {
          type,
          fes: b.readUInt16LE(o + 8),
          fei: b.readUInt32LE(o + 10),
          header: b.subarray(o + HLEN_TERM, o + plen),
        };
      case PduType.CapsuleCmd:
        return {
          type,
          sqe: b.subarray(o + CH_SIZE, o + HLEN_CMD),
          data: hasData ? b.subarray(dataStart, dataEnd) : null,
          ddgstError,
        };
      case PduType.CapsuleResp:
        return { type, cqe: b.subarray(o + CH_SIZE, o + HLEN_RESP) };
      case PduType.H2CData:
      case PduType.C2HData:
        return decodeData(b, o, b.subarray(dataStart, dataEnd), ddgstError, false);
      default:
        return decodeR2T(b, o);
    }
  }
}

function decodeIc(b: Buffer, o: number): Pdu {
  const dgst = b[o + 11]!;
  const common = {
    pfv: b.readUInt16LE(o + 8),
    hdgst: (dgst & 1) !== 0,
    ddgst: (dgst & 2) !== 0,
  };
  if (b[o] === PduType.ICReq) {
    return { type: PduType.ICReq, ...common, hpda: b[o + 10]!, maxr2t: b.readUInt32LE(o + 12) };
  }
  return { type: PduType.ICResp, ...common, cpda: b[o + 10]!, maxh2cdata: b.readUInt32LE(o + 12) };
}

/** A data PDU from its header at b[o..) and its data (wherever that landed). */
/** landed: data is the buffer a DataSink gave for it (a split PDU), already in place. */
function decodeData(b: Buffer, o: number, data: Buffer, ddgstError: boolean, landed: boolean) {
  const flags = b[o + OFF_FLAGS]!;
  const datal = b.readUInt32LE(o + OFF_DATAL);
  const avail = b.length - o; // for the TermReq's copy of the header
  if (datal !== data.length || datal === 0) {
    return headerError(b, o, avail, Fes.INVALID_HEADER_FIELD, OFF_DATAL, `datal ${datal}`);
  }
  const cccid = b.readUInt16LE(o + OFF_CCCID);
  const datao = b.readUInt32LE(o + OFF_DATAO);
  if (b[o] === PduType.H2CData) {
    const ttag = b.readUInt16LE(o + OFF_TTAG);
    const type = PduType.H2CData;
    return { type, flags, cccid, ttag, datao, datal, data, ddgstError, landed } as const;
  }
  if (flags & PduFlag.SUCCESS && !(flags & PduFlag.LAST_PDU)) {
    return headerError(b, o, avail, Fes.INVALID_HEADER_FIELD, OFF_FLAGS, 'SUCCESS without LAST');
  }
  return { type: PduType.C2HData, flags, cccid, datao, datal, data, ddgstError, landed } as const;
}

function decodeR2T(b: Buffer, o: number): Pdu | PduError {
  const r2tl = b.readUInt32LE(o + OFF_R2TL);
  if (r2tl === 0) return headerError(b, o, HLEN_R2T, Fes.INVALID_HEADER_FIELD, OFF_R2TL, 'r2tl 0');
  return {
    type: PduType.R2T,
    cccid: b.readUInt16LE(o + OFF_CCCID),
    ttag: b.readUInt16LE(o + OFF_TTAG),
    r2to: b.readUInt32LE(o + OFF_R2TO),
    r2tl,
  };
}

/** A fatal header error, with a copy of the header for the TermReq. */
function headerError(b: Buffer, o: number, avail: number, fes: number, fei: number, what: string) {
  const hlen = b[o + OFF_HLEN]!;
  return new PduError(fes, fei, copyHeader(b, o, avail, hlen), `PDU type ${b[o]}: ${what}`);
}

/** Copy of the offending header for a TermReq: hlen bytes at most 128, as far as present. */
function copyHeader(b: Buffer, o: number, avail: number, hlen: number): Buffer {
  const n = Math.min(avail, b.length - o, Math.max(hlen, CH_SIZE), TERM_MAX_HEADER);
  return Buffer.from(b.subarray(o, o + n));
}

/**
 * Parser for the target side (accepts ICReq, H2CTermReq, CapsuleCmd, H2CData):
 * H2CData up to maxDataLength (MAXH2CDATA), in-capsule data up to maxCapsuleDataLength.
 */
export function controllerParser(
  maxDataLength: number,
  maxCapsuleDataLength?: number,
  chunksReused = false,
): PduParser<H2CPdu> {
  return new PduParser<H2CPdu>({
    role: 'controller',
    maxDataLength,
    maxCapsuleDataLength,
    chunksReused,
  });
}

/** Parser for the host side (accepts ICResp, C2HTermReq, CapsuleResp, C2HData, R2T). */
export function hostParser(maxDataLength: number): PduParser<C2HPdu> {
  return new PduParser<C2HPdu>({ role: 'host', maxDataLength });
}
