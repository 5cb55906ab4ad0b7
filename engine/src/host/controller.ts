/**
 * NvmeController: an NVMe/TCP host's view of one controller. It owns the current
 * Association (admin + I/O queues, which sends Keep Alive every KATO/2), listens
 * for asynchronous events, and on failure either stops ('dead') or reconnects after a
 * delay until a loss timeout, the way the Linux host's error recovery does. In-flight
 * commands of a failed association end with a HostError; the controller resends only
 * what its caller hands back through submitIoAfter() (NvmeNamespace: reads, compares and
 * flushes, never writes), once it is live again. I/O submitted while it reconnects was
 * never sent, so it is held and sent once the controller is live again (a write too), as
 * Linux requeues it: at most the command's timeout and fastIoFailMs (resend.ts).
 *
 * I/O goes through submitIo() (callbacks, reusable requests) or the promise helpers on
 * NvmeNamespace (namespace.ts).
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { ADMIN, AEN_BIT, DISCOVERY_NQN, FID, LID, NSID_ALL } from '../protocol/opcodes.js';
import * as admin from './admin.js';
import { anaLogReadLength, type AnaPathState } from './ana-log.js';
import { AnaStates, anaChangeLimitMs, type AnaWait } from './ana-state.js';
import { Association, type AssociationParams } from './association.js';
import {
  fillAsyncEventRequest,
  fillKeepAlive,
  type FeatureParams,
  type LogPageParams,
} from './commands.js';
import { HostError, NamespaceFormatError, NamespaceNotActiveError } from './errors.js';
import { execute, type Submitter } from './execute.js';
import { NvmeNamespace } from './namespace.js';
import { MAX_TIMER_MS, timerRefusal } from './queue.js';
import { NO_TIMEOUT, NvmeRequest } from './request.js';
import { callDone, callUser } from './callback.js';
import { Resends, type Held } from './resend.js';
import { StateMachine } from './state.js';

export interface ReconnectOptions {
  /** Wait between attempts, ms (Linux reconnect_delay: 10 s). */
  readonly delayMs: number;
  /**
   * Give up this long after the association was lost, ms (Linux ctrl_loss_tmo: 600 s). An
   * association connected meanwhile ends it only once a Keep Alive is answered on it (at
   * once with KATO 0): a target that takes the connection but refuses (or never answers)
   * every Keep Alive is given up too. reconnect() from 'new' or 'dead' starts it afresh.
   */
  readonly lossTimeoutMs: number;
}

export interface AsyncEvent {
  /** AER dw0 as completed (facts §4.4: type 2:0, info 15:8, log page 23:16). */
  readonly dw0: number;
  readonly type: number;
  readonly info: number;
  readonly lid: number;
  /** The log page the event names, read with RAE=0 (which re-enables the event), or null
   * when the page is not one the library reads (or reading it failed). A read the admin
   * queue had no room for ('busy') is tried again, and the event delivered once more
   * with its log when that succeeds. */
  readonly log: Buffer | null;
}

export interface ControllerOptions {
  readonly host: string;
  readonly port: number;
  readonly subnqn: string;
  /** Default: nqn.2014-08.org.nvmexpress:uuid:<hostid>. */
  readonly hostnqn?: string;
  /** 16-byte host identifier or UUID text; default a random UUID. Keep it stable per host. */
  readonly hostid?: Buffer | string;
  readonly hdgst?: boolean;
  readonly ddgst?: boolean;
  /** I/O queues wanted (default 1); the controller may grant fewer. */
  readonly ioQueues?: number;
  /** I/O queue entries (default 128, Linux's default); clamped to CAP.MQES+1, MAXCMD,
   * and at least 2. A queue of N entries has N - 1 commands in flight at most. */
  readonly queueSize?: number;
  /** Keep-alive timeout, ms (default 5000, 30000 for a discovery controller; 0 = none; a
   * whole number up to 2^32 - 1, as the Connect carries it). Keep Alive is sent every
   * KATO/2.
   * setFeatures(FID.KATO) changes it, for the next associations too. */
  readonly kato?: number;
  /** Refuse to turn keep-alive off: setFeatures(FID.KATO) with 0 fails before it is
   * sent. A multipath path sets it: its fencing relies on the target dropping a
   * controller it lost touch with once KATO runs out. */
  readonly requireKeepAlive?: boolean;
  readonly connectTimeoutMs?: number;
  /** Admin command timeout (default 60000) and I/O command timeout (default 30000), ms. */
  readonly adminTimeoutMs?: number;
  readonly ioTimeoutMs?: number;
  /** Commands that may wait per queue for a free slot (default 65536). */
  readonly maxWaiting?: number;
  /**
   * Ask the controller not to flow-control I/O submission queues (Connect CATTR bit 2),
   * so successful reads need no CapsuleResp (default true; nvmet and SPDK accept it).
   */
  readonly disableSqFlow?: boolean;
  /** Largest single transfer the library accepts (default 8 MiB; MDTS also applies). */
  readonly maxTransferBytes?: number;
  /** Reconnect automatically after a failure (default: off, the controller goes 'dead'). */
  readonly reconnect?: ReconnectOptions | false;
  /**
   * I/O submitted while the controller reconnects (no association, one being built or
   * to be) is held and sent once it is live again, each command at most its timeout
   * (ioTimeoutMs, or its own). This bounds the holding as Linux's fast_io_fail_tmo
   * does: once the controller has been reconnecting this long since it lost its
   * association, held I/O fails and new I/O is refused at once until it is live again.
   * Default Infinity: held until reconnecting gives up ('dead'). 0: refused at once (as
   * a multipath path does: its namespace sends the command to another path instead).
   */
  readonly fastIoFailMs?: number;
  readonly onAsyncEvent?: (ev: AsyncEvent) => void;
  readonly onStateChange?: (next: ControllerState, prev: ControllerState, why?: Error) => void;
  /** Internal: a discovery controller (no I/O queues, no Identify checks for I/O). */
  readonly discovery?: boolean;
}

