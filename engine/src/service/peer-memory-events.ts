/**
 * The event log's view of the bound on what NVMe/TCP connections hold (the transport's
 * PeerMemoryGuard): peers it disconnected, and the node going over its cap and back.
 *
 * The guard decides every 250 ms, and a load near the cap can swing over and under it
 * (over the cap every connection runs one read at a time, which brings it under again):
 * an event, and a warning mail, for each swing would be hundreds a minute. So the log
 * gets at most one over-cap event per overCapMs (it counts the swings in between), its
 * under-cap partner only for an over-cap it recorded, and one disconnection event per
 * disconnectMs, with every peer disconnected since the last one. /metrics counts all.
 */
import { performance } from 'node:perf_hooks';
import type { Severity } from '../../../contract/events.js';
import type { PeerMemoryEvent, ShedPeer } from '../transport/tcp/peer-memory.js';

export const PEERS_DISCONNECTED = 'target.connection.disconnected';
export const MEMORY_OVER_CAP = 'target.memory.over-cap';
export const MEMORY_UNDER_CAP = 'target.memory.under-cap';

export interface MemoryEventFloors {
  /** At most one over-cap event per this long. */
  readonly overCapMs: number;
  /** At most one disconnection event per this long. */
  readonly disconnectMs: number;
}

export const MEMORY_EVENT_FLOORS: MemoryEventFloors = {
  overCapMs: 10 * 60_000,
  disconnectMs: 60_000,
};

/** Peers a disconnection event names in its message, and lists in its data. */
const SHED_NAMED = 5;
const SHED_DATA = 50;

type Recorded = { type: string; severity: Severity; message: string; data?: unknown };

/** Disconnections waiting for their event. */
interface Shed {
  peers: ShedPeer[];
  count: number;
  capBytes: number;
  leastStalledMs: number;
  allNoProgress: boolean;
}

export class PeerMemoryEvents {
  private lastOverAt = -Infinity;
  /** The over-cap event of the current time over the cap was recorded (so is its end). */
  private overRecorded = false;
  /** Times over the cap since the last over-cap event, not recorded. */
  private swings = 0;
  private lastShedAt = -Infinity;
  private shed: Shed | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly record: (ev: Recorded) => void,
    private readonly floors: MemoryEventFloors = MEMORY_EVENT_FLOORS,
    private readonly now: () => number = () => performance.now(),
  ) {}

  on(e: PeerMemoryEvent): void {
    const cap = mib(e.capBytes);
    switch (e.kind) {
      case 'shed':
        return this.disconnected(e.peers, e.capBytes);
      case 'tight': {
        const now = this.now();
        if (now - this.lastOverAt < this.floors.overCapMs) {
          this.swings++;
          this.overRecorded = false;
          return;
        }
        const swings =
          this.swings > 0
            ? ` It went over the cap ${this.swings} more time${this.swings === 1 ? '' : 's'} since the last such event.`
            : '';
        this.lastOverAt = now;
        this.overRecorded = true;
        this.record({
          type: MEMORY_OVER_CAP,
          severity: 'warning',
          message:
            `The node's NVMe/TCP connections hold ${mib(e.heldBytes)} for their hosts, more than their ${cap} cap (answers hosts have not taken, write data in flight). ` +
            'Each connection now runs one read and one write transfer at a time until they drain, so hosts slow down; those that stop taking their answers are disconnected. ' +
            `If this repeats, look for hosts that stall or a saturated network, or add memory.${swings}`,
          data: { heldBytes: e.heldBytes, capBytes: e.capBytes, swingsBefore: this.swings },
        });
        this.swings = 0;
        return;
      }
      case 'eased':
        if (!this.overRecorded) return;
        this.overRecorded = false;
        this.record({
          type: MEMORY_UNDER_CAP,
          severity: 'info',
          message: `The node's NVMe/TCP connections are back under their ${cap} memory cap after ${(e.tightMs / 1000).toFixed(1)} s; hosts run at full depth again.`,
          data: { heldBytes: e.heldBytes, capBytes: e.capBytes, tightMs: Math.round(e.tightMs) },
        });
    }
  }

  /** Records what waits now (at engine stop: nothing is lost). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.flush();
  }

  private disconnected(peers: readonly ShedPeer[], capBytes: number): void {
    const s = (this.shed ??= {
      peers: [],
      count: 0,
      capBytes,
      leastStalledMs: Infinity,
      allNoProgress: true,
    });
    s.peers.push(...peers.slice(0, SHED_DATA - s.peers.length));
    s.count += peers.length;
    s.capBytes = capBytes;
    for (const p of peers) {
      s.leastStalledMs = Math.min(s.leastStalledMs, p.stalledMs);
      if (p.reason !== 'no-progress') s.allNoProgress = false;
    }
    const wait = this.lastShedAt + this.floors.disconnectMs - this.now();
    if (wait <= 0) return this.flush();
    this.timer ??= setTimeout(() => {
      this.timer = null;
      this.flush();
    }, wait);
    this.timer.unref();
  }

  private flush(): void {
    const s = this.shed;
    if (!s) return;
    this.shed = null;
    this.lastShedAt = this.now();
    const named = s.peers.slice(0, SHED_NAMED).map(describePeer);
    const more = s.count - named.length;
    const who =
      s.count === 1
        ? named[0]!
        : `${s.count} connections: ${named.join('; ')}${more > 0 ? `; and ${more} more` : ''}`;
    const [it, them] = s.count === 1 ? ['it', 'it'] : ['they', 'them'];
    const secs = Math.round(s.leastStalledMs / 1000);
    const stalled = `took none of the answers sent to ${them}, and sent none of the write data asked of ${them}, for ${secs} s or more`;
    const why = s.allNoProgress
      ? `${it} ${stalled}`
      : `the node's NVMe/TCP connections held more than their ${mib(s.capBytes)} cap, and ${it} ${stalled}`;
    this.record({
      type: PEERS_DISCONNECTED,
      severity: 'warning',
      message:
        `Disconnected ${who}: ${why}. A live host reconnects and retries its commands. ` +
        'If a host does not come back, or this repeats, check that host and its network (a hung host, a saturated link).',
      data: {
        capBytes: s.capBytes,
        peers: s.peers.map(({ owner, ...p }) => ({ ...p, ...owner })),
        count: s.count,
      },
    });
  }
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** "host nqn.… (10.0.0.5:51234, I/O queue 3 of nqn.…, 12.0 MiB held)". */
function describePeer(p: ShedPeer): string {
  const o = p.owner;
  const queue = o ? `${o.qid === 0 ? 'admin queue' : `I/O queue ${o.qid}`} of ${o.subnqn}, ` : '';
  const held = `${mib(p.heldBytes)} held`;
  return o
    ? `host ${o.hostnqn} (${p.peer}, ${queue}${held})`
    : `a peer at ${p.peer} (not connected to a subsystem yet, ${held})`;
}
