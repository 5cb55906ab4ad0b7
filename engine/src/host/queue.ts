/**
 * One NVMe/TCP queue (one TCP connection) on the host side: TCP connect, the IC
 * exchange, then commands in flight up to the queue depth, with in-capsule writes,
 * R2T/H2CData writes, C2HData reads, digests, per-command timeouts and failure.
 *
 * The queue knows nothing about Fabrics Connect or controllers (controller.ts issues
 * Connect as its first command). It is callback based: submit(req) and req.onDone(req);
 * promises are a layer above (see controller.ts), so the benchmark can run with no
 * allocation per I/O beyond what the socket and parser do.
 *
 * Sending: every PDU goes through out(), which corks the socket on the first write of
 * an event-loop turn and uncorks in process.nextTick, so all commands submitted in one
 * turn (for example in reaction to a chunk of completions) leave in one writev.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { crc32c } from '../protocol/crc32c.js';
import {
  hostParser,
  type DataHeader,
  type DataRefusal,
  type PduParser,
} from '../protocol/pdu-parser.js';
import {
  Fes,
  OFF_CCCID,
  PduFlag,
  PduType,
  encodeH2CData,
  encodeICReq,
  encodeTermReq,
  type C2HDataPdu,
  type C2HPdu,
  type ICRespPdu,
  type R2TPdu,
} from '../protocol/pdu.js';
import { SC } from '../protocol/status.js';
import { callDone } from './callback.js';
import { SLOT_HEADER_BYTES, ddgstView, writeCapsule } from './capsule.js';
import { CidAllocator, WaitQueue } from './cid.js';
import { HostError } from './errors.js';
import { commandName } from './execute.js';
import { NO_TIMEOUT, type NvmeRequest } from './request.js';
import { StateMachine } from './state.js';

/** In-capsule limit Linux uses for every admin command and every fabrics command. */
export const ADMIN_IN_CAPSULE_LIMIT = 8192;

/**
 * Bytes one socket read of an I/O queue may take in, into a buffer the queue keeps and
 * reuses for every read (net.connect's `onread`). By default Node allocates a fresh
 * 64 KiB buffer for every read and then shrinks it to what arrived: a malloc and a
 * realloc per read, and every view handed out pins its chunk. Measured on the 2-vCPU
 * VM, 4 KiB random reads at QD32 through our target, alternating runs: 317k -> 360k/s
 * with the CPUs sleeping deeply, 364k -> 393k with the engine's 0 µs wake-up latency
 * request (host CPU per read about 1.95 -> 1.8 µs). Not larger: with 128 KiB or more,
 * one read takes in all 32 answers, so host and target take turns with one batch of 32,
 * each sleeping while the other works, and with deep sleeps that fell to 220k/s (no
 * better with the latency request). 64 KiB splits the batch, and the two overlap.
 */
export const IO_QUEUE_RECEIVE_BYTES = 64 * 1024;
/** The same for the admin queue, whose answers are few and small. */
const ADMIN_QUEUE_RECEIVE_BYTES = 16 * 1024;

/** The longest delay setTimeout keeps (2^31 - 1 ms, about 24.8 days): a longer one, or
 * Infinity, fires after 1 ms. */
export const MAX_TIMER_MS = 0x7fff_ffff;

/**
 * Why `ms` cannot be the timer setting `name`, or null: a number of milliseconds from
 * `min` to `max` (MAX_TIMER_MS for a delay armed with setTimeout; Infinity for a command
 * timeout, which is a scanned deadline, never a timer of its own).
 */
export function timerRefusal(name: string, ms: number, min: number, max: number): string | null {
  if (ms >= min && ms <= max) return null; // NaN is neither
  const range = max === Infinity ? `${min} or more` : `from ${min} to ${max}`;
  const why =
    max === MAX_TIMER_MS ? ` (Node's timers hold no more: a longer wait would end after 1 ms)` : '';
  return `${name} ${ms} is not a number of milliseconds ${range}${why}`;
}

export interface QueueOptions {
  readonly host: string;
  readonly port: number;
  /** 0 = admin queue. */
  readonly qid: number;
  /** Commands in flight at most: the Connect SQSIZE (0's based), one less than the
   * queue's entries, since a queue of N entries is full with N - 1; Linux sizes its tag
   * set so too. */
  readonly depth: number;
  /** Of those, slots only submitReserved() uses (default 0): a Keep Alive must not wait
   * behind slow commands while the controller's keep-alive timer runs (Linux gives it a
   * reserved tag, and its AER a command id of its own). */
  readonly reserved?: number;
  readonly hdgst?: boolean;
  readonly ddgst?: boolean;
  /** TCP connect plus ICResp wait, ms (Linux: 10 s for the ICResp). Default 10000. */
  readonly connectTimeoutMs?: number;
  /** Default per-command timeout, ms (Linux: admin 60 s, I/O 30 s). Default 30000. */
  readonly commandTimeoutMs?: number;
  /** Commands that may wait for a free CID before submit fails with 'busy'. */
  readonly maxWaiting?: number;
  /** Largest data transfer of one command, and so the largest data section of a
   * received PDU (C2HData): bounds the parser's buffer. A larger request fails with
   * 'too-large' without being sent. Default 8 MiB. */
  readonly maxDataLength?: number;
  /** Write data up to this many bytes travels in the CapsuleCmd (non-fabrics commands).
   * Admin queue: 8192; I/O queues: IOCCSZ*16-64. */
  readonly inCapsuleLimit?: number;
  /** Called once if the queue fails (not when the owner closes it). */
  readonly onFailed?: (err: HostError) => void;
  /** Aborting it while the queue connects fails the connect at once (kind 'closed'). */
  readonly signal?: AbortSignal;
}

