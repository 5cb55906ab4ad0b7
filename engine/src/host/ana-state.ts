/**
 * The ANA state of each namespace on one controller, as its latest ANA log says, for a
 * command on that controller answered with ANA Transition (NvmeNamespace): while the
 * namespace's group is in change the target is moving it (ours: the volume's storage is
 * out, its I/O threads being replaced), and says so again with an ANA change event once
 * it is done, so the command waits for that, as Linux holds such I/O (multipath.c: a
 * path in change is no path, the I/O requeued until the ANA log says otherwise).
 *
 * Fed by every ANA log the controller reads (read()): the one the ANA change event makes
 * it read, getAnaLog()'s, and the reads asked for here after a status. Reads cross (an
 * event's and a status's), so the answer to the read issued last decides, and one issued
 * before it that answers later is dropped rather than undoing it, whatever either's
 * change count (CHGCNT): a target that restarted its counter (a new process behind the
 * same address) answers with a lower one, and its log is no older for that. Multipath
 * takes the same rule (multipath-watch.ts applyAnaLog: its reads of a path run one at a
 * time, so the one applied last is the one issued last).
 */
import { anaStateOf, parseAnaLog, type AnaLog, type AnaPathState } from './ana-log.js';
import type { HostError } from './errors.js';
import { MAX_TIMER_MS } from './queue.js';

/** ANATT when a controller reports none, s (what multipath assumes as well). */
const DEFAULT_ANATT_S = 10;

/**
 * How long a group may stay in change before the host resets the controller, ms: twice
 * ANATT (Identify Controller, seconds), as Linux's anatt_timer (facts §7). A multipath
 * path resets its controller then too.
 */
export function anaChangeLimitMs(anatt: number): number {
  return 2 * (anatt || DEFAULT_ANATT_S) * 1000;
}

/** How a wait for a group to leave change ended (settled()). */
export interface AnaWait {
  /** The namespace's state then: 'change' when the wait's bound ran out. */
  readonly state: AnaPathState;
  /** Times the controller was reset meanwhile, the group in change past 2 x ANATT. */
  readonly resets: number;
  /** Why the controller had no association when the wait ended (reconnecting), or null. */
  readonly lost: string | null;
}

/** A command waiting for its namespace's group to leave change (settled()). */
interface Waiter {
  readonly nsid: number;
  readonly resolve: (wait: AnaWait) => void;
  readonly reject: (err: HostError) => void;
  /** Its bound (none past MAX_TIMER_MS). */
  readonly timer: NodeJS.Timeout | null;
  resets: number;
}

export class AnaStates {
  private log: AnaLog | null = null;
  /** Reads issued so far (read()), and the number of the one whose log is applied. */
  private issued = 0;
  private appliedRead = 0;
  /** The read in flight, and the one asked for while it was (coalesced, issued after it). */
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private readonly waiters = new Set<Waiter>();
  /** Runs while commands wait on a live association: Linux's anatt_timer (watchStuck). */
  private stuck: NodeJS.Timeout | null = null;
  /** Why the last association was lost, until the next one is up (lost()). */
  private lostWhy: string | null = null;

  constructor(
    /** Reads the whole ANA log on the current association. */
    private readonly readLog: () => Promise<Buffer>,
    /** ANAGRPMAX of the current association (parseAnaLog refuses groups above it). */
    private readonly anagrpmax: () => number,
    /** How long a group may stay in change on the current association (2 x ANATT), ms. */
    private readonly limitMs: () => number,
    /** Reset the controller (a new association), saying why. */
    private readonly reset: (why: string) => void,
  ) {}

  /** The state of `nsid` in the latest log applied ('unknown' before any). */
  stateOf(nsid: number): AnaPathState {
    return this.log ? anaStateOf(this.log, nsid) : 'unknown';
  }

  /**
   * Read the ANA log with `run` (on the current association) and apply it, unless the
   * log of a read issued after this one is applied already. Resolves with the log read.
   */
  async read(run: () => Promise<Buffer>): Promise<Buffer> {
    const n = ++this.issued;
    const raw = await run();
    if (n > this.appliedRead) {
      this.appliedRead = n;
      this.apply(raw);
    }
    return raw;
  }

  private apply(raw: Buffer): void {
    let log: AnaLog;
    try {
      log = parseAnaLog(raw, this.anagrpmax());
    } catch {
      return; // malformed: says nothing; a waiting command runs into its bound
    }
    this.log = log;
    for (const w of [...this.waiters]) {
      const state = this.stateOf(w.nsid);
      if (state !== 'change') this.end(w, state);
    }
  }

