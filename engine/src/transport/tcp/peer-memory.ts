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
  /** What the last check added up (metrics, tests). */
  private lastHeld = 0;
  private log: Logger | null = null;
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
    this.setTight(false);
  }

  /** One check (the timer's job; tests call it to skip the wait). */
  check(now = performance.now()): void {
    let held = 0;
    const stalled: { c: GuardedConnection; bytes: number; ms: number }[] = [];
    for (const c of [...this.members]) {
      const bytes = c.heldBytes();
      const since = c.stalledSince(now);
      const ms = since > 0 ? now - since : 0;
      if (ms >= this.stallMs) {
        this.shed(c, bytes, `no progress for ${Math.round(ms / 1000)} s`);
        continue;
      }
      held += bytes;
      if (ms >= this.tightStallMs) stalled.push({ c, bytes, ms });
    }
    if (held > this.capBytes) {
      // Those holding the most first: the fewest disconnections free the memory.
      stalled.sort((a, b) => b.bytes - a.bytes);
      for (const s of stalled) {
        if (held <= this.capBytes) break;
        const mib = (this.capBytes / 2 ** 20).toFixed(0);
        this.shed(
          s.c,
          s.bytes,
          `connections hold more than ${mib} MiB for their peers, and this one made no progress for ${Math.round(s.ms / 1000)} s`,
        );
        held -= s.bytes;
      }
    }
    this.lastHeld = held;
    if (held > this.capBytes) this.setTight(true);
    else if (held < (this.capBytes * 3) / 4) this.setTight(false);
  }

  private shed(c: GuardedConnection, bytes: number, why: string): void {
    this.members.delete(c);
    // Progress: taking the answers it is owed, sending the data of the R2Ts it holds.
    this.log?.warn('disconnecting a peer that neither takes its answers nor sends its write data', {
      peer: c.peer,
      heldBytes: bytes,
      why,
    });
    c.shed(why);
  }

  private setTight(tight: boolean): void {
    if (tight === this.tightNow) return;
    this.tightNow = tight;
    if (tight) {
      this.log?.warn(
        'NVMe/TCP connections hold more memory than the cap: one read and one write transfer at a time per connection until they drain',
        {
          capBytes: this.capBytes,
          heldBytes: this.lastHeld,
        },
      );
      return;
    }
    this.log?.info('NVMe/TCP connection memory back under the cap', { heldBytes: this.lastHeld });
    for (const c of [...this.members]) c.ease();
  }
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