/** Controller states. */
export type ControllerState =
  /** Constructed; nothing on the wire yet. */
  | 'new'
  /** Building an association: admin queue, bring-up, I/O queues. */
  | 'connecting'
  /** Association up; commands accepted. */
  | 'live'
  /** Association lost; waiting to reconnect (automatic reconnect on). */
  | 'recovering'
  /** Association lost and no (more) automatic reconnect; reconnect() may revive it. */
  | 'dead'
  /** close() in progress. */
  | 'deleting'
  /** Closed. Terminal. */
  | 'closed';

/** How long one connect attempt may take when the options give no connectTimeoutMs. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** KATO of an I/O controller when the options give none (Linux's NVME_DEFAULT_KATO). */
export const DEFAULT_KATO_MS = 5000;
/**
 * KATO of a discovery controller when the options give none: nvme-cli's for one it keeps
 * (--persistent). With 0, as Linux connects one it reads once and lets go (discover()
 * does that), the target still keeps a timer (nvmet and ours: 120 s) and drops a
 * controller held for its discovery-change events once that runs out.
 */
export const DISCOVERY_KATO_MS = 30_000;
/** The largest KATO there is: the Connect command carries it as 32 bits of ms. */
export const MAX_KATO_MS = 0xffff_ffff;

const CONTROLLER_STATES: Record<ControllerState, readonly ControllerState[]> = {
  new: [],
  connecting: ['new', 'live', 'recovering', 'dead'],
  live: ['connecting'],
  recovering: ['live', 'connecting'],
  dead: ['live', 'connecting', 'recovering'],
  deleting: ['new', 'connecting', 'live', 'recovering', 'dead'],
  closed: ['deleting'],
};

/** Events the library asks for when the controller offers them (OAES). */
const NO_CRDT: readonly number[] = [0, 0, 0];
const AEN_MASK = (1 << AEN_BIT.NS_ATTR) | (1 << AEN_BIT.ANA_CHANGE) | (1 << AEN_BIT.DISC_CHANGE);

export class NvmeController implements Submitter {
  readonly hostnqn: string;
  readonly hostid: Buffer;
  /** Replaced (kato) after a Set Features KATO: the next associations connect with it. */
  private params: AssociationParams;
  private readonly sm: StateMachine<ControllerState>;
  private assoc: Association | null = null;
  private connecting: Promise<void> | null = null;
  /** Aborts the association being established by the attempt in progress (close()). */
  private cancelAttempt: (() => void) | null = null;
  private rr = 0;
  private retryTimer: NodeJS.Timeout | null = null;
  /** See keepAliveCeilingMs. */
  private katoCeiling = 0;
  /**
   * When the controller lost the last association it kept (one on which a Keep Alive
   * was answered), or, with none kept since connect or reconnect() from 'new' or 'dead',
   * its first association or attempt since: the loss timeout runs from it. 0 while the
   * current association is kept, or none has been lost since.
   */
  private lostAt = 0;
  /** An association was kept since connect or reconnect() from 'new' or 'dead'. */
  private keptOne = false;
  /** Associations connected since the last one kept (or since connect / reconnect() from
   * 'new' or 'dead') that had no Keep Alive answered, for the message at 'dead'. */
  private unkept = 0;
  /** Why the controller stopped reconnecting, while it is 'dead' after reconnecting. */
  private gaveUp = '';
  /** Why the last association was lost (for messages of commands refused meanwhile). */
  private lastError: Error | null = null;
  /** I/O commands held: sent again after a delay or a reconnect, or waiting for one. */
  private readonly resends = new Resends(
    (req, queue, again) => this.sendIo(req, queue, again),
    (h) => this.heldTooLong(h),
  );
  /** Runs from the loss of an association while the controller reconnects (fastIoFailMs). */
  private failFastTimer: NodeJS.Timeout | null = null;
  /** fastIoFailMs ran out: I/O fails at once until the controller is live again. */
  private failFast = false;
  /** Each namespace's ANA state as the latest log read says (anaState, anaSettled). */
  private readonly anaStates = new AnaStates(
    () => admin.getAnaLog(this, this.identity),
    () => this.assoc?.identity.anagrpmax ?? 0,
    () => this.anaChangeLimitMs,
    (why) => this.reset(why),
  );

