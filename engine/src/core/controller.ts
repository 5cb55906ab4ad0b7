/**
 * One controller: the association of a host with a subsystem, born from an admin
 * Connect and ended by the admin queue closing, keep-alive expiry or the target
 * removing its subsystem. Holds the controller registers (CC/CSTS), features,
 * async events, the changed namespace list, keep-alive and its queues.
 */
import type { PortInfo } from './seam.js';
import { AEN_BIT, AEN_DW0 } from '../protocol/opcodes.js';
import { CHANGED_NS_MAX } from '../protocol/logpages.js';
import { AsyncEvents } from './aen.js';
import type { AnaGroups } from './ana.js';
import { maxTransferBytes, type ResolvedOptions } from './options.js';
import { checkTransition, type TransitionTable } from './state.js';
import { IoStats, LatencySampler } from './stats.js';
import type { Subsystem } from './subsystem.js';

export type ControllerState =
  /** Admin queue connected, CC.EN = 0: only fabrics commands (Property Get/Set) work. */
  | 'created'
  /** CC.EN = 1 accepted, CSTS.RDY = 1: every command is served. */
  | 'enabled'
  /** CC.SHN written; I/O queues closed, backends flushing; CSTS.SHST = 01b. */
  | 'shutting-down'
  /** Shutdown complete (SHST = 10b); the host may still read properties, then disconnects. */
  | 'shutdown'
  /** CSTS.CFS: a bad CC on enable or keep-alive expiry; waits for reset or deletion. */
  | 'failed'
  /** Gone: queues closed, CNTLID released. Terminal. */
  | 'deleted';

const TRANSITIONS: TransitionTable<ControllerState> = {
  created: ['enabled', 'failed', 'shutting-down', 'deleted'],
  enabled: ['created', 'shutting-down', 'failed', 'deleted'],
  'shutting-down': ['shutdown', 'created', 'failed', 'deleted'],
  shutdown: ['created', 'failed', 'deleted'],
  failed: ['created', 'shutting-down', 'deleted'],
  deleted: [],
};

export type ControllerKind = 'io' | 'discovery';

/** What the controller needs to close a queue; the core's Queue implements it. */
export interface QueueLink {
  readonly qid: number;
  /** Closed for good; also what backends see as the owner of its writes (IoOwner). */
  readonly isClosed: boolean;
  close(reason: string): void;
}

/** What the controller needs from its target. */
export interface ControllerEnv {
  readonly options: ResolvedOptions;
  /** This node's ANA group states. */
  readonly ana: AnaGroups;
  /** Forget the controller and free its CNTLID. */
  release(ctrl: Controller): void;
}

export interface ControllerInit {
  readonly cntlid: number;
  readonly subsys: Subsystem;
  readonly hostnqn: string;
  readonly hostid: Buffer;
  /** KATO from Connect, in ms (0 = none). */
  readonly kato: number;
  /** The port the admin queue came in on (the discovery log answers for it). */
  readonly port: PortInfo;
  readonly adminQueue: QueueLink;
}

// CC fields (NVMe base spec, Controller Configuration).
const CC_EN = 1;
const ccShn = (cc: number): number => (cc >>> 14) & 3;
/** CSTS values per state: RDY b0, CFS b1, SHST b3:2. */
const CSTS: { readonly [K in ControllerState]: number } = {
  created: 0,
  enabled: 0x1,
  'shutting-down': 0x1 << 2,
  shutdown: 0x2 << 2,
  failed: 0x2,
  deleted: 0x2,
};

export class Controller {
  readonly kind: ControllerKind;
  readonly cntlid: number;
  readonly subsys: Subsystem;
  readonly hostnqn: string;
  readonly hostid: Buffer;
  readonly port: PortInfo;
  readonly adminQueue: QueueLink;
  readonly ioQueues = new Map<number, QueueLink>();
  /** Shutdowns begun (CC.SHN); each one's flushes end only the newest. */
  private shutdowns = 0;
  readonly aen: AsyncEvents;
  readonly stats = new IoStats();
  /** Which of this controller's I/O commands are timed for stats (and its namespaces'). */
  readonly timing = new LatencySampler();
  private stateValue: ControllerState = 'created';
  /** Controller Configuration as last written by the host. */
  cc = 0;
  /** Keep-alive timeout in ms (0 = no keep-alive). */
  kato: number;
  /** A command arrived since the keep-alive timer last fired (TBKAS). */
  kaSeen = false;
  private kaTimer: NodeJS.Timeout | undefined;
  /** Keep-alive ticks in a row without a command, and how many end the controller. */
  private kaIdleTicks = 0;
  private kaTicks = 0;
  /** I/O queues granted by Set Features Number of Queues (or the default). */
  grantedQueues: number;
  /** Volatile write cache enabled (Set Features 0x06); when off, writes go FUA. */
  wce = true;
  readonly changedNs = new Set<number>();
  changedNsOverflow = false;
  /** Most bytes one command may move (MDTS). */
  readonly maxTransfer: number;

