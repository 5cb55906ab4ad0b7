/**
 * One NVMe/TCP queue = one TCP connection, target side (facts §1, §9).
 *
 * The queue frames PDUs with the protocol codec, runs the IC exchange, turns each
 * CapsuleCmd into CoreQueue.parse/exec calls, moves the data (in-capsule, R2T/H2CData,
 * C2HData), and writes CapsuleResps. Protocol violations end the connection with a
 * C2HTermReq; nothing thrown by the codec, the core or the socket escapes a callback.
 */
import type { Socket } from 'node:net';
import type {
  CoreQueue,
  CoreTarget,
  ParseResult,
  PortInfo,
  QueueOwner,
  TransportQueue,
} from '../../core/seam.js';
import {
  c2hDataFrameSize,
  c2hDataHeadroom,
  encodeC2HData,
  frameC2HData,
  encodeH2CData,
  encodeICReq,
  encodeCapsuleResp,
  encodeICResp,
  encodeR2T,
  encodeTermReq,
  Fes,
  NO_DIGESTS,
  OFF_CCCID,
  OFF_FLAGS,
  OFF_HPDA,
  OFF_PFV,
  OFF_TTAG,
  PduFlag,
  PduType,
  type CapsuleCmdPdu,
  type DataPduOptions,
  type H2CDataPdu,
  type H2CPdu,
  type ICReqPdu,
} from '../../protocol/pdu.js';
import { ADMIN } from '../../protocol/opcodes.js';
import {
  controllerParser,
  type DataHeader,
  type DataRefusal,
  type PduError,
  type PduParser,
} from '../../protocol/pdu-parser.js';
import { CATTR_DISABLE_SQFLOW } from '../../protocol/sqe.js';
import { DNR, SC } from '../../protocol/status.js';
import { MAX_C2H_DATA, MAXH2CDATA, MIN_IN_CAPSULE_DATA_SIZE } from '../../protocol/tcp-limits.js';
import type { Logger } from '../../util/log.js';
import { RecycledBuffers } from '../../util/read-buffers.js';
import { SHARED_RX, readInto } from '../../util/socket-input.js';
import { TcpCommand, validateCapsule, type CommandSink } from './command.js';
import { PduWriter } from './writer.js';
import {
  FRAME_POOL_BYTES,
  IC_TIMEOUT_MS,
  LINGER_MS,
  MAX_ACTIVE_R2T,
  PRE_CONNECT_QUEUE_DEPTH,
  R2T_BUDGET,
  READ_BUDGET,
  TX_HOLD_BYTES,
} from './limits.js';
import {
  bytesTaken,
  processPeerMemory,
  type GuardedConnection,
  type PeerMemoryGuard,
} from './peer-memory.js';

/** States of a connection. */
export type TcpQueueState =
  /** Connected; only an ICReq (or H2CTermReq) is acceptable, within IC_TIMEOUT_MS. */
  | 'ic-wait'
  /** ICResp sent and the core holds a CoreQueue: commands flow. */
  | 'live'
  /** Fatal error or close(): pending output is flushed, input ignored, FIN sent. */
  | 'closing'
  /** The socket is gone. Completions that still arrive are dropped. */
  | 'closed';

const LEGAL: Record<TcpQueueState, readonly TcpQueueState[]> = {
  'ic-wait': ['live', 'closing', 'closed'],
  live: ['closing', 'closed'],
  closing: ['closed'],
  closed: [],
};

/** Tunables; defaults in limits.ts and protocol/tcp-limits.ts. Tests shrink them. */
export interface TcpQueueOptions {
  /** ICReq after the connection opens, and then Connect after ICResp, within this. */
  readonly icTimeoutMs?: number;
  /** Largest R2TL per R2T; a longer write gets several R2Ts in turn. Default: no limit. */
  readonly maxR2tLength?: number;
  readonly maxActiveR2t?: number;
  readonly r2tBudget?: number;
  readonly readBudget?: number;
  readonly lingerMs?: number;
  /** The process-wide bound on what connections hold (default: processPeerMemory). */
  readonly memory?: PeerMemoryGuard;
}