/** Per-CID-tag state, allocated once per queue. */
interface Slot {
  /** CapsuleCmd header + HDGST + in-capsule DDGST; rewritten for each command. */
  readonly buf: Buffer;
  /** buf's first 72 or 76 bytes: what goes to the socket. */
  readonly head: Buffer;
  readonly ddgst: Buffer;
  req: NvmeRequest | null;
  cid: number;
  /** Data went in the capsule: an R2T for this command is a protocol error. */
  inCapsule: boolean;
  /** C2H bytes received so far (DATAO must continue from here). */
  received: number;
  /** End of the last R2T window served. */
  r2tEnd: number;
  /** Bytes sent in H2CData so far (R2T windows never overlap, so no byte counts twice). */
  sent: number;
  /** R2T windows whose H2CData has not all left this process yet (views of dataOut). */
  unflushed: number;
  /** Its status, when the controller answered while unflushed > 0 (onCapsuleResp); else -1. */
  answered: number;
  /** socket.write callback of an R2T window's last buffer. */
  flushed: () => void;
  /** Gather buffer when C2H data came in several PDUs and no `into` was given. */
  gather: Buffer | null;
  /** A C2HData digest mismatched: complete with Data Transfer Error, as Linux does. */
  ddgstBad: boolean;
  /** The command came through submitReserved(). */
  reserved: boolean;
  /** performance.now() deadline (monotonic: a clock step moves no timeout), 0 = none. */
  deadline: number;
}

/** What our TermReq tells the controller: a PduError or DataRefusal fits, or these. */
interface TermCause {
  readonly fes: number;
  readonly fei: number;
  /** The offending header, when the parser has it. */
  readonly header?: Buffer;
}
const BAD_FIELD: TermCause = { fes: Fes.INVALID_HEADER_FIELD, fei: 0 };
const OUT_OF_RANGE: TermCause = { fes: Fes.DATA_OUT_OF_RANGE, fei: 0 };

/** The command that made a queue fail, and the error it ends with. */
interface Culprit {
  readonly slot: Slot;
  readonly err: HostError;
}

/** Queue states. */
export type QueueState =
  /** TCP connect and IC exchange in progress. */
  | 'connecting'
  /** IC done: commands flow. */
  | 'live'
  /** An error ended it: commands were failed, the socket destroyed. Terminal. */
  | 'failed'
  /** The owner closed it. Terminal. */
  | 'closed';

const QUEUE_STATES: Record<QueueState, readonly QueueState[]> = {
  connecting: [],
  live: ['connecting'],
  failed: ['connecting', 'live'],
  closed: ['connecting', 'live'],
};

export class NvmeTcpQueue {
  readonly qid: number;
  readonly depth: number;
  readonly hdgst: boolean;
  readonly ddgst: boolean;
  /** From ICResp: largest H2CData payload we may send. */
  maxh2cdata = 0;
  /** Why the queue failed, once it has. */
  failure: HostError | null = null;

  private readonly sm: StateMachine<QueueState>;
  private readonly sock: net.Socket;
  /**
   * Every socket read lands here, overwriting the last one: what a PDU handed out by the
   * parser points into is valid only until onPdu returns, so whatever outlives that is
   * copied (onC2HData); what spans reads the parser copies anyway.
   */
  private readonly rx: Buffer;
  private readonly parser: PduParser<C2HPdu>;
  private readonly cids: CidAllocator;
  private readonly slots: Slot[];
  private readonly waiting: WaitQueue<NvmeRequest>;
  private readonly timeoutMs: number;
  private readonly inCapsuleLimit: number;
  private readonly maxDataLength: number;
  /** The timeout scan's period, ms (scanSlack of the queue's timeout). */
  private readonly scanMs: number;
  /** The one timer of the timeout scan; null once the queue has failed or closed. */
  private scanTimer: NodeJS.Timeout | null = null;
  /** When it fires (performance.now() ms): a command due earlier pulls it in (scanBy). */
  private nextScanAt = Infinity;
  private corked = false;
  private inflight = 0;
  /** Slots submit() may fill: depth minus the reserved ones. */
  private readonly shared: number;
  private reservedInFlight = 0;
  private opened: { resolve: () => void; reject: (e: Error) => void } | null = null;
  /** The read whose C2HData header the DataSink refused: the parser's error is about it. */
  private refused: Slot | null = null;