  constructor(private readonly opts: ControllerOptions) {
    checkKato(opts);
    checkTimers(opts);
    this.hostid = toHostId(opts.hostid);
    this.hostnqn =
      opts.hostnqn ?? `nqn.2014-08.org.nvmexpress:uuid:${admin.formatUuid(this.hostid)}`;
    const discovery = opts.discovery ?? opts.subnqn === DISCOVERY_NQN;
    this.params = {
      host: opts.host,
      port: opts.port,
      subnqn: opts.subnqn,
      hostnqn: this.hostnqn,
      hostid: this.hostid,
      hdgst: opts.hdgst ?? false,
      ddgst: opts.ddgst ?? false,
      kato: opts.kato ?? (discovery ? DISCOVERY_KATO_MS : DEFAULT_KATO_MS),
      ioQueues: discovery ? 0 : (opts.ioQueues ?? 1),
      queueSize: opts.queueSize ?? 128,
      connectTimeoutMs: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      adminTimeoutMs: opts.adminTimeoutMs ?? 60_000,
      ioTimeoutMs: opts.ioTimeoutMs ?? 30_000,
      disableSqFlow: opts.disableSqFlow ?? true,
      maxWaiting: opts.maxWaiting ?? 65536,
      maxDataLength: opts.maxTransferBytes ?? 8 * 1024 * 1024,
      discovery,
    };
    // A throwing callback must not stop a transition's work (onQueueFailed, afterLoss).
    this.sm = new StateMachine('controller', 'new', CONTROLLER_STATES, (next, prev) => {
      this.watchFailFast();
      callUser('onStateChange', opts.onStateChange, next, prev, this.lastError ?? undefined);
    });
  }

  /** Connect and bring the controller up; throws a HostError of kind 'connect'. */
  static async connect(opts: ControllerOptions): Promise<NvmeController> {
    const c = new NvmeController(opts);
    try {
      await c.reconnect();
    } catch (e) {
      await c.close();
      throw e;
    }
    return c;
  }

  get state(): ControllerState {
    return this.sm.state;
  }

  private live(): Association {
    if (!this.sm.is('live') || !this.assoc) {
      const why = this.lastError ? `: ${this.lastError.message}` : '';
      throw new HostError('not-connected', `controller is ${this.sm.state}${why}`);
    }
    return this.assoc;
  }

  /** Controller id of the current association. */
  get cntlid(): number {
    return this.live().cntlid;
  }
  /** Identify Controller of the current association. */
  get identity(): admin.ControllerIdentity {
    return this.live().identity;
  }
  get vs(): number {
    return this.live().vs;
  }
  get cap(): Association['cap'] {
    return this.live().cap;
  }
  /** I/O queues granted and connected. */
  get ioQueueCount(): number {
    return this.assoc?.io.length ?? 0;
  }
  /** Commands in flight per I/O queue at most: its entries - 1 (the Connect SQSIZE). */
  get ioQueueDepth(): number {
    return this.assoc?.io[0]?.depth ?? 0;
  }

  /** Commands in flight and waiting per I/O queue (for load reporting and tests). */
  get ioQueueLoad(): { inFlight: number; queued: number }[] {
    return (this.assoc?.io ?? []).map((q) => ({ inFlight: q.inFlight, queued: q.queued }));
  }

  /** Command Retry Delay Times CRDT1..3 of the current association (100 ms units), for
   * the CRD of a retryable status (status-retry.ts); none while there is no association. */
  get crdt(): readonly number[] {
    return this.assoc?.identity.crdt ?? NO_CRDT;
  }

  /** Default I/O command timeout, ms (0 or Infinity: none); a request's timeoutMs overrides it. */
  get ioTimeoutMs(): number {
    return this.params.ioTimeoutMs;
  }

  /** Largest transfer one command may carry: MDTS and maxTransferBytes. */
  get maxTransferBytes(): number {
    const mdts = this.assoc?.identity.maxTransferBytes ?? 0;
    return mdts === 0 ? this.params.maxDataLength : Math.min(mdts, this.params.maxDataLength);
  }

  // ---- command submission ----

  /**
   * Admin command (Submitter interface): outcome via req.onDone. Throws only for a
   * caller's mistake: a Set Features turning keep-alive off with requireKeepAlive.
   */
  submit(req: NvmeRequest): void {
    if (!this.sm.is('live') || !this.assoc) return this.refuse(req);
    // The command carries the FID's low 8 bits (fillSetFeatures): 0x10F sets KATO too.
    if (req.opcode === ADMIN.SET_FEATURES && (req.cdw10 & 0xff) === FID.KATO) {
      return this.submitKato(req, this.assoc);
    }
    if (req.opcode === ADMIN.KEEP_ALIVE) return this.submitKeepAlive(req, this.assoc);
    this.assoc.admin.submit(req);
  }

  /**
   * A Keep Alive of the caller's (keepAlive(), execute(), submit()): answered with
   * success, it proves the controller keeps this association as the timer's own do
   * (the loss timeout starts again once it is lost), rather than waiting for the timer's
   * first one at KATO/2.
   */
  private submitKeepAlive(req: NvmeRequest, a: Association): void {
    this.submitAdmin(req, a, () => a.keepAlive.noteAnswered());
  }

  /** `req` on `a`'s admin queue; `succeeded` runs before its own onDone once it succeeds. */
  private submitAdmin(req: NvmeRequest, a: Association, succeeded: () => void): void {
    const done = req.onDone;
    req.onDone = (r) => {
      r.onDone = done;
      if (!r.error && r.status === 0) succeeded();
      done(r);
    };
    a.admin.submit(req);
  }