/** A snapshot for metrics and tests. */
export interface TcpQueueInfo {
  readonly state: TcpQueueState;
  readonly peer: string;
  readonly outstanding: number;
  readonly queueSize: number;
  readonly r2tActive: number;
  readonly r2tWaiting: number;
  /** Bytes of reads the backend is running, and reads waiting for READ_BUDGET. */
  readonly readBytes: number;
  readonly readWaiting: number;
  readonly readingPaused: boolean;
  readonly writableLength: number;
  readonly rxBuffered: number;
  /** Bytes read from the socket so far. */
  readonly rxBytes: number;
  /** Chunks are read into the target's own reused buffer (false: Node's fresh one per read). */
  readonly rxReused: boolean;
  /** What the connection holds for its peer (PeerMemoryGuard's measure). */
  readonly heldBytes: number;
}

/** SQHD in every completion once SQ flow control is disabled (no head to report). */
const SQHD_NO_FLOW_CONTROL = 0xffff;

export class TcpQueue implements TransportQueue, CommandSink, GuardedConnection {
  private state: TcpQueueState = 'ic-wait';
  private readonly socket: Socket;
  /**
   * Chunks are read into SHARED_RX (false: Node's fresh buffer per read; see readInto):
   * each is parsed, and what outlives it copied out, before the next read. Copied:
   * in-capsule write data and H2CData into the connection's writeData pool, what a
   * parser hold keeps; the core decodes a command's SQE during parse() (the seam).
   */
  private readonly rxReused: boolean;
  /**
   * In-capsule data this queue accepts: what the core announces as IOCCSZ, and at least
   * the admin data the Linux host sends in-capsule whatever IOCCSZ says.
   */
  private readonly inCapsuleBytes: number;
  /**
   * In-capsule data beyond inCapsuleBytes is a fatal error (TermReq FES 5; nvmet, too,
   * ends the connection for it), said once the header is in, before any of it is
   * gathered: its SGL would be refused anyway, and a peer must not make a connection
   * buffer 128 KiB capsules where 16 KiB is the bound.
   */
  private readonly parser: PduParser<H2CPdu>;
  private readonly writer: PduWriter;
  private core: CoreQueue | null = null;
  /** Digests and C2H data alignment negotiated by the IC exchange. */
  private dg: DataPduOptions = NO_DIGESTS;
  private queueSize = PRE_CONNECT_QUEUE_DEPTH;
  private outstanding = 0;
  /** Set by drain(): refuse new commands. */
  private draining = false;
  /** drain()'s resolver, called when the last outstanding command completes. */
  private drained: (() => void) | null = null;
  private sqhd = 0;
  private sqid = 0;
  /**
   * The host disabled SQ flow control at Connect (CATTR bit 2): a successful read then
   * ends with a C2HData carrying SUCCESS instead of a CapsuleResp, as nvmet does.
   */
  private sqFlowDisabled = false;
  /** Memory for reads framed in place (one C2HData PDU per read), reused once sent. */
  private readonly frames = new RecycledBuffers(FRAME_POOL_BYTES);
  /**
   * Memory for write data sent by R2T/H2CData: the parser puts it there as it arrives
   * (dataSink), and it is reused once the command completed, when the backend no longer
   * holds it (the BlockBackend contract).
   */
  private readonly writeData = new RecycledBuffers(FRAME_POOL_BYTES);
  /** Commands holding an R2T, by TTAG; and those waiting for one, in arrival order. */
  private readonly r2tActive = new Map<number, TcpCommand>();
  private readonly r2tWaiting: TcpCommand[] = [];
  private r2tBytes = 0;
  private nextTtag = 0;
  /** Reads waiting for READ_BUDGET, in arrival order; bytes of those running. */
  private readonly readWaiting: TcpCommand[] = [];
  private readBytes = 0;
  private readingPaused = false;
  /** Since when (performance.now()) the peer took none of the answers owed past the high
   * water mark, as the guard's checks saw it (0: nothing owed), and how many bytes it
   * had taken then. */
  private txSince = 0;
  private txMark = 0;
  /** The same for the write data of active R2Ts: since when none arrived, and the mark. */
  private rxSince = 0;
  private rxMark = 0;
  /** H2CData payload bytes received in whole PDUs (the R2T stall's measure). */
  private h2cBytes = 0;
  /** The same for a PDU begun and not finished (no R2T held): since when no byte came,
   * and the socket's bytesRead then. */
  private pduSince = 0;
  private pduMark = 0;
  private readonly guard: PeerMemoryGuard;
  private timer: NodeJS.Timeout | null = null;
  private readonly onPdu = (pdu: H2CPdu): void => this.dispatch(pdu);
  private readonly pumpSoon = (): void => this.pumpReads();

