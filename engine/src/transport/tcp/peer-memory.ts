/**
 * What every NVMe/TCP connection of the process holds for its peer, against one cap.
 *
 * Each connection is bounded on its own (READ_BUDGET, TX_HOLD_BYTES, R2T_BUDGET: about
 * 20 MiB for a peer that stops reading), but MAX_CONNECTIONS of them are not: 4096 peers
 * that send reads or log page requests and never take the answers could make the
 * engine hold tens of GiB and be killed for it, taking every host's storage with it.
 * This guard adds the process-wide bound:
 *
 * - A peer that has taken no byte for PEER_STALL_MS while answers wait for it, or sent
 *   no byte of the data of an R2T it holds, is disconnected (as a web server's send
 *   timeout does). A live host never gets there: Linux times a command out after 30 s
 *   and resets the controller. A peer that reads or sends slowly is making progress.
 * - Over the cap the process is 'tight': a connection starts a read (log pages
 *   included) or hands out an R2T only when it holds none, and the stalled peers (no
 *   byte taken for TIGHT_STALL_MS) holding the most are disconnected until the rest
 *   fits. Below 3/4 of the cap the connections go back to their own budgets and start
 *   what waited.
 *
 * The check runs every tickMs while any connection exists; between two checks the
 * per-connection bounds still hold, so the cap is exceeded by at most one tick's growth.
 */
import type { Socket } from 'node:net';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import type { QueueOwner } from '../../core/seam.js';
import type { Logger } from '../../util/log.js';

/** A connection as the guard sees it (TcpQueue). */
export interface GuardedConnection {
  readonly peer: string;
  /** Bytes held for the peer now: reads running, unsent answers, write data, input. */
  heldBytes(): number;
  /** Since when (performance.now()) the peer took none of the answers it owes, or sent
   * none of the write data it owes; 0 when it owes nothing. `now` is check()'s clock:
   * progress seen now dates from it. */
  stalledSince(now: number): number;
  /** The process left the tight state: start what waited for it. */
  ease(): void;
  /** Disconnect (the guard's decision, with the reason for the log). */
  shed(reason: string): void;
  /** Whose queue it is, once connected (for the event that says who was disconnected). */
  owner(): QueueOwner | null;
}

/** A connection the guard disconnected. */
export interface ShedPeer {
  /** host:port */
  readonly peer: string;
  readonly owner: QueueOwner | null;
  readonly heldBytes: number;
  /** How long it had made no progress. */
  readonly stalledMs: number;
  /** 'no-progress': PEER_STALL_MS passed; 'over-cap': stalled while the process was over its cap. */
  readonly reason: 'no-progress' | 'over-cap';
}

/**
 * What the guard did, for the event log: the peers one check disconnected (one event
 * for all of them, however many), and the process going over its cap and back under.
 */
export type PeerMemoryEvent =
  | { readonly kind: 'shed'; readonly peers: readonly ShedPeer[]; readonly capBytes: number }
  | { readonly kind: 'tight'; readonly heldBytes: number; readonly capBytes: number }
  | {
      readonly kind: 'eased';
      readonly heldBytes: number;
      readonly capBytes: number;
      /** How long the process was over its cap. */
      readonly tightMs: number;
    };

/** The guard's figures (metrics). */
export interface PeerMemoryStats {
  readonly capBytes: number;
  /** What connections held at the last check. */
  readonly heldBytes: number;
  readonly tight: boolean;
  readonly connections: number;
  /** Peers disconnected since the process started, by reason. */
  readonly shedNoProgress: number;
  readonly shedOverCap: number;
  /** Times the process went over its cap. */
  readonly tightEntered: number;
}

export interface PeerMemoryOptions {
  readonly capBytes?: number;
  readonly stallMs?: number;
  readonly tightStallMs?: number;
  readonly tickMs?: number;
}

/** A peer that made no progress (took no byte of its answers, sent no byte of the data
 * of its R2Ts) for this long is disconnected in any case. */
export const PEER_STALL_MS = 60_000;
/** Over the cap, stalled peers are disconnected (those holding most first) after this. */
export const TIGHT_STALL_MS = 2_000;
/** How often the guard adds up what connections hold. */
export const GUARD_TICK_MS = 250;

/** The default cap: an eighth of the machine's memory, between 256 MiB and 2 GiB. */
export function defaultPeerMemoryCap(total = os.totalmem()): number {
  return Math.min(2 * 2 ** 30, Math.max(256 * 2 ** 20, Math.floor(total / 8)));
}

export class PeerMemoryGuard {
  private readonly members = new Set<GuardedConnection>();
  private timer: NodeJS.Timeout | null = null;
  private tightNow = false;
  /** When (performance.now()) the process went over its cap. */
  private tightAt = 0;
  /** What the last check added up (metrics, tests). */
  private lastHeld = 0;
  private log: Logger | null = null;
  private readonly listeners = new Set<(e: PeerMemoryEvent) => void>();
  private counts = { noProgress: 0, overCap: 0, tight: 0 };
  readonly capBytes: number;
  private readonly stallMs: number;
  private readonly tightStallMs: number;
  private readonly tickMs: number;

  constructor(opts: PeerMemoryOptions = {}) {
    this.capBytes = opts.capBytes ?? defaultPeerMemoryCap();
    this.stallMs = opts.stallMs ?? PEER_STALL_MS;
    this.tightStallMs = opts.tightStallMs ?? TIGHT_STALL_MS;
    this.tickMs = opts.tickMs ?? GUARD_TICK_MS;
  }