  /**
   * Set Features KATO, whichever way it is sent (setFeatures(), execute(), submit()): a
   * successful one also moves the host's Keep Alive to the new timeout, as Linux's
   * nvme_update_keep_alive does (on the old period a lowered KATO would expire between
   * two Keep Alives), and the next associations connect with it.
   */
  private submitKato(req: NvmeRequest, a: Association): void {
    const kato = req.cdw11 >>> 0;
    if (kato === 0 && this.opts.requireKeepAlive) {
      throw new Error(
        `controller ${this.opts.host}:${this.opts.port}: KATO 0 (no keep-alive) refused: this ` +
          `controller is a multipath path, and without keep-alive its target never drops it ` +
          `when the path is lost, so nothing could prove a write sent there will not land ` +
          `later. Give it a KATO above 0.`,
      );
    }
    // Once sent it may be in force, answered or not: the ceiling grows before.
    if (kato > this.katoCeiling) this.katoCeiling = kato;
    this.submitAdmin(req, a, () => {
      // Unless it went to an association that is gone: the new one has the old KATO.
      if (this.assoc !== a) return;
      this.params = { ...this.params, kato };
      a.keepAlive.start(kato);
      // No Keep Alive will be answered on it now: the controller took the command.
      if (kato === 0) this.recovered();
    });
  }

  /**
   * I/O command on I/O queue `queue` (index 0..ioQueueCount-1), or round robin.
   * Never throws; the outcome arrives in req.onDone. While the controller reconnects it
   * is held and sent once the controller is live again (never sent before, a write is as
   * safe to send then as now), at most its timeout and fastIoFailMs; close() ends it at
   * once as 'closed', giving up reconnecting as 'not-connected'. Refused at once when
   * the controller is neither live nor reconnecting.
   */
  submitIo(req: NvmeRequest, queue = -1): void {
    // Counted from now, whatever it waits for before it is sent (NvmeRequest.deadline).
    const t = this.timeoutOf(req);
    req.deadline = t === Infinity ? 0 : performance.now() + t;
    this.sendIo(req, queue, false);
  }

  /** submitIo() of a command sent before (`again`) or not. */
  private sendIo(req: NvmeRequest, queue: number, again: boolean): void {
    const a = this.assoc;
    if (this.sm.is('live') && a && a.io.length > 0) {
      const i = queue >= 0 ? queue % a.io.length : this.rr++ % a.io.length;
      return a.io[i]!.submit(req);
    }
    if (!this.holdsIo()) return this.refuse(req);
    if (this.resends.size >= this.params.maxWaiting) {
      req.error = new HostError(
        'busy',
        `${this.notLive().message}; ${this.params.maxWaiting} commands already wait for it ` +
          `to reconnect (maxWaiting), so this one was not sent: send it again once the ` +
          `controller is live, or raise maxWaiting`,
      );
      return callDone(req);
    }
    // Never sent yet, it keeps its deadline; sent before, it gets its whole timeout again.
    const bound = req.deadline !== 0 ? req.deadline - performance.now() : this.timeoutOf(req);
    this.resends.untilLive(req, queue, again, Math.max(0, bound), this.timeoutOf(req));
  }

  /** I/O submitted now is held for the reconnect (submitIo). */
  private holdsIo(): boolean {
    return this.reconnecting && !this.failFast && this.opts.fastIoFailMs !== 0;
  }

  /** A command's timeout, ms: its own, else ioTimeoutMs; Infinity for none. */
  private timeoutOf(req: NvmeRequest): number {
    const t = req.timeoutMs < 0 ? this.params.ioTimeoutMs : req.timeoutMs;
    return t === NO_TIMEOUT ? Infinity : t;
  }

  /** What a command held for the reconnect longer than its timeout ends with. */
  private heldTooLong(h: Held): HostError {
    const sent = h.again ? 'not sent again' : 'not sent';
    return new HostError(
      'not-connected',
      `${this.notLive().message}; the command waited for it to reconnect until its timeout ` +
        `(${h.timeoutMs} ms) ran out and was ${sent}: check the connection to the target, ` +
        `then send it again`,
    );
  }

  /**
   * fastIoFailMs: runs from the loss of an association for as long as the controller
   * reconnects; ends (and I/O is held again from the next loss on) once it is live, dead
   * or closing. Called on every state change.
   */
  private watchFailFast(): void {
    if (!this.reconnecting) {
      if (this.failFastTimer) clearTimeout(this.failFastTimer);
      this.failFastTimer = null;
      this.failFast = false;
      return;
    }
    const ms = this.opts.fastIoFailMs ?? Infinity;
    if (this.failFast || this.failFastTimer || ms === 0 || ms > MAX_TIMER_MS) return;
    this.failFastTimer = setTimeout(() => {
      this.failFastTimer = null;
      if (!this.reconnecting) return;
      this.failFast = true;
      this.resends.failWaiting(() => this.notLive());
    }, ms);
  }

  /**
   * submitIo() of a command sent before, once `delayMs` have passed (an I/O command sent
   * again after a status's retry delay, status-retry.ts), or, with no delay, now: held
   * as submitIo() holds it while the controller reconnects (a command whose association
   * was lost under it: NvmeNamespace sends only those that change no data so). Until
   * then the controller holds it (resend.ts): close() ends it at once as 'closed', as it
   * ends the commands still waiting for a slot, and a controller that gives up
   * reconnecting ('dead') as 'not-connected'.
   */
  submitIoAfter(req: NvmeRequest, delayMs: number, queue = -1): void {
    if (delayMs > 0 && !this.sm.is('deleting', 'closed')) this.resends.after(req, delayMs, queue);
    else this.sendIo(req, queue, true);
  }