  constructor(
    private readonly env: ControllerEnv,
    init: ControllerInit,
  ) {
    this.kind = init.subsys.kind === 'discovery' ? 'discovery' : 'io';
    this.cntlid = init.cntlid;
    this.subsys = init.subsys;
    this.hostnqn = init.hostnqn;
    this.hostid = init.hostid;
    this.port = init.port;
    this.adminQueue = init.adminQueue;
    const o = env.options;
    this.kato = this.kind === 'discovery' ? discoveryKato(init.kato, o) : init.kato;
    this.grantedQueues = this.kind === 'discovery' ? 0 : o.maxIoQueues;
    this.maxTransfer = maxTransferBytes(o);
    this.aen = new AsyncEvents(AERL + 1, this.kind === 'discovery' ? DISC_AEN : IO_AEN);
    this.armKeepAlive();
  }

  get options(): ResolvedOptions {
    return this.env.options;
  }

  get ana(): AnaGroups {
    return this.env.ana;
  }

  get state(): ControllerState {
    return this.stateValue;
  }

  get csts(): number {
    return CSTS[this.stateValue];
  }

  /** The AEN configuration bits this controller supports (OAES plus SMART warnings). */
  get aenMask(): number {
    return this.kind === 'discovery' ? DISC_AEN : IO_AEN | 0xff;
  }

  private transition(to: ControllerState): void {
    this.stateValue = checkTransition(
      TRANSITIONS,
      `controller ${this.cntlid}`,
      this.stateValue,
      to,
    );
  }

  /** Property Set CC, with nvmet's edge semantics for EN and SHN. */
  setCc(value: number): void {
    const old = this.cc;
    this.cc = value >>> 0;
    const en = (value & CC_EN) !== 0;
    const wasEn = (old & CC_EN) !== 0;
    if (wasEn && !en) this.reset('controller reset (CC.EN 1 -> 0)');
    if (ccShn(old) !== 0 && ccShn(value) === 0 && !en && this.isShutdown())
      this.transition('created');
    if (!wasEn && en) this.enable();
    if (ccShn(old) === 0 && ccShn(value) !== 0) this.shutdown();
  }

  private isShutdown(): boolean {
    return this.stateValue === 'shutdown' || this.stateValue === 'shutting-down';
  }

  private enable(): void {
    if (this.stateValue !== 'created') return; // a failed or shut down controller needs a reset first
    this.transition(this.ccValid() ? 'enabled' : 'failed');
  }

  /** nvmet_start_ctrl's checks; discovery controllers are exempt from the queue entry sizes. */
  private ccValid(): boolean {
    const cc = this.cc;
    const css = (cc >>> 4) & 7;
    const mps = (cc >>> 7) & 0xf;
    const ams = (cc >>> 11) & 7;
    if (css !== 0 || mps !== 0 || ams !== 0) return false;
    if (this.kind === 'discovery') return true;
    return ((cc >>> 16) & 0xf) === 6 && ((cc >>> 20) & 0xf) === 4;
  }

  /** CC.EN 1 -> 0: the I/O queues go; the host builds a new association next (facts §8). */
  private reset(reason: string): void {
    if (this.stateValue === 'deleted' || this.stateValue === 'created') return;
    this.closeIoQueues(reason);
    this.transition('created');
  }

  /**
   * CC.SHN: close the I/O queues, make the data durable, then report SHST complete. A
   * controller whose enable failed (CFS) shuts down too, as nvmet's does: a host deleting
   * it waits for SHST complete, for seconds otherwise.
   */
  private shutdown(): void {
    const from = this.stateValue;
    if (from !== 'created' && from !== 'enabled' && from !== 'failed') return;
    this.closeIoQueues('controller shutdown');
    this.transition('shutting-down');
    const backends = [...this.subsys.namespaces.values()]
      .map((ns) => ns.backend)
      .filter((b) => b.caps.flush);
    let left = backends.length + 1;
    // A reset and a new shutdown while this one flushes: only the newest may say done.
    const epoch = ++this.shutdowns;
    const one = (): void => {
      if (--left === 0 && epoch === this.shutdowns && this.stateValue === 'shutting-down')
        this.transition('shutdown');
    };
    for (const b of backends) b.flush(one); // a flush error still ends the shutdown
    one();
  }

  closeIoQueues(reason: string): void {
    const queues = [...this.ioQueues.values()];
    this.ioQueues.clear();
    for (const q of queues) q.close(reason);
  }

  /** Keep-alive expired or another fatal error: set CFS, then delete (closing every queue). */
  fatal(reason: string): void {
    if (this.stateValue === 'deleted') return;
    if (this.stateValue !== 'failed') this.transition('failed');
    this.env.options.logger.warn('controller failed', { cntlid: this.cntlid, reason });
    this.delete(reason);
  }