  /** Told of each successful Connect (owner() is set by then): the listener's accounting. */
  onConnected: (() => void) | null = null;
  /** Told once the connection's socket has closed. */
  onClosed: (() => void) | null = null;

  /**
   * @param accepted a socket from a server with `pauseOnConnect: true`; the queue reads
   *   it through another socket object (readInto), so `accepted` emits nothing more: the
   *   caller learns of the close from onClosed.
   */
  constructor(
    accepted: Socket,
    readonly port: PortInfo,
    readonly peer: string,
    private readonly target: CoreTarget,
    private readonly log: Logger,
    private readonly opts: TcpQueueOptions = {},
  ) {
    const input = readInto(accepted, SHARED_RX, (chunk) => this.onData(chunk));
    const socket = (this.socket = input.socket);
    this.rxReused = input.reused;
    try {
      this.writer = new PduWriter(socket, () => this.pauseReading(), this.frames);
      this.inCapsuleBytes = Math.max(target.inCapsuleBytes, MIN_IN_CAPSULE_DATA_SIZE);
      this.parser = controllerParser(MAXH2CDATA, this.inCapsuleBytes, input.reused);
      this.parser.setDataSink(this.dataSink);
      socket.on('drain', () => {
        this.pumpReads();
        this.resumeReading();
      });
      socket.on('error', (err) => this.log.debug('socket error', { peer, err }));
      socket.on('close', () => this.onClose());
      this.timer = setTimeout(
        () => this.close('no ICReq in time'),
        opts.icTimeoutMs ?? IC_TIMEOUT_MS,
      );
      this.timer.unref();
      this.guard = opts.memory ?? processPeerMemory;
      this.guard.join(this, log);
    } catch (err) {
      // The connection is this socket's now: the caller's destroy() of `accepted`, on
      // this error, would close nothing.
      if (this.timer) clearTimeout(this.timer);
      socket.destroy();
      throw err;
    }
  }

  // ---- GuardedConnection ----

  heldBytes(): number {
    return this.readBytes + this.r2tBytes + this.socket.writableLength + this.parser.buffered;
  }

  /**
   * Since when the peer has made no progress on what it owes: taking the answers queued
   * past the high water mark, sending the data of an R2T it was given, or finishing a
   * PDU it began.
   * Progress is bytes, not events: 'drain' comes only once everything queued has gone,
   * which a peer reading slowly from a deep queue may not reach for minutes.
   */
  stalledSince(now: number): number {
    const s = this.socket;
    if (!s.writableNeedDrain) this.txSince = 0;
    else {
      const taken = bytesTaken(s);
      if (this.txSince === 0 || taken !== this.txMark) [this.txSince, this.txMark] = [now, taken];
    }
    if (this.r2tActive.size === 0) this.rxSince = 0;
    else {
      // The highest mark counts: a partial PDU that keeps being restarted is no progress.
      // While we do not read (its answers past the high water mark) no data shows up and
      // the clock runs on: stopped or restarted then, a peer could keep its windows for
      // ever by leaving its answers unread now and then.
      const got = this.h2cBytes + this.parser.buffered;
      if (this.rxSince === 0 || got > this.rxMark) [this.rxSince, this.rxMark] = [now, got];
    }
    // A PDU begun and left unfinished holds its bytes (up to 128 KiB) for as long as the
    // peer likes: no command completes, so nothing else ever times it out (a discovery
    // controller, open to any host, may ask for a KATO of 49 days). Every byte read then
    // continues that PDU, so bytes read are its progress.
    if (this.r2tActive.size > 0 || this.parser.buffered === 0) this.pduSince = 0;
    else {
      const got = s.bytesRead;
      if (this.pduSince === 0 || got !== this.pduMark) [this.pduSince, this.pduMark] = [now, got];
    }
    let since = 0;
    for (const t of [this.txSince, this.rxSince, this.pduSince])
      if (t !== 0 && (since === 0 || t < since)) since = t;
    return since;
  }