  /** No association, and one is being built or will be (automatic reconnect). */
  get reconnecting(): boolean {
    return this.sm.is('recovering', 'connecting');
  }

  /**
   * The ANA state of namespace `nsid` as an ANA log read issued now says (a command was
   * answered with ANA Transition: NvmeNamespace), or null when the controller reports no
   * ANA (CMIC bit 3 clear) or is not live. Rejects when the read fails.
   */
  anaState(nsid: number): Promise<AnaPathState> | null {
    if (!this.sm.is('live') || !this.assoc || (this.assoc.identity.cmic & 0x08) === 0) {
      return null;
    }
    return this.anaStates.fresh(nsid);
  }

  /**
   * Resolves with namespace `nsid`'s ANA state once a log read since (the ANA change
   * event's, or one on the next association) gives its group a state other than change,
   * or with 'change' after `ms`; past twice ANATT in change the controller is reset
   * meanwhile, as Linux resets it (AnaStates.settled). The controller holds the waiter:
   * close() ends it at once as 'closed', and giving up reconnecting as 'not-connected';
   * so does a controller that is neither live nor reconnecting when it is called (the
   * association lost, with no reconnect, in the chunk that completed the log read).
   */
  anaSettled(nsid: number, ms: number): Promise<AnaWait> {
    if (!this.sm.is('live') && !this.reconnecting) return Promise.reject(this.anaWaitEnded());
    return this.anaStates.settled(nsid, ms);
  }

  /** What a command waiting for its ANA group to leave change ends with when the
   * controller closes or reconnects no more. */
  private anaWaitEnded(): HostError {
    if (this.sm.is('deleting', 'closed')) {
      return new HostError(
        'closed',
        'controller closed while the command waited for its ANA group to leave change (not sent again)',
      );
    }
    return new HostError(
      'not-connected',
      `${this.notLive().message}; it lost its association while the command waited for ` +
        `its ANA group to leave change, and reconnects no more (not sent again): check the ` +
        `connection to the target, reconnect() the controller, then send it again`,
    );
  }

  /** How long a group may stay in change before the host resets the controller: 2 x ANATT, ms. */
  get anaChangeLimitMs(): number {
    return anaChangeLimitMs(this.assoc?.identity.anatt ?? 0);
  }

  /** Promise form of submitIo for one command. */
  io(req: NvmeRequest, what: string, queue = -1): Promise<NvmeRequest> {
    return execute({ submit: (r) => this.submitIo(r, queue) }, req, what);
  }

  private refuse(req: NvmeRequest): void {
    req.error = this.notLive();
    callDone(req);
  }

  /** What a command the controller cannot take now ends with. */
  private notLive(): HostError {
    const closed = this.sm.is('deleting', 'closed');
    const why = this.lastError && !closed ? `: ${this.lastError.message}` : '';
    const fast = this.failFast
      ? `; it has been reconnecting for longer than fastIoFailMs (${this.opts.fastIoFailMs} ` +
        `ms), so I/O fails at once until it is live again (not sent): check the connection ` +
        `to the target, then send it again once it is live, or raise fastIoFailMs`
      : '';
    const gaveUp = this.gaveUp && this.sm.is('dead') ? `; ${this.gaveUp}` : '';
    return new HostError(
      closed ? 'closed' : 'not-connected',
      `controller is ${this.sm.state}${why}${fast}${gaveUp}`,
    );
  }

  // ---- admin helpers ----

  identifyController(): Promise<admin.ControllerIdentity> {
    return admin.identifyController(this);
  }
  identifyNamespace(nsid: number): Promise<admin.NamespaceIdentity> {
    return admin.identifyNamespace(this, nsid);
  }
  nsDescriptors(nsid: number): Promise<admin.NamespaceIds> {
    return admin.identifyNsDescriptors(this, nsid);
  }
  activeNamespaces(): Promise<number[]> {
    return admin.activeNamespaces(this);
  }
  getLogPage(p: LogPageParams): Promise<Buffer> {
    return admin.getLogPage(this, p);
  }
  /** The ANA log, in pieces if it is longer than MDTS (admin.getAnaLog). */
  getAnaLog(): Promise<Buffer> {
    return this.anaStates.read(() => admin.getAnaLog(this, this.identity));
  }
  getFeatures(fid: number, p?: FeatureParams): Promise<admin.FeatureResult> {
    return admin.getFeatures(this, fid, p);
  }
  /** Set Features; a KATO (0x0F) is followed as submit() says (submitKato). */
  setFeatures(fid: number, p?: FeatureParams): Promise<admin.FeatureResult> {
    return admin.setFeatures(this, fid, p);
  }

  /**
   * The largest KATO (ms) the controller of the current association, or of the last one
   * lost, may be running with: the one its Connect gave, or a larger one a Set Features
   * sent since, answered or not. How long a target that lost touch may keep it.
   */
  get keepAliveCeilingMs(): number {
    return this.katoCeiling;
  }
  /** One Keep Alive now, besides the timer's; answered, it proves as much as theirs (submit()). */
  async keepAlive(): Promise<void> {
    await execute(this, fillKeepAlive(new NvmeRequest()), 'keep alive');
  }