  /** Over the cap: connections hold back to one read and one R2T at a time. */
  get tight(): boolean {
    return this.tightNow;
  }

  /** Bytes all connections held at the last check. */
  get held(): number {
    return this.lastHeld;
  }

  stats(): PeerMemoryStats {
    return {
      capBytes: this.capBytes,
      heldBytes: this.lastHeld,
      tight: this.tightNow,
      connections: this.members.size,
      shedNoProgress: this.counts.noProgress,
      shedOverCap: this.counts.overCap,
      tightEntered: this.counts.tight,
    };
  }

  /** Tells `fn` of every PeerMemoryEvent until the returned function is called. */
  listen(fn: (e: PeerMemoryEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  join(c: GuardedConnection, log: Logger): void {
    this.log ??= log;
    this.members.add(c);
    if (!this.timer) {
      this.timer = setInterval(() => this.check(), this.tickMs);
      this.timer.unref(); // never what keeps a process alive
    }
  }

  leave(c: GuardedConnection): void {
    this.members.delete(c);
    if (this.members.size > 0 || !this.timer) return;
    clearInterval(this.timer);
    this.timer = null;
    this.lastHeld = 0;
    this.setTight(false, performance.now());
  }

  /** One check (the timer's job; tests call it to skip the wait). */
  check(now = performance.now()): void {
    let held = 0;
    const shed: ShedPeer[] = [];
    const stalled: { c: GuardedConnection; bytes: number; ms: number }[] = [];
    for (const c of [...this.members]) {
      const bytes = c.heldBytes();
      const since = c.stalledSince(now);
      const ms = since > 0 ? now - since : 0;
      if (ms >= this.stallMs) {
        shed.push(this.shed(c, bytes, ms, 'no-progress', `no progress for ${seconds(ms)} s`));
        continue;
      }
      held += bytes;
      if (ms >= this.tightStallMs) stalled.push({ c, bytes, ms });
    }
    if (held > this.capBytes) {
      // Those holding the most first: the fewest disconnections free the memory.
      stalled.sort((a, b) => b.bytes - a.bytes);
      const mib = (this.capBytes / 2 ** 20).toFixed(0);
      for (const s of stalled) {
        if (held <= this.capBytes) break;
        const why = `connections hold more than ${mib} MiB for their peers, and this one made no progress for ${seconds(s.ms)} s`;
        shed.push(this.shed(s.c, s.bytes, s.ms, 'over-cap', why));
        held -= s.bytes;
      }
    }
    this.lastHeld = held;
    if (shed.length > 0) this.tell({ kind: 'shed', peers: shed, capBytes: this.capBytes });
    if (held > this.capBytes) this.setTight(true, now);
    else if (held < (this.capBytes * 3) / 4) this.setTight(false, now);
  }

  private shed(
    c: GuardedConnection,
    bytes: number,
    ms: number,
    reason: ShedPeer['reason'],
    why: string,
  ): ShedPeer {
    this.members.delete(c);
    const owner = c.owner();
    // Progress: taking the answers it is owed, sending the data of the R2Ts it holds.
    this.log?.warn('disconnecting a peer that neither takes its answers nor sends its write data', {
      peer: c.peer,
      ...owner,
      heldBytes: bytes,
      why,
    });
    c.shed(why);
    if (reason === 'no-progress') this.counts.noProgress++;
    else this.counts.overCap++;
    return { peer: c.peer, owner, heldBytes: bytes, stalledMs: ms, reason };
  }

  /** Listeners are told in turn; one that throws is logged and stops no other. */
  private tell(e: PeerMemoryEvent): void {
    for (const fn of [...this.listeners]) {
      try {
        fn(e);
      } catch (err) {
        this.log?.error('a listener of the connection memory guard failed', { err });
      }
    }
  }

  private setTight(tight: boolean, now: number): void {
    if (tight === this.tightNow) return;
    this.tightNow = tight;
    const at = { heldBytes: this.lastHeld, capBytes: this.capBytes };
    if (tight) {
      this.tightAt = now;
      this.counts.tight++;
      this.log?.warn(
        'NVMe/TCP connections hold more memory than the cap: one read and one write transfer at a time per connection until they drain',
        at,
      );
      this.tell({ kind: 'tight', ...at });
      return;
    }
    this.log?.info('NVMe/TCP connection memory back under the cap', at);
    for (const c of [...this.members]) c.ease();
    this.tell({ kind: 'eased', ...at, tightMs: Math.max(0, now - this.tightAt) });
  }
}

function seconds(ms: number): number {
  return Math.round(ms / 1000);
}

/**
 * Bytes the kernel has taken from this socket so far. Node keeps no public count of it:
 * bytesWritten includes what still waits in user space, and writableLength falls only as
 * whole writes finish (one corked batch can be megabytes). So the count is read from the
 * same fields net.Socket's bufferSize uses, with that coarser fallback.
 */
export function bytesTaken(s: Socket): number {
  const internal = s as unknown as {
    _bytesDispatched?: number;
    _handle?: { writeQueueSize?: number } | null;
  };
  const dispatched = internal._bytesDispatched;
  const queued = internal._handle?.writeQueueSize;
  if (typeof dispatched === 'number' && typeof queued === 'number') return dispatched - queued;
  return s.bytesWritten - s.writableLength;
}

/** The guard every listener of the process shares unless given its own (tests). */
export const processPeerMemory = new PeerMemoryGuard();