  private constructor(private readonly opts: QueueOptions) {
    this.qid = opts.qid;
    this.depth = opts.depth;
    this.hdgst = opts.hdgst ?? false;
    this.ddgst = opts.ddgst ?? false;
    this.sm = new StateMachine(`queue ${opts.qid}`, 'connecting', QUEUE_STATES);
    this.cids = new CidAllocator(opts.depth);
    this.shared = opts.depth - (opts.reserved ?? 0);
    if (this.shared < 1) {
      throw new RangeError(`queue ${opts.qid}: ${opts.reserved} reserved of ${opts.depth} slots`);
    }
    this.waiting = new WaitQueue(opts.maxWaiting ?? 65536);
    this.timeoutMs = opts.commandTimeoutMs ?? 30_000;
    this.inCapsuleLimit = opts.inCapsuleLimit ?? ADMIN_IN_CAPSULE_LIMIT;
    this.maxDataLength = opts.maxDataLength ?? 8 * 1024 * 1024;
    this.parser = hostParser(this.maxDataLength);
    this.parser.setDataSink(this.dataSink);
    this.slots = makeSlots(opts.depth, this.hdgst, (slot) => this.flushed(slot));
    // First, as it may throw: nothing of this queue may be left behind then.
    this.rx = Buffer.allocUnsafe(
      opts.qid === 0 ? ADMIN_QUEUE_RECEIVE_BYTES : IO_QUEUE_RECEIVE_BYTES,
    );
    this.sock = net.connect({
      host: opts.host,
      port: opts.port,
      noDelay: true,
      onread: { buffer: this.rx, callback: this.onRead },
    });
    // One coarse timer per queue instead of one per command (see scanBy).
    this.scanMs = scanSlack(this.timeoutMs);
    this.armScan(performance.now() + this.scanMs);
  }

  /** TCP connect + ICReq/ICResp; rejects with a HostError of kind 'connect'. */
  static connect(opts: QueueOptions): Promise<NvmeTcpQueue> {
    const where = `${opts.host}:${opts.port} queue ${opts.qid}`;
    if (!isTcpPort(opts.port)) {
      const why = `port ${opts.port} is not a TCP port (an integer 1..65535)`;
      return Promise.reject(new HostError('connect', `${where}: ${why}`));
    }
    const refused =
      timerRefusal('connectTimeoutMs', opts.connectTimeoutMs ?? 10_000, 1, MAX_TIMER_MS) ??
      timerRefusal('commandTimeoutMs', opts.commandTimeoutMs ?? 30_000, 0, Infinity);
    if (refused) return Promise.reject(new RangeError(`${where}: ${refused}`));
    let q: NvmeTcpQueue;
    try {
      q = new NvmeTcpQueue(opts);
    } catch (e) {
      // net.connect refused its arguments (a host that is not a string, say)
      const err = new HostError('connect', `${where}: ${(e as Error).message}`, false, {
        cause: e,
      });
      return Promise.reject(err);
    }
    return q.open().then(() => q);
  }

  get state(): QueueState {
    return this.sm.state;
  }

  /** Commands holding a CID (sent, not yet completed). */
  get inFlight(): number {
    return this.inflight;
  }

  /** Commands waiting for a CID. */
  get queued(): number {
    return this.waiting.length;
  }