  /** Identify a namespace (CNS 0, plus CNS 3 when VS >= 1.3) and return an I/O handle. */
  async namespace(nsid: number): Promise<NvmeNamespace> {
    const id = await this.identifyNamespace(nsid);
    if (!id.active) throw new NamespaceNotActiveError(nsid);
    if (id.blockSize === 0) {
      throw new NamespaceFormatError(id, `namespace ${nsid}: unusable LBADS ${id.lbads}`);
    }
    if (id.ms) {
      // Every block would carry ms more bytes than blockSize on the wire (NVMe-oF has
      // only extended LBAs), so each transfer length would be wrong. Linux gives such a
      // namespace capacity 0 over TCP.
      const why = `${id.ms} bytes of metadata per block (unsupported)`;
      throw new NamespaceFormatError(id, `namespace ${nsid}: ${why}`);
    }
    const ids = this.vs >= 0x10300 ? await this.nsDescriptors(nsid).catch(noDescriptors) : {};
    return new NvmeNamespace(this, id, ids);
  }

  // ---- association lifecycle ----

  /** reconnect() of a live controller, for `why` (its commands in flight fail saying so). */
  private reset(why: string): void {
    if (!this.sm.is('live')) return;
    this.lastError = new Error(why);
    this.reconnect().catch(() => {});
  }

  /**
   * Tear down the current association (if any) and build a new one. In-flight commands
   * of the old one fail with a 'transport' HostError. Concurrent calls share one attempt.
   */
  reconnect(): Promise<void> {
    if (this.connecting) return this.connecting;
    // Called from a command's callback while an attempt fails the old association (it
    // has not handed out its promise yet): join that attempt once it has.
    if (this.sm.is('connecting')) return Promise.resolve().then(() => this.reconnect());
    if (this.sm.is('deleting', 'closed')) {
      return Promise.reject(new HostError('closed', 'controller is closed'));
    }
    if (this.sm.is('new', 'dead')) {
      // Asked for by the caller: the loss timeout starts again.
      this.lostAt = this.unkept = 0;
      this.keptOne = false;
    }
    this.gaveUp = '';
    this.connecting = this.attempt().finally(() => (this.connecting = null));
    return this.connecting;
  }

  private async attempt(): Promise<void> {
    this.clearTimers();
    const old = this.assoc;
    this.assoc = null;
    // State first: the callbacks of the commands failed below see 'connecting'.
    this.sm.transition('connecting');
    const why = this.lastError
      ? `controller reset: ${this.lastError.message}`
      : 'controller reconnecting';
    if (old) this.anaStates.lost(why);
    old?.failAll(new HostError('transport', why));
    // A failed command's callback may have closed the controller meanwhile.
    if (!this.sm.is('connecting')) {
      throw new HostError('closed', 'controller closed while reconnecting');
    }
    let a: Association | null = null;
    this.katoCeiling = this.params.kato; // the Connect about to go out carries it
    const ac = new AbortController();
    this.cancelAttempt = () => ac.abort();
    try {
      a = await Association.establish(this.params, (e) => a && this.onQueueFailed(a, e), ac.signal);
    } catch (e) {
      this.lastError = e as Error;
      if (this.sm.is('connecting')) this.afterLoss();
      throw e;
    } finally {
      this.cancelAttempt = null;
    }
    if (!this.sm.is('connecting')) {
      // close() came in meanwhile.
      a.failAll(new HostError('closed', 'controller closed while connecting'));
      throw new HostError('closed', 'controller closed while connecting');
    }
    this.assoc = a;
    this.lastError = null;
    // Recovered once the controller keeps it: a target may take the connection and then
    // refuse every Keep Alive (each association ending at its first one, KATO/2 in).
    this.unkept++;
    if (this.params.kato === 0) this.recovered();
    else a.keepAlive.whenAnswered(() => this.assoc === a && this.recovered());
    this.sm.transition('live');
    this.anaStates.newAssociation();
    this.resends.release();
    void this.armEvents(a);
  }

  private onQueueFailed(a: Association, err: HostError): void {
    if (this.assoc !== a || !this.sm.is('live')) return;
    this.lastError = err;
    this.clearTimers();
    this.assoc = null;
    this.anaStates.lost(err.message);
    // Error recovery: one failed queue takes the whole association down. The state
    // moves first, so the callbacks of the commands failed below see the controller
    // recovering (or dead), never 'live' without an association. They may call close()
    // or reconnect(); the controller then moves on from there.
    this.afterLoss();
    a.failAll(new HostError('transport', `controller error recovery: ${err.message}`));
  }

  /** The current association is one the controller keeps: the loss timeout ends. */
  private recovered(): void {
    this.lostAt = this.unkept = 0;
    this.keptOne = true;
  }