  ease(): void {
    this.pumpReads();
    this.pumpR2T();
  }

  shed(reason: string): void {
    this.close(reason);
  }

  owner(): QueueOwner | null {
    return this.core?.owner() ?? null;
  }

  // ---- TransportQueue ----

  setQueueSize(entries: number): void {
    if (Number.isInteger(entries) && entries >= 1) this.queueSize = entries;
    this.onConnected?.();
    // Connected: the controller's keep-alive bounds the connection from now on.
    if (this.timer && this.state === 'live') {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /**
   * Graceful stop, first half: new commands are refused with ANA Transition (no DNR, so
   * a host retries them on another path or after reconnecting); commands already taken
   * run to completion. Resolves once none is outstanding or the queue left 'live'.
   */
  drain(): Promise<void> {
    this.draining = true;
    if (this.state !== 'live' || this.outstanding === 0) return Promise.resolve();
    return new Promise((resolve) => (this.drained = resolve));
  }

  close(reason: string): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.log.info('closing queue', { peer: this.peer, reason });
    this.transition('closing');
  }

  info(): TcpQueueInfo {
    return {
      state: this.state,
      peer: this.peer,
      outstanding: this.outstanding,
      queueSize: this.queueSize,
      r2tActive: this.r2tActive.size,
      r2tWaiting: this.r2tWaiting.length,
      readBytes: this.readBytes,
      readWaiting: this.readWaiting.length,
      readingPaused: this.readingPaused,
      writableLength: this.socket.writableLength,
      rxBuffered: this.parser.buffered,
      rxBytes: this.socket.bytesRead,
      rxReused: this.rxReused,
      heldBytes: this.heldBytes(),
    };
  }

  // ---- states ----

  private transition(to: TcpQueueState): void {
    const from = this.state;
    if (!LEGAL[from].includes(to))
      throw new Error(`TCP queue: illegal transition ${from} -> ${to}`);
    this.state = to;
    if (this.timer) {
      // The ICReq timer (leaving 'ic-wait'), the Connect timer (leaving 'live' before a
      // Connect) or the linger timer (leaving 'closing').
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (to === 'closing') {
      this.parser.halt();
      this.writer.flush();
      this.socket.end();
      this.timer = setTimeout(() => this.socket.destroy(), this.opts.lingerMs ?? LINGER_MS);
      this.timer.unref();
    }
    if (to === 'closed') this.socket.destroy();
    if (from === 'live') this.releaseCore();
    if (from === 'live') this.notifyDrained();
  }

  private notifyDrained(): void {
    const resolve = this.drained;
    this.drained = null;
    resolve?.();
  }

  /** Leaving 'live' releases the core's queue: exactly once, by construction. */
  private releaseCore(): void {
    this.r2tActive.clear();
    this.r2tWaiting.length = 0;
    this.r2tBytes = 0;
    this.readWaiting.length = 0;
    const core = this.core;
    this.core = null;
    try {
      core?.closed();
    } catch (err) {
      this.log.error('core closed() threw', { peer: this.peer, err });
    }
  }

  private onClose(): void {
    this.guard.leave(this);
    if (this.state !== 'closed') this.transition('closed');
    this.onClosed?.();
  }

  /** End the connection with a C2HTermReq (facts §1.3): the peer learns why, then FIN. */
  private fatal(fes: number, fei: number, header: Buffer | undefined, why: string): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.log.warn('protocol error, terminating connection', { peer: this.peer, fes, fei, why });
    this.writer.write(encodeTermReq(PduType.C2HTermReq, fes, fei, header));
    this.transition('closing');
  }

  // ---- input ----

  private onData(chunk: Buffer): void {
    this.parse(() => this.parser.feed(chunk, this.onPdu));
  }

  private parse(step: () => PduError | null): void {
    try {
      const err = step();
      if (err) this.fatal(err.fes, err.fei, err.header, err.message);
    } catch (err) {
      // A bug of ours or the core's: lose this connection, never the process.
      this.log.error('unexpected error on queue', { peer: this.peer, err });
      if (this.state !== 'closed') this.transition('closed');
    }
  }

  private dispatch(pdu: H2CPdu): void {
    if (this.state !== 'live' && this.state !== 'ic-wait') return;
    switch (pdu.type) {
      case PduType.ICReq:
        return this.onICReq(pdu);
      case PduType.H2CTermReq:
        this.log.warn('host terminated connection', {
          peer: this.peer,
          fes: pdu.fes,
          fei: pdu.fei,
        });
        return this.transition('closing');
      case PduType.CapsuleCmd:
        this.onCapsule(pdu);
        // Answers made at once (a log page, an error) count toward no queue depth: a
        // peer that does not read them must not get more made from the same chunk.
        if (this.socket.writableLength >= TX_HOLD_BYTES) {
          this.parser.hold();
          this.pauseReading();
        }
        return;
      case PduType.H2CData:
        return this.onH2CData(pdu);
    }
  }

  private pauseReading(): void {
    if (this.readingPaused || this.state === 'closed') return;
    this.readingPaused = true;
    this.socket.pause();
  }

  private resumeReading(): void {
    if (!this.readingPaused) return;
    this.readingPaused = false;
    if (this.parser.holding) {
      this.parse(() => this.parser.resume(this.onPdu));
      if (this.parser.holding) return; // held again: paused again until the next 'drain'
    }
    if (this.state === 'live' || this.state === 'ic-wait') this.socket.resume();
  }

  // ---- IC exchange ----

  private onICReq(p: ICReqPdu): void {
    if (p.pfv !== 0) return this.fatal(Fes.UNSUPPORTED_PARAMETER, OFF_PFV, encodeICReq(p), 'PFV');
    if (p.hpda > 31) return this.fatal(Fes.UNSUPPORTED_PARAMETER, OFF_HPDA, encodeICReq(p), 'HPDA');
    // HPDA != 0 (never sent by Linux) is honoured by padding our C2HData PDUs.
    this.dg = { hdgst: p.hdgst, ddgst: p.ddgst, align: (p.hpda + 1) * 4 };
    this.writer.write(
      encodeICResp({ cpda: 0, hdgst: p.hdgst, ddgst: p.ddgst, maxh2cdata: MAXH2CDATA }),
    );
    this.parser.setDigests(p.hdgst, p.ddgst);
    this.transition('live');
    // Until a Connect binds the queue nothing (no controller, no keep-alive) would ever
    // end a connection that stops here: a peer could hold sockets for free.
    this.timer = setTimeout(
      () => this.close('no Connect in time'),
      this.opts.icTimeoutMs ?? IC_TIMEOUT_MS,
    );
    this.timer.unref();
    this.core = this.target.openQueue(this);
  }

  // ---- commands ----

  private onCapsule(p: CapsuleCmdPdu): void {
    if (this.state !== 'live' || !this.core) return;
    if (this.outstanding >= this.queueSize) {
      return this.fatal(Fes.DATA_LIMIT_EXCEEDED, 0, undefined, 'queue depth exceeded');
    }
    this.outstanding++;
    const cmd = new TcpCommand(this, p.sqe);
    // Keep Alive still goes through while draining: the drain waits up to seconds for
    // commands in flight, and a host that is refused its keep-alives would have its
    // controller (and those commands' completions) expire under the drain.
    if (this.draining && p.sqe[0] !== ADMIN.KEEP_ALIVE) {
      return this.respond(cmd.cid, SC.ANA_TRANSITION);
    }
    if (p.ddgstError) return this.respond(cmd.cid, SC.TRANSIENT_TR_ERR);
    const bad = validateCapsule(p.sqe, p.data, this.inCapsuleBytes);
    if (bad) return this.respond(cmd.cid, bad);
    let r: ParseResult;
    try {
      r = this.core.parse(p.sqe, cmd.sglLength);
    } catch (err) {
      this.log.error('core parse() threw', { peer: this.peer, err });
      return this.respond(cmd.cid, SC.INTERNAL | DNR);
    }
    if (r.kind === 'error') return this.respond(cmd.cid, r.status, r.dw0 ?? 0);
    if (r.length > cmd.sglLength) return this.respond(cmd.cid, SC.SGL_INVALID_DATA_LEN | DNR);
    cmd.prepare(r.dir, r.length, r.exec, r.unused);
    if (r.dir === 'h2c') {
      if (p.data) return this.execute(cmd, this.inCapsuleData(cmd, p.data));
      if (r.length === 0) return this.execute(cmd, EMPTY);
      return this.queueForR2T(cmd);
    }
    // In-capsule data belongs to writes only (nvmet: Invalid Field).
    if (r.dir === 'c2h' && p.data) return this.respond(cmd.cid, SC.INVALID_FIELD | DNR);
    if (r.dir !== 'c2h') return this.execute(cmd, null);
    if (this.readWaiting.length === 0 && this.readFits(cmd.length)) return this.startRead(cmd);
    this.readWaiting.push(cmd);
  }

  /**
   * Whether a read of len bytes may start now: the reads running and the answers the
   * peer has not taken (counted once past the socket's high water mark, when a 'drain'
   * is sure to follow) stay within READ_BUDGET, or nothing is held at all (the only
   * case while the process is over its cap, PeerMemoryGuard).
   */
  private readFits(len: number): boolean {
    const s = this.socket;
    const held = this.readBytes + (s.writableNeedDrain ? s.writableLength : 0);
    if (held === 0) return true;
    return !this.guard.tight && held + len <= (this.opts.readBudget ?? READ_BUDGET);
  }

  private startRead(cmd: TcpCommand): void {
    cmd.budgeted = true;
    this.readBytes += cmd.length;
    this.execute(cmd, this.offerFrame(cmd));
  }

  /**
   * Start waiting reads, in arrival order, while READ_BUDGET allows (on 'drain' and as
   * reads end). Nothing re-enters it: a read that completes inside startRead pumps from
   * a microtask (complete), and 'drain' comes on a later tick.
   */
  private pumpReads(): void {
    while (this.state === 'live' && this.readWaiting.length > 0) {
      if (!this.readFits(this.readWaiting[0]!.length)) return;
      this.startRead(this.readWaiting.shift()!);
    }
  }

  /**
   * A read that fits one C2HData PDU gets a frame: the core reads straight into its
   * data part and complete() writes the header around it, so the PDU leaves as one
   * buffer with no copy and no allocation beyond the frame.
   */
  private offerFrame(cmd: TcpCommand): Buffer | null {
    if (cmd.length === 0 || cmd.length > MAX_C2H_DATA) return null;
    const frame = this.frames.take(c2hDataFrameSize(cmd.length, this.dg));
    const at = c2hDataHeadroom(this.dg);
    cmd.frame = frame;
    cmd.into = frame.subarray(at, at + cmd.length);
    return cmd.into;
  }

  private execute(cmd: TcpCommand, data: Buffer | null): void {
    try {
      cmd.exec!(data, cmd.done);
    } catch (err) {
      this.log.error('core exec() threw', { peer: this.peer, err });
      cmd.done(SC.INTERNAL | DNR);
    }
  }

  /** The core finished a command (TcpCommand.done); send read data, then the CQE. */
  complete(cmd: TcpCommand, status: number, dw0: number, dw1: number, data?: Buffer): void {
    this.releaseWriteData(cmd);
    if (cmd.budgeted) {
      cmd.budgeted = false;
      this.readBytes -= cmd.length;
      if (this.readWaiting.length > 0) queueMicrotask(this.pumpSoon);
    }
    if (this.state !== 'live') return; // the queue is gone: nobody is waiting for this
    if (status === 0 && cmd.dir === 'c2h' && cmd.length > 0) {
      if (!data || data.length < cmd.length) {
        this.log.error('core returned short read data', { peer: this.peer, cid: cmd.cid });
        return this.respond(cmd.cid, SC.INTERNAL | DNR);
      }
      // SUCCESS replaces the CapsuleResp only when the CQE would say nothing more.
      const success = this.sqFlowDisabled && dw0 === 0 && dw1 === 0;
      if (data === cmd.into) {
        // The core is done with the frame: data === into only once the backend filled it.
        this.writer.writeFrame(
          frameC2HData(cmd.frame!, { cccid: cmd.cid, datao: 0, last: true, success }, this.dg),
        );
      } else {
        this.sendC2HData(cmd.cid, data.subarray(0, cmd.length), success);
      }
      if (success) {
        this.retire();
        return this.checkDrained();
      }
    }
    if (status === 0 && cmd.connectQid >= 0) {
      this.sqid = cmd.connectQid;
      this.sqFlowDisabled = (cmd.connectCattr & CATTR_DISABLE_SQFLOW) !== 0;
    }
    this.respond(cmd.cid, status, dw0, dw1);
  }

  private sendC2HData(cccid: number, data: Buffer, success: boolean): void {
    for (let datao = 0; datao < data.length; datao += MAX_C2H_DATA) {
      const end = Math.min(datao + MAX_C2H_DATA, data.length);
      const piece = data.subarray(datao, end);
      const last = end === data.length;
      this.writer.writev(
        encodeC2HData({ cccid, datao, last, success: last && success }, piece, this.dg),
      );
    }
  }

  /**
   * One CapsuleResp: SQHD advances per completion modulo the queue size, or is 0xFFFF
   * once the host disabled SQ flow control at Connect (from that Connect's own
   * answer on), as nvmet does.
   */
  private respond(cid: number, status: number, dw0 = 0, dw1 = 0): void {
    this.retire();
    const sqhd = this.sqFlowDisabled ? SQHD_NO_FLOW_CONTROL : this.sqhd;
    const cqe = { dw0, dw1, sqhd, sqid: this.sqid, cid, status };
    this.writer.write(encodeCapsuleResp(cqe, this.dg.hdgst));
    this.checkDrained();
  }

  /** A command ends: with a CapsuleResp (respond) or with a SUCCESS C2HData. */
  private retire(): void {
    this.outstanding--;
    this.sqhd = (this.sqhd + 1) % this.queueSize;
  }

  private checkDrained(): void {
    if (this.outstanding === 0 && this.drained) this.notifyDrained();
  }

  // ---- writes via R2T / H2CData ----

  private queueForR2T(cmd: TcpCommand): void {
    this.r2tWaiting.push(cmd);
    this.pumpR2T();
  }

  /**
   * Hand out R2Ts in arrival order while the connection's gather limits allow (one at a
   * time while the process is over its cap, PeerMemoryGuard).
   */
  private pumpR2T(): void {
    const maxActive = this.opts.maxActiveR2t ?? MAX_ACTIVE_R2T;
    const budget = this.opts.r2tBudget ?? R2T_BUDGET;
    while (this.r2tWaiting.length > 0 && this.r2tActive.size < maxActive) {
      const cmd = this.r2tWaiting[0]!;
      const over = this.guard.tight || this.r2tBytes + cmd.length > budget;
      if (this.r2tActive.size > 0 && over) return;
      this.r2tWaiting.shift();
      this.r2tBytes += cmd.length;
      cmd.ttag = this.allocTtag();
      this.r2tActive.set(cmd.ttag, cmd);
      this.sendR2T(cmd);
    }
  }

  private allocTtag(): number {
    do this.nextTtag = (this.nextTtag + 1) & 0xffff;
    while (this.r2tActive.has(this.nextTtag));
    return this.nextTtag;
  }

  /** One R2T at a time per command (Linux MAXR2T is 0), for the rest of its data. */
  private sendR2T(cmd: TcpCommand): void {
    const r2to = cmd.received;
    const r2tl = Math.min(cmd.length - r2to, this.opts.maxR2tLength ?? 0xffffffff);
    cmd.r2tEnd = r2to + r2tl;
    this.writer.write(encodeR2T({ cccid: cmd.cid, ttag: cmd.ttag, r2to, r2tl }, this.dg.hdgst));
  }

  /**
   * The parser's DataSink: an H2CData that spans received chunks lands straight in its
   * command's buffer, taken from this connection's pool, instead of in a fresh buffer
   * of the parser's (a 128 KiB write: one allocation fewer). A PDU that does not
   * continue its command's R2T window is refused from its header (the TermReq goes out
   * at once, as nvmet checks the TTAG and offset before it takes any data); before, the
   * parser gathered up to MAXH2CDATA of it first, and a peer that sent the header alone
   * held its connection and those bytes until PEER_STALL_MS.
   */
  private readonly dataSink = (h: DataHeader): Buffer | DataRefusal => {
    const outside = this.outsideR2tWindow(h);
    if (outside) return { fes: outside[0], fei: outside[1], why: outside[2] };
    return this.writeBuffer(this.r2tActive.get(h.ttag)!).subarray(h.datao, h.datao + h.datal);
  };

  /** The command's write data buffer, from this connection's pool (released at completion). */
  private writeBuffer(cmd: TcpCommand): Buffer {
    if (!cmd.buf) {
      cmd.buf = this.writeData.take(cmd.length);
      cmd.pooled = true;
    }
    return cmd.buf;
  }

  /** A write's in-capsule data, copied out of the chunk when the chunk's memory is reused. */
  private inCapsuleData(cmd: TcpCommand, data: Buffer): Buffer {
    if (!this.rxReused) return data.subarray(0, cmd.length);
    const own = this.writeBuffer(cmd);
    data.copy(own, 0, 0, cmd.length);
    return own;
  }

  /** Gives a command's pooled write buffer back: nobody holds it once it completed. */
  private releaseWriteData(cmd: TcpCommand): void {
    if (!cmd.pooled) return;
    cmd.pooled = false;
    this.writeData.give(cmd.buf!);
    cmd.buf = null;
  }

  /** H2CData checks after nvmet (facts §1.7); any violation is fatal. */
  private onH2CData(p: H2CDataPdu): void {
    const why = this.checkH2CData(p);
    if (why) return this.fatal(why[0], why[1], this.h2cHeader(p), why[2]);
    const cmd = this.r2tActive.get(p.ttag)!;
    const end = p.datao + p.datal;
    this.h2cBytes += p.datal;
    // From a chunk whose memory is reused, the data is copied into the pool's buffer.
    if (this.rxReused) this.writeBuffer(cmd);
    cmd.accept(p.data, p.datao, p.ddgstError, p.landed);
    if (end < cmd.r2tEnd) return;
    if (end < cmd.length) return this.sendR2T(cmd);
    this.r2tActive.delete(cmd.ttag);
    this.r2tBytes -= cmd.length;
    this.pumpR2T();
    // A digest error spoils the data but not the stream: the host retries (no DNR).
    // The command never reaches the core, so its pooled buffer goes back here.
    if (cmd.dataError) {
      this.releaseWriteData(cmd);
      cmd.unused?.();
      return this.respond(cmd.cid, SC.TRANSIENT_TR_ERR);
    }
    this.execute(cmd, cmd.buf);
  }

  /** [fes, fei, why] when the PDU does not continue its command's R2T window. */
  private checkH2CData(p: H2CDataPdu): [number, number, string] | null {
    const outside = this.outsideR2tWindow(p);
    if (outside) return outside;
    const end = p.datao + p.datal;
    if (((p.flags & PduFlag.LAST_PDU) !== 0) !== (end === this.r2tActive.get(p.ttag)!.r2tEnd)) {
      return [Fes.INVALID_HEADER_FIELD, OFF_FLAGS, 'LAST_PDU'];
    }
    return null;
  }

  /** The header checks of checkH2CData (all but LAST_PDU), which the DataSink makes too. */
  private outsideR2tWindow(h: DataHeader | H2CDataPdu): [number, number, string] | null {
    const cmd = this.r2tActive.get(h.ttag);
    if (!cmd) return [Fes.INVALID_HEADER_FIELD, OFF_TTAG, 'unknown TTAG'];
    if (h.cccid !== cmd.cid) return [Fes.INVALID_HEADER_FIELD, OFF_CCCID, 'CCCID'];
    if (h.datal > MAXH2CDATA) return [Fes.DATA_LIMIT_EXCEEDED, 0, 'DATAL > MAXH2CDATA'];
    if (h.datao !== cmd.received || h.datao + h.datal > cmd.r2tEnd) {
      return [Fes.DATA_OUT_OF_RANGE, 0, `DATAO ${h.datao} DATAL ${h.datal}`];
    }
    return null;
  }

  /** The offending H2CData header for the TermReq, rebuilt from its fields. */
  private h2cHeader(p: H2CDataPdu): Buffer {
    const last = (p.flags & PduFlag.LAST_PDU) !== 0;
    const f = { cccid: p.cccid, ttag: p.ttag, datao: p.datao, last };
    return encodeH2CData(f, p.data, { ...this.dg, align: 4 })[0]!;
  }
}

const EMPTY = Buffer.alloc(0);