  /**
   * The state of `nsid` as a log read issued after this call says (one read serves every
   * caller that asks while another is in flight). Rejects when the read fails.
   */
  async fresh(nsid: number): Promise<AnaPathState> {
    await this.refresh();
    return this.stateOf(nsid);
  }

  /**
   * Resolves once a log gives the group of `nsid` a state other than change, or with
   * 'change' once `ms` have passed (Infinity: no bound); rejects when failAll() ends it.
   * Meanwhile the controller is reset each time the wait reaches twice ANATT on one
   * association (watchStuck), timed from the association's start when it waits through
   * a reconnect.
   */
  settled(nsid: number, ms: number): Promise<AnaWait> {
    const now = this.stateOf(nsid);
    if (now !== 'change') return Promise.resolve({ state: now, resets: 0, lost: null });
    return new Promise((resolve, reject) => {
      const bound = ms <= MAX_TIMER_MS ? () => setTimeout(() => this.end(w, 'change'), ms) : null;
      const w: Waiter = { nsid, resolve, reject, timer: bound?.() ?? null, resets: 0 };
      this.waiters.add(w);
      // Not while there is no association (lost in the chunk that completed the log read
      // this waits after): the next one starts it (newAssociation), on its own ANATT.
      if (this.lostWhy === null) this.watchStuck();
    });
  }

  /**
   * A new association: its log says nothing yet (CHGCNT may start again from anything).
   * A command still waiting reads the log on it (the group may have come back while the
   * host reconnected, its event gone with the old association).
   */
  newAssociation(): void {
    this.log = null;
    this.lostWhy = null;
    this.appliedRead = this.issued; // a read of the old one that answers late says nothing
    if (this.waiters.size === 0) return;
    this.refresh().catch(() => {});
    this.watchStuck();
  }

  /**
   * The association is lost (`why`): no reset for being stuck in change until the next
   * one, and a wait that ends before that says so (AnaWait.lost), not that no event came.
   */
  lost(why: string): void {
    this.lostWhy = why;
    this.stopStuck();
  }

  /** End every waiting command with `err` (the controller closes or gives up). */
  failAll(err: HostError): void {
    this.stopStuck();
    for (const w of [...this.waiters]) {
      if (w.timer) clearTimeout(w.timer);
      this.waiters.delete(w);
      w.reject(err);
    }
  }

  private end(w: Waiter, state: AnaPathState): void {
    if (w.timer) clearTimeout(w.timer);
    if (!this.waiters.delete(w)) return;
    if (this.waiters.size === 0) this.stopStuck();
    w.resolve({ state, resets: w.resets, lost: this.lostWhy });
  }

  /**
   * Linux's anatt_timer: commands have waited twice ANATT on this association for a
   * group to leave change, with no log saying it did (a target stuck so, or an event
   * lost), so the controller is reset, as Linux resets it (nvme_anatt_timeout); the
   * commands wait on, and the next association's log decides (newAssociation). Safe for a
   * write: it was answered with a status, so nothing of it is left in flight to land
   * later. Started by the first waiter (not moved by later reads: a stream of commands
   * answered with ANA Transition would put it off for good).
   */
  private watchStuck(): void {
    if (this.stuck || this.waiters.size === 0) return;
    const ms = this.limitMs();
    this.stuck = setTimeout(() => {
      this.stuck = null;
      const nsids = new Set<number>();
      for (const w of this.waiters) {
        w.resets++;
        nsids.add(w.nsid);
      }
      const which = [...nsids].join(', ');
      this.reset(
        `ANA group of namespace ${which} in change for over twice ANATT (${ms} ms) with no ` +
          `ANA change event saying it is usable again: resetting the controller`,
      );
    }, ms);
  }

  private stopStuck(): void {
    if (this.stuck) clearTimeout(this.stuck);
    this.stuck = null;
  }

  private refresh(): Promise<void> {
    if (this.queued) return this.queued;
    const before = this.running;
    const read = async () => {
      await before?.catch(() => {});
      if (this.queued === next) this.queued = null;
      this.running = next;
      try {
        await this.read(this.readLog);
      } finally {
        if (this.running === next) this.running = null;
      }
    };
    const next: Promise<void> = read();
    if (before) this.queued = next;
    else this.running = next;
    return next;
  }
}