  /** After a lost association or a failed attempt: schedule a retry, or go dead. */
  private afterLoss(): void {
    const rc = this.opts.reconnect;
    const now = performance.now();
    if (this.lostAt === 0) this.lostAt = now;
    if (!rc || now - this.lostAt + rc.delayMs > rc.lossTimeoutMs) {
      if (rc) this.gaveUp = this.gaveUpWhy(rc);
      this.sm.transition('dead');
      const gaveUp = new HostError(
        'not-connected',
        `${this.notLive().message}; it reconnects no more, so the command was not sent: ` +
          `check the connection to the target, reconnect() the controller, then send it again`,
      );
      this.resends.failAll(() => gaveUp);
      this.anaStates.failAll(this.anaWaitEnded());
      return;
    }
    this.sm.transition('recovering');
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      if (this.sm.is('recovering')) this.reconnect().catch(() => {});
    }, rc.delayMs);
  }

  /** Why a controller that reconnected by itself stopped, for the errors from then on. */
  private gaveUpWhy(rc: ReconnectOptions): string {
    const n = this.unkept;
    const since = this.keptOne
      ? 'since it lost the last association on which a Keep Alive was answered'
      : 'since it lost its first association (or failed its first attempt) after connect or reconnect()';
    const unkept =
      n === 0
        ? ''
        : `; the ${n === 1 ? 'association' : `${n} associations`} connected since ` +
          `${this.keptOne ? 'that one' : 'connect or reconnect()'} ended before a Keep Alive ` +
          `was answered on ${n === 1 ? 'it' : 'any'} (check the target's log for why)`;
    return (
      `it gave up reconnecting: reconnect.lossTimeoutMs (${rc.lossTimeoutMs} ms) ran out ` +
      `${since}${unkept}`
    );
  }

  /** Enable the events we understand and keep one Async Event Request outstanding. */
  private async armEvents(a: Association): Promise<void> {
    const mask = (a.identity.oaes & AEN_MASK) >>> 0;
    if (mask === 0) return;
    const enable = () => admin.setFeatures(a.admin, FID.ASYNC_EVENT, { cdw11: mask });
    try {
      await enable();
    } catch (e) {
      // Refused: Linux tolerates this too (no events, everything else works). Not sent
      // for want of an admin slot is no refusal: without it no event would ever come
      // on this association (a multipath's namespace-changed check among them).
      if (!isBusy(e) || (await this.whenRoom(a, enable)) === null) return;
    }
    const req = new NvmeRequest();
    const arm = () => {
      if (this.assoc !== a) return;
      fillAsyncEventRequest(req.reset());
      req.onDone = (r) => {
        // Non-success (nvmet fails it at teardown) or transport error: stop re-arming.
        if (r.error || r.status !== 0) return;
        const dw0 = r.dw0;
        arm();
        void this.deliverEvent(a, dw0);
      };
      // Held by the controller until an event: a slot of its own, as Linux's AER has.
      a.admin.submitReserved(req);
    };
    arm();
  }

  private async deliverEvent(a: Association, dw0: number): Promise<void> {
    const lid = (dw0 >>> 16) & 0xff;
    const deliver = (log: Buffer | null) =>
      callUser('onAsyncEvent', this.opts.onAsyncEvent, {
        dw0,
        type: dw0 & 7,
        info: (dw0 >>> 8) & 0xff,
        lid,
        log,
      });
    const length = eventLogLength(a.identity, lid);
    if (length === 0) return deliver(null);
    const nsid = lid === LID.DISCOVERY ? 0 : NSID_ALL;
    // An ANA log read on an association gone since is dropped (AnaStates.newAssociation).
    const read = () =>
      lid === LID.ANA
        ? this.anaStates.read(() => admin.getAnaLog(a.admin, a.identity))
        : admin.getLogPage(a.admin, { lid, length, nsid, rae: false });
    let busy = false;
    const log = await read().catch((e: unknown) => {
      busy = isBusy(e);
      return null;
    });
    deliver(log);
    if (!busy) return;
    // The controller keeps events of a type masked until their log page is read with
    // RAE=0 (facts §4.4): left unread, no further event of that type would come on this
    // association (a namespace replaced later would go unnoticed). Read once there is
    // room, the event is delivered again with its log: a change made before that read
    // re-enabled the events raises none of its own.
    const later = await this.whenRoom(a, read);
    if (later) deliver(later);
  }

  /**
   * `run` again, after a backoff (50 ms, doubling up to 5 s), for as long as the admin
   * queue has no room for it ('busy') and association `a` lasts. Its result, or null
   * when it failed otherwise or the association is gone.
   */
  private async whenRoom<T>(a: Association, run: () => Promise<T>): Promise<T | null> {
    for (let ms = 50; ; ms = Math.min(2 * ms, 5000)) {
      await new Promise((r) => setTimeout(r, ms).unref());
      if (this.assoc !== a) return null;
      try {
        return await run();
      } catch (e) {
        if (!isBusy(e)) return null;
      }
    }
  }

  private clearTimers(): void {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /**
   * Clean shutdown: refuse new commands, let in-flight I/O finish (up to drainMs),
   * then close I/O queues, CC.SHN, close the admin queue. Safe to call in any state.
   */
  async close(drainMs = 5000): Promise<void> {
    if (this.sm.is('closed')) return;
    if (this.sm.is('deleting')) return this.waitClosed();
    this.sm.transition('deleting');
    const closing = (h: Held) =>
      new HostError(
        'closed',
        h.again
          ? 'controller closed while the command waited to be sent again (not sent again)'
          : 'controller closed while the command waited for it to reconnect (never sent)',
      );
    this.resends.failAll(closing);
    this.anaStates.failAll(this.anaWaitEnded());
    // A reconnect attempt in progress stops now, not at its connect or admin timeout (a
    // retry timer that fires meanwhile finds the controller deleting and does nothing).
    this.cancelAttempt?.();
    await this.connecting?.catch(() => {});
    const a = this.assoc;
    this.assoc = null;
    // Keep-alives go on while I/O drains: a slow write must not outlast the target's
    // keep-alive timer, which would drop the controller under it.
    if (a) await drain(a, drainMs);
    this.clearTimers();
    if (a) await shutdownWithin(a, SHUTDOWN_TIMEOUT_MS);
    this.sm.transition('closed');
  }

  private async waitClosed(): Promise<void> {
    while (!this.sm.is('closed')) await new Promise((r) => setTimeout(r, 10));
  }
}

