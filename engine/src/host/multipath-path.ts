/**
 * One path of a multipath namespace: a controller, what we know about the namespace
 * through it (identity checked, ANA state), its I/O counters, and the fencing record
 * that decides when commands left in doubt on it may be sent elsewhere.
 *
 * Fencing. A command that failed on this path without a completion may still run on
 * the target. It is safe to send it elsewhere only once the association it went out on
 * can no longer execute anything: the fence delay has passed since that association was
 * lost (the controller left 'live'; for a close() by the caller, once it is 'closed':
 * while 'deleting' it drains and shuts down on the association's open sockets). The delay covers a target that did not notice the
 * loss (a network partition): it keeps that controller until its keep-alive timer fires
 * (KATO + slack), so the delay is the KATO rounded up, plus a second (defaultFenceMs),
 * or the longer fenceDelayMs the caller gave: never shorter, which MultipathNamespace
 * checks at connect. The KATO is the largest the lost controller may have run with (its
 * Connect's, or a larger one a Set Features sent since: keepAliveCeilingMs), worked out
 * when the loss starts the delay; turning keep-alive off on a path is refused
 * (requireKeepAlive). It runs from the loss, not from giving the path
 * up: the host sends nothing more on a lost association (its sockets are reset, so the
 * kernel drops what it had not sent yet rather than deliver it later), and its reconnect
 * attempts build new controllers that never revive the old one, so an in-doubt write
 * does not wait out the whole reconnect loss timeout (minutes, as on Linux) while another
 * path is healthy. A reconnect does not fence on its own: the target accepting a new
 * Connect says nothing about the old controller, which a partition hides the loss from
 * and which our target, like Linux's, keeps beside the new one until its keep-alive
 * timer fires. Each lost association runs its own delay, so one reconnecting quickly and
 * lost again releases the older commands first. A path without keep-alive (KATO 0)
 * would have no such timer on the target, so no wait would prove anything:
 * MultipathNamespace refuses such paths.
 */
import type { AnaPathState } from './ana-log.js';
import { defaultFenceMs } from './multipath-options.js';
import type { ControllerState, NvmeController } from './controller.js';
import { pathUsable, type PathView } from './multipath-policy.js';
import { MAX_TIMER_MS } from './queue.js';

/** The longest wait between two identity checks of a path whose check got no answer. */
const RECHECK_MAX_MS = 5000;

/** Per-path I/O counters (attempts, not caller commands: a retried command counts twice). */
export interface PathIoCounts {
  /** Attempts sent on this path. */
  submitted: number;
  /** Attempts that completed successfully here. */
  completed: number;
  /** Attempts that completed with a non-path status handed to the caller. */
  failed: number;
  /** Attempts refused with a path status (SCT 3: ANA inaccessible, loss, change), or with
   * LBA Out of Range for blocks the path had shown (retry rule 4a). */
  pathErrors: number;
  /** Attempts that ended without a completion (timeout, connection lost, refused). */
  transportErrors: number;
  /** Attempts that completed with a status a retry may pass, and were sent again here. */
  retried: number;
}

/** A path as callers see it (MultipathNamespace.paths()). */
export interface PathInfo {
  readonly index: number;
  /** The name given in the path's options, or host:port. */
  readonly name: string;
  readonly controller: ControllerState;
  /** CNTLID of the current association, or null while none is live. */
  readonly cntlid: number | null;
  readonly ana: AnaPathState;
  readonly anagrpid: number;
  /** Blocks the namespace has on this path, as its last check that passed showed (0: none
   * passed yet); below the namespace's nsze while its node has not grown the volume yet. */
  readonly nsze: number;
  /** Takes I/O now (live, identity verified, optimized or non-optimized). */
  readonly usable: boolean;
  /** Why the path is refused (identity mismatch, namespace missing) or unchecked (its
   * identity check got no answer, or a transient status: checked again), or null. */
  readonly problem: string | null;
  readonly inFlight: number;
  /** Commands that may have run here and wait for this path to be fenced. */
  readonly inDoubt: number;
  readonly io: Readonly<PathIoCounts>;
}