  /** Completes held AERs with an error (graceful stop). */
  failAsyncEvents(): void {
    this.aen.failAll();
  }

  /** Tear down: fail pending AERs, close all queues, release the CNTLID. Idempotent. */
  delete(reason: string): void {
    if (this.stateValue === 'deleted') return;
    this.transition('deleted');
    this.stopKeepAlive();
    this.aen.failAll();
    this.closeIoQueues(reason);
    this.adminQueue.close(reason);
    this.env.release(this);
  }

  /**
   * Set Features KATO (ms): restart the timer with the new period. A discovery
   * controller, open to any host, cannot turn keep-alive off, nor make it last for
   * weeks: see discoveryKato; Get Features reports the value used.
   */
  setKato(ms: number): void {
    this.kato = this.kind === 'discovery' ? discoveryKato(ms, this.env.options) : ms;
    this.armKeepAlive();
  }

  /**
   * nvmet: ceil(KATO) seconds; the slack absorbs a Keep Alive that is a little late. The
   * controller ends once no command arrived for that long (limit), at most one tick
   * later: a host's multipath fence counts on that bound, so the timer ticks (in at
   * most KA_TICK_MS steps) instead of one long period, which a command just after it
   * started would stretch to nearly twice the limit. Every command only sets kaSeen
   * (TBKAS): no timer work per I/O.
   */
  private armKeepAlive(): void {
    this.stopKeepAlive();
    if (this.kato === 0) return;
    const limit = Math.ceil(this.kato / 1000) * 1000 + this.env.options.kaSlackMs;
    this.kaTicks = Math.ceil(limit / KA_TICK_MS);
    this.kaIdleTicks = 0;
    this.kaSeen = false;
    // Short ticks also keep the delay within a Node timer's range (2^31 - 1 ms).
    this.kaTimer = setTimeout(() => this.onKeepAliveTimer(), Math.ceil(limit / this.kaTicks));
    this.kaTimer.unref();
  }

  private onKeepAliveTimer(): void {
    if (this.stateValue === 'deleted' || !this.kaTimer) return;
    if (this.kaSeen) {
      this.kaSeen = false;
      this.kaIdleTicks = 0;
    } else if (++this.kaIdleTicks >= this.kaTicks) {
      return this.fatal(`keep-alive timeout (KATO ${this.kato} ms)`);
    }
    this.kaTimer.refresh();
  }

  private stopKeepAlive(): void {
    if (this.kaTimer) clearTimeout(this.kaTimer);
    this.kaTimer = undefined;
  }

  /** A namespace of our subsystem appeared or disappeared. */
  notifyNsChanged(nsid: number): void {
    if (this.kind !== 'io' || this.stateValue === 'deleted') return;
    if (this.changedNs.size >= CHANGED_NS_MAX && !this.changedNs.has(nsid))
      this.changedNsOverflow = true;
    else this.changedNs.add(nsid);
    this.aen.notify(AEN_BIT.NS_ATTR, AEN_DW0.NS_CHANGED);
  }

  notifyAnaChanged(): void {
    if (this.kind === 'io' && this.stateValue !== 'deleted')
      this.aen.notify(AEN_BIT.ANA_CHANGE, AEN_DW0.ANA_CHANGE);
  }

  notifyDiscoveryChanged(): void {
    if (this.kind === 'discovery' && this.stateValue !== 'deleted') {
      this.aen.notify(AEN_BIT.DISC_CHANGE, AEN_DW0.DISC_CHANGE);
    }
  }
}

/** Longest step of the keep-alive timer: the most a silent controller outlives its limit. */
export const KA_TICK_MS = 250;

/**
 * Longest KATO a discovery controller keeps (ms), unless its default is longer: Linux asks
 * for 0 (our default applies) or 30 s (persistent discovery), so this leaves every real
 * host its own period.
 */
export const DISCOVERY_KATO_MAX_MS = 300_000;

/**
 * The KATO a discovery controller, open to any host, uses for the one asked (at Connect
 * or Set Features): 0 means its default, and a longer one than DISCOVERY_KATO_MAX_MS is
 * cut to that; else a peer could hold connections and CNTLIDs for ever (0xFFFFFFFF ms
 * is 49 days). Cut, not refused: a host that reads it back sees the value used.
 */
function discoveryKato(ms: number, o: ResolvedOptions): number {
  if (ms === 0) return o.discoveryKatoMs;
  return Math.min(ms, Math.max(DISCOVERY_KATO_MAX_MS, o.discoveryKatoMs));
}

/** AERL (0's based): four AERs may be outstanding, as in nvmet. */
export const AERL = 3;
/** OAES of an I/O controller: namespace attribute and ANA change notices. */
export const IO_AEN = (1 << AEN_BIT.NS_ATTR) | (1 << AEN_BIT.ANA_CHANGE);
/** OAES of a discovery controller: discovery log change notice (bit 31). */
export const DISC_AEN = 2 ** AEN_BIT.DISC_CHANGE;