/**
 * A namespace whose controller answered its descriptor list with an error has none (a
 * target without CNS 3). A list that got no answer (a timeout, a lost connection, the
 * admin queue full) says nothing: taken for "no IDs", it would make the namespace look
 * like another one to a multipath comparison. That error is the namespace()'s.
 */
function noDescriptors(e: unknown): admin.NamespaceIds {
  if (e instanceof HostError) throw e;
  return {};
}

/** The command was not sent: its queue's wait queue was full. */
function isBusy(e: unknown): boolean {
  return e instanceof HostError && e.kind === 'busy';
}

/** How long close() waits for CC.SHN to complete (Linux's default shutdown_timeout). */
const SHUTDOWN_TIMEOUT_MS = 5000;

/**
 * a.shutdown(), bounded: a controller that keeps its connection open but stops answering
 * would otherwise hold close() for the admin command timeout (60 s by default). Past
 * the bound its queues are failed, which ends the shutdown's pending commands.
 */
async function shutdownWithin(a: Association, ms: number): Promise<void> {
  const done = a.shutdown(ms);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(true), ms + 1000)));
  if (await Promise.race([done.then(() => false), late])) {
    a.failAll(new HostError('closed', `controller did not complete shutdown within ${ms} ms`));
  }
  clearTimeout(timer);
  await done;
}

/** Wait until the I/O queues have nothing in flight, at most `ms`. */
async function drain(a: Association, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  const busy = () => a.io.some((q) => q.state === 'live' && q.inFlight + q.queued > 0);
  while (busy() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 5));
}

function eventLogLength(id: admin.ControllerIdentity, lid: number): number {
  if (lid === LID.CHANGED_NS) return 4096;
  if (lid === LID.ANA) return anaLogReadLength(id);
  if (lid === LID.DISCOVERY) return 1024;
  return 0;
}

/**
 * A KATO the Connect command cannot carry as given would reach the target as another
 * value (2^32 ms as 0: no keep-alive at all), while the host sends Keep Alives and times
 * its fencing by the value given.
 */
function checkKato(o: ControllerOptions): void {
  const k = o.kato;
  if (k === undefined || (Number.isInteger(k) && k >= 0 && k <= MAX_KATO_MS)) return;
  throw new RangeError(
    `controller ${o.host}:${o.port}: kato ${k} is not a whole number of milliseconds from 0 ` +
      `to ${MAX_KATO_MS}: the Connect command carries it in 32 bits, so the target would ` +
      `get ${k >>> 0} ms (0: no keep-alive). Give a KATO in that range, e.g. 5000.`,
  );
}

/**
 * Timer settings the library cannot keep are refused before anything connects: Node fires
 * a setTimeout delay over MAX_TIMER_MS, or Infinity, after 1 ms, so a connect timeout of
 * Infinity failed every connect at once and a long reconnect delay reconnected at once
 * (in a loop, with a loss timeout of Infinity). A NaN or negative timeout is no setting.
 */
function checkTimers(o: ControllerOptions): void {
  const rc = o.reconnect || null;
  const checks: [string, number | undefined, number, number, string][] = [
    [
      'connectTimeoutMs',
      o.connectTimeoutMs,
      1,
      MAX_TIMER_MS,
      'how long a connect may take, e.g. 10000',
    ],
    ['adminTimeoutMs', o.adminTimeoutMs, 0, Infinity, 'e.g. 60000, or Infinity for none'],
    ['ioTimeoutMs', o.ioTimeoutMs, 0, Infinity, 'e.g. 30000, or Infinity for none'],
    [
      'fastIoFailMs',
      o.fastIoFailMs,
      0,
      Infinity,
      'how long I/O may wait for a reconnect, e.g. 5000, or Infinity until reconnecting gives up',
    ],
    [
      'reconnect.delayMs',
      rc?.delayMs,
      0,
      MAX_TIMER_MS,
      'the wait between reconnect attempts, e.g. 10000',
    ],
    [
      'reconnect.lossTimeoutMs',
      rc?.lossTimeoutMs,
      0,
      Infinity,
      'how long to keep reconnecting, e.g. 600000, or Infinity for ever',
    ],
  ];
  for (const [name, ms, min, max, hint] of checks) {
    const why = ms === undefined ? null : timerRefusal(name, ms, min, max);
    if (why) throw new RangeError(`controller ${o.host}:${o.port}: ${why}. Give ${hint}.`);
  }
}

function toHostId(id: Buffer | string | undefined): Buffer {
  if (Buffer.isBuffer(id)) {
    if (id.length !== 16) throw new RangeError('hostid must be 16 bytes');
    return Buffer.from(id);
  }
  const text = (id ?? randomUUID()).replace(/-/g, '');
  if (!/^[0-9a-fA-F]{32}$/.test(text)) throw new RangeError(`hostid is not a UUID: ${id}`);
  return Buffer.from(text, 'hex');
}