export class Path implements PathView {
  controller: ControllerState = 'new';
  cntlid: number | null = null;
  ana: AnaPathState = 'unknown';
  anagrpid = 0;
  /** The namespace's identity matched on the current association. */
  verified = false;
  /** Blocks of the namespace here at the last check that passed, on this association or an
   * earlier one (0: none yet): a later check may not show fewer (a shrink). */
  nsze = 0;
  /** The size check in progress (multipath-watch.ts checkSize), or null. */
  sizeCheck: Promise<void> | null = null;
  problem: string | null = null;
  /** The problem is that the namespace is not there (not active, invalid NSID): the
   * node does not serve it (yet), which is no reason to distrust the other paths. */
  absent = false;
  /** The problem is that the identity check itself failed (no answer: the admin queue
   * full, a timeout; or a status without DNR): nothing was learnt about the namespace,
   * so it is checked again (recheckLater, or on the next association). */
  unchecked = false;
  /** Delay of the last scheduled identity re-check (0: none since the last check). */
  recheckBackoffMs = 0;
  /** Associations established so far (see Fencing above). */
  epoch = 0;
  /** Every association up to this one was lost longer than its fence delay ago (0: none). */
  fencedThrough = 0;
  /** Later associations whose own fence delay ran out while an older one's still runs
   * (delays differ when a Set Features changed KATO): fenced, each on its own. */
  private readonly fencedAhead = new Set<number>();
  inFlight = 0;
  /** Commands in doubt on this path, each with the epoch it was sent in. */
  readonly inDoubt = new Map<object, number>();
  readonly counts: PathIoCounts = {
    submitted: 0,
    completed: 0,
    failed: 0,
    pathErrors: 0,
    transportErrors: 0,
    retried: 0,
  };
  /** Commands waiting out a status's retry delay to be sent here again, with its timer. */
  readonly delayed = new Map<object, NodeJS.Timeout>();
  /** The ANA log read in progress (multipath-watch.ts), or null. */
  anaRead: { epoch: number; again: boolean; done: Promise<void> } | null = null;
  /** ANA statuses (3/01..3/03) seen on I/O: a log read issued before the latest one
   * cannot re-admit the path (multipath-watch.ts). */
  anaStatuses = 0;
  /** Delay of the last scheduled ANA re-read (0: none since I/O last got past ANA here). */
  anaBackoffMs = 0;
  /** Largest transfer of the current association (0: not known yet). */
  maxTransferBytes = 0;
  /** Identity checks started (validatePath): only the latest one applies. */
  checks = 0;
  /** Identity check of the current association, for connect() to wait on. */
  validating: Promise<void> = Promise.resolve();
  /** The fence delay of each lost association still running, by epoch. */
  private readonly fenceTimers = new Map<number, NodeJS.Timeout>();
  private changeTimer: NodeJS.Timeout | null = null;
  private anaTimer: NodeJS.Timeout | null = null;
  private recheckTimer: NodeJS.Timeout | null = null;
  private ctrlRef: NvmeController | null = null;

  /** The fence delay of each lost association whose commands have not all been released
   * yet, by epoch (for messages: associations may have different delays). */
  private readonly fenceDelays = new Map<number, number>();

  constructor(
    readonly index: number,
    readonly name: string,
    /** The caller's fenceDelayMs (0: none): a fence is never shorter. */
    private readonly minFenceMs: number,
  ) {}

  get ctrl(): NvmeController {
    return this.ctrlRef!;
  }
  set ctrl(c: NvmeController) {
    this.ctrlRef = c;
  }

  get usable(): boolean {
    return pathUsable(this);
  }

  /** May a command sent in association `epoch` go to another path now? */
  fenced(epoch: number): boolean {
    return this.fencedThrough >= epoch || this.fencedAhead.has(epoch);
  }

  /** A new association is live: everything learnt about the old one is void. */
  newAssociation(cntlid: number): void {
    this.epoch++;
    this.cntlid = cntlid;
    this.verified = false;
    this.problem = null;
    this.absent = false;
    this.unchecked = false;
    this.ana = 'unknown';
    this.anaBackoffMs = 0;
    this.recheckBackoffMs = 0;
    this.stopChangeTimer();
    this.stopAnaTimer();
    this.stopRecheckTimer();
  }

  /** No association is live (recovering, connecting, dead, deleting, closed). */
  lost(): void {
    this.cntlid = null;
    this.stopChangeTimer();
    this.stopAnaTimer();
    this.stopRecheckTimer();
  }

  /**
   * The fence delay association `epoch` runs or ran, for messages; null once its fence
   * released its commands (a command held later is released at once).
   */
  fenceDelayOf(epoch: number): number | null {
    return this.fenceDelays.get(epoch) ?? null;
  }