  private open(): Promise<void> {
    const { host, port } = this.opts;
    const where = `${host}:${port} queue ${this.qid}`;
    return new Promise<void>((resolve, reject) => {
      const ms = this.opts.connectTimeoutMs ?? 10_000;
      // One timer for both steps; which one it caught tells a firewall dropping the SYNs
      // from a listener that accepted and never answered the ICReq.
      const timer = setTimeout(() => {
        const why = this.sock.connecting
          ? `TCP connect timed out after ${ms} ms`
          : 'no ICResp within timeout';
        this.fail(new HostError('connect', `${where}: ${why}`));
      }, ms);
      const signal = this.opts.signal;
      const cancel = () => this.fail(new HostError('closed', `${where}: connect cancelled`));
      const settle = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', cancel);
      };
      this.opened = {
        resolve: () => (settle(), resolve()),
        reject: (e) => (settle(), reject(e)),
      };
      if (signal?.aborted) return cancel();
      signal?.addEventListener('abort', cancel, { once: true });
      this.sock.once('connect', () => {
        this.sock.write(encodeICReq({ hpda: 0, hdgst: this.hdgst, ddgst: this.ddgst, maxr2t: 0 }));
      });
      this.sock.on('error', (e: Error) => {
        const kind = this.sm.is('connecting') ? 'connect' : 'transport';
        this.fail(new HostError(kind, `${where}: ${e.message}`, false, { cause: e }));
      });
      this.sock.on('close', () => {
        const kind = this.sm.is('connecting') ? 'connect' : 'transport';
        this.fail(new HostError(kind, `${where}: connection closed by the controller`));
      });
    });
  }

  // ---- submission ----

  /**
   * Send a command. Never throws for runtime conditions: every outcome, including
   * "queue not live" and "wait queue full", arrives through req.onDone exactly once.
   */
  submit(req: NvmeRequest): void {
    if (!this.admit(req)) return;
    if (this.sharedFree()) return this.issueUnlessLate(req, performance.now(), false);
    if (!this.waiting.push(req)) {
      finish(
        req,
        new HostError('busy', `queue ${this.qid}: ${this.waiting.limit} commands waiting`),
      );
    } else if (req.deadline !== 0 && req.deadline < this.nextScanAt) {
      this.scanBy(req.deadline, this.timeoutOf(req));
    }
  }

  /**
   * Send a command in one of the reserved slots (QueueOptions.reserved), at once: it never
   * waits behind other commands. Its owner keeps at most that many such commands in
   * flight; one more ends with 'busy'. Otherwise as submit().
   */
  submitReserved(req: NvmeRequest): void {
    if (!this.admit(req)) return;
    if (this.reservedInFlight >= this.depth - this.shared) {
      const msg = `queue ${this.qid}: all ${this.depth - this.shared} reserved slots are in use`;
      return finish(req, new HostError('busy', msg));
    }
    // Shared commands hold at most `shared` slots, reserved ones the rest: a tag is free.
    this.issue(req, this.cids.alloc(), true);
  }

  /** Clear the result fields; false (req ended) when the command cannot be sent. */
  private admit(req: NvmeRequest): boolean {
    req.status = req.dw0 = req.dw1 = 0;
    req.data = null;
    req.error = null;
    if (!this.sm.is('live')) {
      const kind = this.sm.is('closed') ? 'closed' : 'not-connected';
      const why = this.failure ? `: ${this.failure.message}` : '';
      finish(req, new HostError(kind, this.notLive() + why));
      return false;
    }
    if (req.into && req.into.length < req.readLength) {
      // a caller's mistake: the data would be cut short without a word
      throw new RangeError(
        `queue ${this.qid}: a ${req.readLength}-byte read into a ${req.into.length}-byte buffer`,
      );
    }
    if (req.transferLength > this.maxDataLength) {
      const what = `queue ${this.qid}: a ${req.transferLength}-byte transfer`;
      const limit = `this queue's limit of ${this.maxDataLength} bytes`;
      finish(req, new HostError('too-large', `${what} is over ${limit} (not sent)`));
      return false;
    }
    return true;
  }

  /** A slot outside the reserved ones is free. */
  private sharedFree(): boolean {
    return this.inflight - this.reservedInFlight < this.shared;
  }

  private notLive(): string {
    return `queue ${this.qid} is ${this.sm.state}`;
  }

  private issue(req: NvmeRequest, cid: number, reserved: boolean): void {
    const slot = this.slots[cid & 0xfff]!;
    const data = req.dataOut;
    const limit = req.isFabrics
      ? Math.max(ADMIN_IN_CAPSULE_LIMIT, this.inCapsuleLimit)
      : this.inCapsuleLimit;
    const inCapsule = data !== null && data.length > 0 && data.length <= limit;
    slot.req = req;
    slot.cid = cid;
    slot.inCapsule = inCapsule;
    slot.received = 0;
    slot.r2tEnd = 0;
    slot.sent = 0;
    slot.unflushed = 0;
    slot.answered = -1;
    slot.gather = null;
    slot.ddgstBad = false;
    slot.reserved = reserved;
    if (reserved) this.reservedInFlight++;
    const t = this.timeoutOf(req);
    slot.deadline = req.deadline || (t === NO_TIMEOUT ? 0 : performance.now() + t);
    req.deadline = 0; // sent: sent again, it gets its whole timeout again
    // One comparison per command: only a deadline before the next scan moves the timer.
    if (slot.deadline !== 0 && slot.deadline < this.nextScanAt) this.scanBy(slot.deadline, t);
    this.inflight++;
    writeCapsule(slot.buf, req, cid, inCapsule, this.hdgst, this.ddgst);
    this.out(slot.head);
    if (inCapsule) {
      this.out(data);
      if (this.ddgst) {
        slot.ddgst.writeUInt32LE(crc32c(data), 0);
        this.out(slot.ddgst);
      }
    }
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.sock.uncork();
  };

  /**
   * Queue bytes for the socket; one writev per event-loop turn (see header). `sent` is
   * called once they (and all queued before them) have left this process.
   */
  private out(b: Buffer, sent?: () => void): void {
    if (!this.corked) {
      this.corked = true;
      this.sock.cork();
      process.nextTick(this.uncork);
    }
    this.sock.write(b, sent);
  }

  // ---- receive path ----

  /** The socket's `onread` callback: `n` bytes arrived at the start of this.rx. */
  private readonly onRead = (n: number): boolean => {
    const err = this.parser.feed(this.rx.subarray(0, n), this.onPdu);
    if (err) this.protocolFailure(this.refused, `bad PDU from the controller: ${err.message}`, err);
    return true; // false would pause the socket
  };

  private readonly onPdu = (pdu: C2HPdu): void => {
    switch (pdu.type) {
      case PduType.CapsuleResp:
        return this.onCapsuleResp(pdu.cqe);
      case PduType.C2HData:
        return this.onC2HData(pdu);
      case PduType.R2T:
        return this.onR2T(pdu);
      case PduType.ICResp:
        return this.onICResp(pdu);
      case PduType.C2HTermReq:
        return this.fail(
          new HostError(
            this.sm.is('connecting') ? 'connect' : 'transport',
            `queue ${this.qid}: controller terminated the connection (FES ${pdu.fes}, FEI ${pdu.fei})`,
          ),
        );
    }
  };

  /** The checks the Linux host makes (facts §1.5). */
  private onICResp(p: ICRespPdu): void {
    const problem =
      p.pfv !== 0
        ? `PFV ${p.pfv}`
        : p.hdgst !== this.hdgst || p.ddgst !== this.ddgst
          ? `digests hdgst=${p.hdgst} ddgst=${p.ddgst}, asked hdgst=${this.hdgst} ddgst=${this.ddgst}`
          : p.cpda !== 0
            ? `CPDA ${p.cpda} (only 0 is supported)`
            : p.maxh2cdata % 4 !== 0 || p.maxh2cdata < 4096
              ? `MAXH2CDATA ${p.maxh2cdata}`
              : null;
    if (problem) {
      this.fail(new HostError('connect', `queue ${this.qid}: unacceptable ICResp: ${problem}`));
      return;
    }
    this.maxh2cdata = p.maxh2cdata;
    this.parser.setDigests(this.hdgst, this.ddgst);
    this.sm.transition('live');
    this.opened?.resolve();
    this.opened = null;
  }

  private slotFor(cid: number, what: string): Slot | null {
    const slot = this.commandSlot(cid);
    if (!slot) this.protocolFailure(null, `${what} for unknown command id 0x${cid.toString(16)}`);
    return slot;
  }

  private onCapsuleResp(cqe: Buffer): void {
    const slot = this.slotFor(cqe.readUInt16LE(12), 'CapsuleResp');
    if (!slot || this.alreadyAnswered(slot, 'CapsuleResp')) return;
    const req = slot.req!;
    const status = cqe.readUInt16LE(14) >>> 1;
    if (status === 0 && slot.received !== req.readLength && !slot.ddgstBad) {
      // Linux fails the queue too: a "successful" short read would hand out garbage.
      const msg = `successful completion after ${slot.received} of ${req.readLength} bytes`;
      return this.protocolFailure(slot, msg);
    }
    const out = req.dataOut;
    if (status === 0 && out && !slot.inCapsule && slot.sent !== out.length) {
      // The controller cannot hold what it never asked for: acknowledging this write
      // would report data as stored that never left this host.
      const msg = `successful completion after sending ${slot.sent} of ${out.length} bytes`;
      return this.protocolFailure(slot, msg);
    }
    req.dw0 = cqe.readUInt32LE(0);
    req.dw1 = cqe.readUInt32LE(4);
    if (slot.unflushed > 0) {
      // The controller answered before the H2CData it asked for left this process (an
      // error right after its R2T, say). socket.write does not copy: ended now, the
      // write would hand back a buffer whose bytes are still to be sent, and its owner
      // may fill it with other data first. It ends once they left (flushed), as SPDK's
      // host waits for the send to complete; its CID stays taken until then, so no
      // other command can be confused with the H2CData still on its way.
      slot.answered = status;
      return;
    }
    this.completeSlot(slot, status);
  }

  /**
   * A write the controller answered while its data still waits here keeps its command
   * id until that data left (onCapsuleResp): a second answer or a further R2T for it is
   * a protocol error, not something to act on. True when so (the queue is failing).
   */
  private alreadyAnswered(slot: Slot, what: string): boolean {
    if (slot.answered < 0) return false;
    // Its first answer no longer stands: the write ends with the protocol error.
    slot.answered = -1;
    this.protocolFailure(
      slot,
      `${what} for command id 0x${slot.cid.toString(16)}, which it had already answered`,
    );
    return true;
  }

  /** An R2T window's H2CData has left this process: end the write if it was answered. */
  private flushed(slot: Slot): void {
    if (!slot.req || --slot.unflushed > 0 || slot.answered < 0) return;
    this.completeSlot(slot, slot.answered);
  }

  /**
   * The parser's DataSink: a C2HData that spans received chunks lands straight in the
   * read's buffer (`into`, or the one gathered for it), not in a buffer of the parser's
   * that would be copied once more (a 128 KiB read: one allocation and one copy fewer).
   * A header that cannot continue its read is refused, so the parser fails at once
   * instead of first taking in up to maxDataLength bytes of it.
   */
  private readonly dataSink = (h: DataHeader): Buffer | DataRefusal => {
    const found = this.commandSlot(h.cccid);
    const refusal = this.c2hRefusal(found, h);
    if (refusal) {
      this.refused = found;
      return refusal;
    }
    const slot = found!; // c2hRefusal refuses a null slot
    const req = slot.req!;
    if (req.into) return req.into.subarray(h.datao, h.datao + h.datal);
    slot.gather ??= Buffer.allocUnsafe(req.readLength);
    return slot.gather.subarray(h.datao, h.datao + h.datal);
  };

  /** The slot of a command in flight, or null (an unknown or stale CID). */
  private commandSlot(cid: number): Slot | null {
    const tag = this.cids.lookup(cid);
    return tag >= 0 ? this.slots[tag]! : null;
  }

  /**
   * Why a C2HData cannot continue a read in `slot` (the checks Linux makes, facts §1.7,
   * plus the range), or null. Made on the header alone, so the DataSink can make it too.
   */
  private c2hRefusal(slot: Slot | null, h: DataHeader | C2HDataPdu): DataRefusal | null {
    if (!slot) {
      const why = `C2HData for unknown command id 0x${h.cccid.toString(16)}`;
      return { ...BAD_FIELD, fei: OFF_CCCID, why };
    }
    const len = slot.req!.readLength;
    if (len === 0) {
      return { ...BAD_FIELD, fei: OFF_CCCID, why: 'C2HData for a command that reads nothing' };
    }
    if (h.datao !== slot.received || h.datao + h.datal > len) {
      const why = `C2HData DATAO ${h.datao} DATAL ${h.datal}: expected offset ${slot.received} of ${len}`;
      return { ...OUT_OF_RANGE, why };
    }
    return null;
  }

  private onC2HData(p: C2HDataPdu): void {
    const found = this.commandSlot(p.cccid);
    const refusal = this.c2hRefusal(found, p);
    if (refusal) return this.protocolFailure(found, refusal.why, refusal);
    const slot = found!; // c2hRefusal refuses a null slot
    const req = slot.req!;
    const len = req.readLength;
    if (p.ddgstError) slot.ddgstBad = true;
    if (req.into) {
      if (!p.landed) p.data.copy(req.into, p.datao);
    } else if (p.datal === len) {
      // The whole transfer in one PDU. Spanning socket reads, it is a buffer the parser
      // gathered for it alone: handed out as it is. Inside one read, it lies in this.rx,
      // which the next read overwrites: copied out.
      slot.gather = p.data.buffer === this.rx.buffer ? Buffer.from(p.data) : p.data;
    } else {
      slot.gather ??= Buffer.allocUnsafe(len);
      if (!p.landed) p.data.copy(slot.gather, p.datao);
    }
    slot.received += p.datal;
    if (p.flags & PduFlag.SUCCESS) {
      // SUCCESS replaces the CapsuleResp (the parser already checked LAST_PDU is set).
      if (slot.received !== len) {
        return this.protocolFailure(slot, `SUCCESS after ${slot.received} of ${len} bytes`);
      }
      req.dw0 = req.dw1 = 0;
      this.completeSlot(slot, 0);
    }
  }

  private onR2T(p: R2TPdu): void {
    const slot = this.slotFor(p.cccid, 'R2T');
    if (!slot || this.alreadyAnswered(slot, 'R2T')) return;
    const data = slot.req!.dataOut;
    if (!data || slot.inCapsule) {
      return this.protocolFailure(slot, 'R2T for a command with no data to send by R2T');
    }
    const end = p.r2to + p.r2tl;
    if (p.r2to < slot.r2tEnd || end > data.length) {
      const msg = `R2T offset ${p.r2to} length ${p.r2tl} outside ${slot.r2tEnd}..${data.length}`;
      return this.protocolFailure(slot, msg, OUT_OF_RANGE);
    }
    const dg = { hdgst: this.hdgst, ddgst: this.ddgst };
    slot.unflushed++; // before any write: its callback may not come first
    for (let off = p.r2to; off < end;) {
      const n = Math.min(this.maxh2cdata, end - off);
      const f = { cccid: slot.cid, ttag: p.ttag, datao: off, last: off + n === end };
      const bufs = encodeH2CData(f, data.subarray(off, off + n), dg);
      off += n;
      const lastBuf = off === end ? bufs.length - 1 : -1;
      for (let i = 0; i < bufs.length; i++) {
        this.out(bufs[i]!, i === lastBuf ? slot.flushed : undefined);
      }
    }
    slot.r2tEnd = end;
    slot.sent += p.r2tl;
  }

  // ---- completion and failure ----

  private completeSlot(slot: Slot, status: number): void {
    const req = slot.req!;
    // Linux completes a command whose C2H data failed its digest with this status.
    req.status = slot.ddgstBad && status === 0 ? SC.DATA_XFER_ERROR : status;
    // A failed read's buffer may be partly filled (allocUnsafe: old memory): none is handed out.
    req.data = req.status === 0 ? (req.into ?? slot.gather) : null;
    this.release(slot);
    this.refill();
    callDone(req);
  }

  private release(slot: Slot): void {
    this.cids.release(slot.cid);
    slot.req = null;
    slot.gather = null;
    this.inflight--;
    if (slot.reserved) this.reservedInFlight--;
  }

  /** Start waiting commands on freed CIDs, oldest first. */
  private refill(): void {
    if (this.waiting.length === 0) return; // the common case: no clock read per completion
    const now = performance.now();
    while (this.waiting.length > 0 && this.sm.is('live') && this.sharedFree()) {
      this.issueUnlessLate(this.waiting.shift()!, now, true);
    }
  }

  /**
   * Send `req` in a shared slot, unless its deadline (NvmeRequest.deadline, counted from
   * its submission) has passed while it waited (held for a reconnect, or for a slot):
   * then it ends as a timeout, never sent.
   */
  private issueUnlessLate(req: NvmeRequest, now: number, waited: boolean): void {
    if (req.deadline !== 0 && now >= req.deadline) return finish(req, this.lateError(req, waited));
    this.issue(req, this.cids.alloc(), false);
  }

  /** A command's timeout, ms: its own, else the queue's (NO_TIMEOUT: none). */
  private timeoutOf(req: NvmeRequest): number {
    return req.timeoutMs < 0 ? this.timeoutMs : req.timeoutMs;
  }

  /**
   * What a command whose deadline passed before it could be sent ends with; `waited`: it
   * waited here for a free slot (else before it reached this queue).
   */
  private lateError(req: NvmeRequest, waited: boolean): HostError {
    const t = this.timeoutOf(req);
    const inFlight = this.inflight - this.reservedInFlight;
    const where = waited
      ? `waiting for a free slot (all ${inFlight} in flight)`
      : 'before it could be sent';
    const slow = waited ? '; the commands ahead of it are slow to complete' : '';
    return new HostError(
      'timeout',
      `queue ${this.qid}: ${commandName(req, this.qid === 0)} timed out after ${t} ms ` +
        `${where}, ${NEVER_SENT}, so it may be sent again${slow}`,
    );
  }

  /**
   * The controller broke the protocol: fail `slot`'s command with 'protocol', tell
   * the controller why (TermReq, best effort) and fail the queue.
   */
  private protocolFailure(slot: Slot | null, msg: string, cause = BAD_FIELD): void {
    const text = `queue ${this.qid}: ${msg}`;
    const live = this.sm.is('live') && !this.sock.destroyed;
    if (live) {
      this.sock.write(encodeTermReq(PduType.H2CTermReq, cause.fes, cause.fei, cause.header));
    }
    const kind = this.sm.is('connecting') ? 'connect' : 'transport';
    const culprit = slot && { slot, err: new HostError('protocol', text, true) };
    // Graceful close so the TermReq is flushed before the FIN (destroy would drop it).
    this.failWith(new HostError(kind, text), live, culprit);
  }

  private failSlot(slot: Slot, err: HostError): void {
    const req = slot.req!;
    this.release(slot);
    finish(req, err);
  }

  /**
   * Make the timeout scan run by `deadline` plus the slack of a `timeoutMs` command
   * (scanSlack), if it would run later. The scan runs every scanMs (a quarter of the
   * queue's timeout, at most 1 s), and then again by the earliest such time of the
   * commands left (scanTimeouts), so a command with a timeout of its own shorter than
   * the queue's ends close to its own deadline, not up to a period late (a 100 ms
   * command on a queue of 30 s timed out after up to 1.1 s). A command's own deadline
   * moves the one timer only when it comes before the next scan: with the queue's
   * timeout it never does, and a run of equal timeouts moves it about once per scan.
   */
  private scanBy(deadline: number, timeoutMs: number): void {
    const at = deadline + scanSlack(timeoutMs);
    if (at < this.nextScanAt && this.sm.is('live')) this.armScan(at);
  }

  private armScan(at: number): void {
    if (this.scanTimer) clearTimeout(this.scanTimer);
    this.nextScanAt = at;
    const ms = Math.min(MAX_TIMER_MS, Math.max(1, Math.ceil(at - performance.now())));
    // unref'd: an idle queue does not keep the process alive by itself.
    this.scanTimer = setTimeout(this.onScanTimer, ms).unref();
  }

  private readonly onScanTimer = (): void => {
    this.scanTimer = null;
    this.nextScanAt = Infinity;
    const now = performance.now();
    const due = this.scanTimeouts(now);
    // nextScanAt: a command submitted by a callback the scan ran
    const next = Math.min(now + this.scanMs, due, this.nextScanAt);
    if (this.sm.is('connecting', 'live')) this.armScan(next);
  };

  /**
   * End the commands past their deadline (the first one sent fails the queue); the
   * earliest time by which one of those left is due a scan (Infinity: none).
   */
  private scanTimeouts(now: number): number {
    if (!this.sm.is('live') || this.inflight === 0) return Infinity;
    let due = Infinity;
    // Waiting for a slot past their deadline: never sent, so the queue is fine.
    if (this.waiting.length > 0) {
      const late = this.waiting.removeWhere((r) => {
        if (r.deadline === 0) return false;
        if (now > r.deadline) return true;
        due = Math.min(due, r.deadline + scanSlack(this.timeoutOf(r)));
        return false;
      });
      for (const req of late) finish(req, this.lateError(req, true));
      if (!this.sm.is('live')) return Infinity; // a callback closed it
    }
    for (const slot of this.slots) {
      if (!slot.req || slot.deadline === 0) continue;
      if (now <= slot.deadline) {
        due = Math.min(due, slot.deadline + scanSlack(this.timeoutOf(slot.req)));
      } else {
        const req = slot.req;
        const t = this.timeoutOf(req);
        const name = commandName(req, this.qid === 0);
        const what = `queue ${this.qid}: command 0x${slot.cid.toString(16)}, ${name}, timed out after ${t} ms`;
        // Like Linux error recovery: a timed-out command means the queue state is
        // unknown, so every other command on it fails too; nothing is resent here.
        const culprit = { slot, err: new HostError('timeout', what, true) };
        this.failWith(new HostError('transport', `${what}; queue torn down`), false, culprit);
        return Infinity;
      }
    }
    return due;
  }

  /** Fail the queue: every command in flight or waiting ends with `err`. Idempotent. */
  fail(err: HostError, flush = false): void {
    this.failWith(err, flush, null);
  }

  /**
   * The one way a queue fails. The queue leaves 'live' before any command's callback
   * runs, so a callback that submits again is refused (never sent) instead of sending on
   * a connection that is being torn down, after our TermReq even. So does its controller:
   * `onFailed` is told before the commands end, so a caller that resends a failed
   * command (multipath) already sees this path out of service and picks another, instead
   * of the same controller whose queue refuses at once. `culprit` is the command that
   * caused the failure (timeout, protocol error): it ends first, with its own error.
   */
  private failWith(err: HostError, flush: boolean, culprit: Culprit | null): void {
    if (this.sm.is('failed', 'closed')) return;
    this.sm.transition('failed');
    this.failure = err;
    const opened = this.opened;
    this.opened = null;
    if (!opened) this.opts.onFailed?.(err);
    this.teardown(err, flush, culprit, (req) => this.failedBeforeSent(req, err));
    opened?.reject(err);
  }

  /**
   * What a command still waiting for a free slot when the queue failed with `err` ends
   * with: it was never sent, as close() says of its own. Same kind and cause as `err`,
   * so it is sent again after a reconnect as before (NvmeNamespace.resendable, a write
   * too: maybeExecuted false).
   */
  private failedBeforeSent(req: NvmeRequest, err: HostError): HostError {
    const name = commandName(req, this.qid === 0);
    const msg = `queue ${this.qid} failed before ${name} was sent (${NEVER_SENT}): ${err.message}`;
    return new HostError(err.kind, msg, false, { cause: err.cause });
  }

  /** Close: commands still in flight or waiting end with a 'closed' error. */
  close(): Promise<void> {
    if (this.sm.is('failed', 'closed')) return Promise.resolve();
    this.sm.transition('closed');
    const closed = new Promise<void>((resolve) => {
      if (this.sock.destroyed) return resolve();
      this.sock.once('close', () => resolve());
    });
    // A command in flight may have been executed; one waiting for a slot was never sent.
    const why = `queue ${this.qid} closed`;
    const notSent = new HostError('closed', `${why} before the command was sent (${NEVER_SENT})`);
    const inFlight = new HostError('closed', `${why} with the command in flight`);
    this.teardown(inFlight, true, null, () => notSent.forCommand(false));
    this.opened?.reject(new HostError('connect', `queue ${this.qid} closed while connecting`));
    this.opened = null;
    return closed;
  }

  /**
   * Stop everything; `graceful` flushes queued bytes and sends FIN before closing, when
   * the kernel takes them all at once (else the socket is destroyed: see there).
   */
  private teardown(
    err: HostError,
    graceful: boolean,
    culprit: Culprit | null,
    /** A new error for each command waiting for a slot (never sent, maybeExecuted false). */
    notSent: (req: NvmeRequest) => HostError,
  ): void {
    if (this.scanTimer) clearTimeout(this.scanTimer);
    this.scanTimer = null;
    this.nextScanAt = Infinity;
    this.parser.halt();
    if (graceful) {
      // Send what this turn queued now (the TermReq too), then close gracefully only
      // if the kernel took every byte. Bytes still queued in Node or libuv can be
      // views of callers' write buffers (H2CData and in-capsule data go out without a
      // copy), and their commands fail below: their owners may reuse the buffers at
      // once, and sending those bytes later would hand a target's open R2T whatever
      // the buffers hold by then. So then the socket is destroyed, which drops them
      // (and the TermReq, a courtesy).
      if (this.corked) this.uncork();
      graceful = this.sock.writableLength === 0;
    }
    if (graceful) {
      this.sock.end();
      // A peer that never closes its side must not keep the socket half-open forever.
      setTimeout(() => this.sock.destroy(), 1000).unref();
    } else {
      // RST, not FIN: the kernel drops what it had not sent yet. Closed the usual way it
      // would go on sending those bytes, and after a network partition heals a command
      // this host has given up could still reach the old controller (multipath-path.ts).
      // (Still connecting, nothing was sent: resetAndDestroy would only wait for the
      // connect, keeping the socket and the process alive until the kernel gives up.)
      if (this.sock.connecting) this.sock.destroy();
      else this.sock.resetAndDestroy();
    }
    // Writes the controller answered while their data still waited here: that data is
    // dropped now. An error answer stands; success cannot (the controller never got the
    // data), so such a write fails below like the rest, as maybe executed.
    for (const slot of this.slots) {
      if (slot.answered > 0 && slot.req) this.completeSlot(slot, slot.answered);
    }
    if (culprit?.slot.req) this.failSlot(culprit.slot, culprit.err);
    for (const slot of this.slots) if (slot.req) this.failSlot(slot, err.forCommand(true));
    for (const req of this.waiting.drain()) finish(req, notSent(req));
  }
}