  /**
   * The current association was lost: fenced once its fence delay has passed, then
   * `onFenced` releases. Called on every state the controller passes through while it
   * has no association; only the first call after each loss starts a delay.
   */
  startFence(onFenced: () => void): void {
    const epoch = this.epoch;
    if (epoch === 0) return; // no association yet: nothing was sent here
    if (this.fenced(epoch)) return;
    if (this.fenceTimers.has(epoch)) return;
    const fence = () => {
      this.fenceTimers.delete(epoch);
      // Not fencedThrough = epoch: an older association may have a longer delay to run.
      this.fencedAhead.add(epoch);
      while (this.fencedAhead.delete(this.fencedThrough + 1)) this.fencedThrough++;
      onFenced();
      this.fenceDelays.delete(epoch); // its commands in doubt went out in onFenced()
    };
    const delay = Math.max(this.minFenceMs, defaultFenceMs(this.ctrl.keepAliveCeilingMs));
    this.fenceDelays.set(epoch, delay);
    this.armFence(epoch, delay, fence);
  }

  /**
   * Run `fence` once `ms` have passed, however long that is: setTimeout fires a delay
   * above MAX_TIMER_MS after 1 ms instead (a KATO of 2^31 ms would release at once),
   * so a longer one waits in steps.
   */
  private armFence(epoch: number, ms: number, fence: () => void): void {
    const step = Math.min(ms, MAX_TIMER_MS);
    const timer = setTimeout(() => {
      if (ms > step) this.armFence(epoch, ms - step, fence);
      else fence();
    }, step);
    this.fenceTimers.set(epoch, timer);
  }

  /** Start (once) the 2×ANATT watch of a group stuck in 'change' (facts §7). */
  watchChange(ms: number, onStuck: () => void): void {
    if (this.changeTimer) return;
    const epoch = this.epoch;
    this.changeTimer = setTimeout(() => {
      this.changeTimer = null;
      if (this.epoch === epoch && this.ana === 'change') onStuck();
    }, ms);
    this.changeTimer.unref();
  }

  stopChangeTimer(): void {
    if (this.changeTimer) clearTimeout(this.changeTimer);
    this.changeTimer = null;
  }

  /**
   * Run `read` (an ANA log read) after a backoff: 50 ms, doubling on each call until
   * I/O gets past ANA here again (anaBackoffMs reset), at most `maxMs`. One at a time.
   */
  readAnaLater(maxMs: number, read: () => void): void {
    if (this.anaTimer) return;
    this.anaBackoffMs = Math.min(maxMs, this.anaBackoffMs > 0 ? this.anaBackoffMs * 2 : 50);
    this.anaTimer = setTimeout(() => {
      this.anaTimer = null;
      read();
    }, this.anaBackoffMs);
    this.anaTimer.unref();
  }

  /**
   * Run `check` (the identity check) again after a backoff: 50 ms, doubling on each call
   * until a check gets an answer (recheckBackoffMs reset), at most RECHECK_MAX_MS. One at
   * a time; the delay it will wait is returned, for messages.
   */
  recheckLater(check: () => void): number {
    if (this.recheckTimer) return this.recheckBackoffMs;
    const next = this.recheckBackoffMs > 0 ? this.recheckBackoffMs * 2 : 50;
    this.recheckBackoffMs = Math.min(RECHECK_MAX_MS, next);
    this.recheckTimer = setTimeout(() => {
      this.recheckTimer = null;
      check();
    }, this.recheckBackoffMs);
    this.recheckTimer.unref();
    return this.recheckBackoffMs;
  }

  private stopRecheckTimer(): void {
    if (this.recheckTimer) clearTimeout(this.recheckTimer);
    this.recheckTimer = null;
  }

  private stopAnaTimer(): void {
    if (this.anaTimer) clearTimeout(this.anaTimer);
    this.anaTimer = null;
  }

  /** The namespace closes: no delay runs on. */
  stopFenceTimers(): void {
    for (const t of this.fenceTimers.values()) clearTimeout(t);
    this.fenceTimers.clear();
  }

  info(): PathInfo {
    return {
      index: this.index,
      name: this.name,
      controller: this.controller,
      cntlid: this.cntlid,
      ana: this.ana,
      anagrpid: this.anagrpid,
      nsze: this.nsze,
      usable: this.usable,
      problem: this.problem,
      inFlight: this.inFlight,
      inDoubt: this.inDoubt.size,
      io: { ...this.counts },
    };
  }
}