/** What an error says of a command that never left this host. */
const NEVER_SENT = 'never sent: the target did not get it';

/**
 * How late after its deadline a command of `timeoutMs` may end (the timeout scan's
 * granularity): a quarter of its timeout, from 20 ms to 1 s.
 */
function scanSlack(timeoutMs: number): number {
  return Math.min(1000, Math.max(20, Math.floor(timeoutMs / 4)));
}

/** A port a TCP connect can reach: an integer 1..65535 (0 is no port to connect to). */
export function isTcpPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535;
}

function finish(req: NvmeRequest, err: HostError): void {
  req.error = err;
  callDone(req);
}

function makeSlots(depth: number, hdgst: boolean, flushed: (slot: Slot) => void): Slot[] {
  // One slab for all slot headers: depth small buffers would cost depth allocations.
  const slab = Buffer.alloc(depth * SLOT_HEADER_BYTES);
  const headLen = hdgst ? 76 : 72;
  const slots: Slot[] = [];
  for (let i = 0; i < depth; i++) {
    const buf = slab.subarray(i * SLOT_HEADER_BYTES, (i + 1) * SLOT_HEADER_BYTES);
    const slot: Slot = {
      buf,
      head: buf.subarray(0, headLen),
      ddgst: ddgstView(buf),
      req: null,
      cid: 0,
      inCapsule: false,
      received: 0,
      r2tEnd: 0,
      sent: 0,
      unflushed: 0,
      answered: -1,
      flushed: () => flushed(slot),
      gather: null,
      ddgstBad: false,
      reserved: false,
      deadline: 0,
    };
    slots.push(slot);
  }
  return slots;
}
