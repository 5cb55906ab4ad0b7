/**
 * The metrics sampler: once a second (the service's timer calls sample()) it reads
 * the core's cumulative I/O counters and the node's /proc counters and turns the
 * difference to the previous reading into rates, percentiles and gauges. Everything
 * lives in memory; the service hands each result to the store and to dashboards.
 *
 * The clock and the node sources are injected, so tests step time by hand and feed
 * synthetic /proc text; rates always divide by the clock's own interval, never by an
 * assumed second, so a late timer does not inflate them.
 */
import type { IoFigures, MetricsSample, NodeFigures } from '../../../contract/metrics.js';
import type { BackendPathCounts, ControllerSummary, Target } from '../core/index.js';
import type { IoStatsSnapshot } from '../core/stats.js';
import { histAdd, histDelta, percentiles } from './latency.js';
import { readNode, systemSources, type NodeReading, type NodeSources } from './node.js';

export interface NamespaceReading {
  readonly nqn: string;
  readonly nsid: number;
  readonly stats: IoStatsSnapshot;
  /** How its backend ran the I/O (BlockBackend.pathCounts), for backends that count. */
  readonly paths?: BackendPathCounts;
}

/** Where I/O counters come from: the core target, or a fake in tests. */
export interface IoSource {
  namespaces(): NamespaceReading[];
  /** Every controller; discovery controllers are skipped by the sampler. */
  controllers(): ControllerSummary[];
  /**
   * Whether the host is on the subsystem's allow-list (default: every host counts as
   * listed). Only listed hosts get history without limit; see MAX_UNLISTED_LINKS.
   */
  listed?(nqn: string, hostnqn: string): boolean;
}

/**
 * (Subsystem, host) pairs outside any allow-list (admitted by a volume that allows any
 * host) that get history of their own, per engine run: each pair is 7-13 series kept for
 * a year, and a peer that changes its host NQN at will would otherwise grow them without
 * end (35k series made a query take 1.5 s on the engine's thread). Their I/O still
 * counts in the namespace's figures and in the live per-controller sample.
 */
export const MAX_UNLISTED_LINKS = 64;

export function targetIoSource(target: Target): IoSource {
  return {
    namespaces: () =>
      target.subsystemList().flatMap((s) =>
        [...s.namespaces.values()].map((ns) => ({
          nqn: s.nqn,
          nsid: ns.nsid,
          stats: ns.stats.snapshot(),
          paths: ns.backend.pathCounts?.(),
        })),
      ),
    controllers: () => target.listControllers(),
    listed: (nqn, hostnqn) =>
      target.subsystemList().some((s) => s.nqn === nqn && s.hosts.has(hostnqn)),
  };
}

export interface SamplerOptions {
  io: IoSource;
  dataDir: string;
  node?: NodeSources;
  /** ms since epoch (default Date.now). */
  clock?: () => number;
  includeLoopback?: boolean;
}

/** I/O of every controller of one host on one subsystem, for history that survives reconnects. */
export type LinkFigures = IoFigures & { nqn: string; hostnqn: string };

export interface SamplerResult {
  sample: MetricsSample;
  links: LinkFigures[];
}

/** The counters as last read, for the Prometheus endpoint (which wants raw totals). */
export interface RawReading {
  at: number;
  namespaces: NamespaceReading[];
  controllers: ControllerSummary[];
  node: NodeReading;
}

type Delta = Omit<IoStatsSnapshot, 'readLatencyHist' | 'writeLatencyHist'> & {
  readLatencyHist: Float64Array;
  writeLatencyHist: Float64Array;
};

const COUNTERS = [
  'readOps',
  'readBytes',
  'readLatencyUs',
  'writeOps',
  'writeBytes',
  'writeLatencyUs',
  'otherOps',
  'otherLatencyUs',
  'errors',
] as const;

export class MetricsSampler {
  private readonly clock: () => number;
  private readonly node: NodeSources;
  private last: RawReading | null = null;
  /** Unlisted pairs given history so far (at most MAX_UNLISTED_LINKS). */
  private readonly unlisted = new Set<string>();

  constructor(private readonly opts: SamplerOptions) {
    this.clock = opts.clock ?? Date.now;
    this.node = opts.node ?? systemSources;
  }

  /** The previous reading (raw totals), null before the first sample. */
  latest(): RawReading | null {
    return this.last;
  }

  /** Reads everything; null on the first call (it only sets the baseline) or a clock step back. */
  async sample(): Promise<SamplerResult | null> {
    const node = await readNode(this.node, {
      dataDir: this.opts.dataDir,
      includeLoopback: this.opts.includeLoopback,
    });
    // I/O counters are read after the async node read, right before the clock, so the
    // interval they are divided by is the one they were counted in.
    const cur: RawReading = {
      namespaces: this.opts.io.namespaces(),
      controllers: this.opts.io.controllers().filter((c) => c.kind === 'io'),
      node,
      at: this.clock(),
    };
    const prev = this.last;
    this.last = cur;
    if (!prev || cur.at <= prev.at) return null;
    const sec = (cur.at - prev.at) / 1000;
    const prevCtrl = new Map(prev.controllers.map((c) => [c.cntlid, c]));
    const ctrlDeltas = cur.controllers.map((c) =>
      delta(c.stats, sameController(prevCtrl.get(c.cntlid), c)),
    );
    return {
      sample: figures(prev, cur, ctrlDeltas, sec),
      links: linkFigures(cur.controllers, ctrlDeltas, sec).filter((l) => this.recorded(l)),
    };
  }

  /** Whether a (subsystem, host) pair gets history (see MAX_UNLISTED_LINKS). */
  private recorded(l: LinkFigures): boolean {
    if (this.opts.io.listed?.(l.nqn, l.hostnqn) ?? true) return true;
    const k = `${l.nqn}\0${l.hostnqn}`;
    if (this.unlisted.has(k)) return true;
    if (this.unlisted.size >= MAX_UNLISTED_LINKS) return false;
    this.unlisted.add(k);
    return true;
  }
}

function figures(
  prev: RawReading,
  cur: RawReading,
  ctrlDeltas: Delta[],
  sec: number,
): MetricsSample {
  const prevNs = new Map(prev.namespaces.map((n) => [`${n.nqn}\0${n.nsid}`, n.stats]));
  return {
    at: cur.at,
    intervalSec: sec,
    node: nodeFigures(prev.node, cur.node, sec),
    namespaces: cur.namespaces.map((n) => ({
      nqn: n.nqn,
      nsid: n.nsid,
      ...ioFigures(delta(n.stats, prevNs.get(`${n.nqn}\0${n.nsid}`)), sec),
    })),
    hosts: cur.controllers.map((c, i) => ({
      nqn: c.subnqn,
      hostnqn: c.hostnqn,
      cntlid: c.cntlid,
      ...ioFigures(ctrlDeltas[i]!, sec),
    })),
  };
}

/** Sums each (subsystem, host) pair's controllers; histograms add, so percentiles stay exact. */
function linkFigures(ctrls: ControllerSummary[], deltas: Delta[], sec: number): LinkFigures[] {
  const groups = new Map<string, { nqn: string; hostnqn: string; sum: Delta }>();
  ctrls.forEach((c, i) => {
    const k = `${c.subnqn}\0${c.hostnqn}`;
    const g = groups.get(k);
    const d = deltas[i]!;
    if (g) addDelta(g.sum, d);
    else groups.set(k, { nqn: c.subnqn, hostnqn: c.hostnqn, sum: copyDelta(d) });
  });
  return [...groups.values()].map((g) => ({
    nqn: g.nqn,
    hostnqn: g.hostnqn,
    ...ioFigures(g.sum, sec),
  }));
}

/** The previous summary only if it is the same association (a CNTLID can be reused). */
function sameController(
  p: ControllerSummary | undefined,
  c: ControllerSummary,
): IoStatsSnapshot | undefined {
  return p && p.subnqn === c.subnqn && p.hostnqn === c.hostnqn ? p.stats : undefined;
}

/** cur − prev; a counter that went down means a new object (re-added namespace): count from 0. */
function delta(cur: IoStatsSnapshot, prev: IoStatsSnapshot | undefined): Delta {
  const base = prev && COUNTERS.every((k) => cur[k] >= prev[k]) ? prev : undefined;
  const d = {
    readLatencyHist: histDelta(cur.readLatencyHist, base?.readLatencyHist),
    writeLatencyHist: histDelta(cur.writeLatencyHist, base?.writeLatencyHist),
  } as Delta;
  for (const k of COUNTERS) (d as Record<string, unknown>)[k] = cur[k] - (base?.[k] ?? 0);
  return d;
}

function copyDelta(d: Delta): Delta {
  return {
    ...d,
    readLatencyHist: d.readLatencyHist.slice(),
    writeLatencyHist: d.writeLatencyHist.slice(),
  };
}

function addDelta(into: Delta, d: Delta): void {
  const w = into as unknown as Record<string, number>;
  for (const k of COUNTERS) w[k] = w[k]! + d[k];
  histAdd(into.readLatencyHist, d.readLatencyHist);
  histAdd(into.writeLatencyHist, d.writeLatencyHist);
}

function ioFigures(d: Delta, sec: number): IoFigures {
  return {
    readIops: d.readOps / sec,
    writeIops: d.writeOps / sec,
    otherIops: d.otherOps / sec,
    readBps: d.readBytes / sec,
    writeBps: d.writeBytes / sec,
    readLatUs: percentiles(d.readLatencyHist),
    writeLatUs: percentiles(d.writeLatencyHist),
    // Little's law: the time commands spent outstanding, per time elapsed.
    queueDepth: (d.readLatencyUs + d.writeLatencyUs + d.otherLatencyUs) / (sec * 1e6),
    errorsPs: d.errors / sec,
  };
}

function nodeFigures(prev: NodeReading, cur: NodeReading, sec: number): NodeFigures {
  let cpuPct: number | null = null;
  if (prev.cpu && cur.cpu && cur.cpu.total > prev.cpu.total) {
    const busy = Math.max(0, cur.cpu.busy - prev.cpu.busy);
    cpuPct = Math.min(100, (100 * busy) / (cur.cpu.total - prev.cpu.total));
  }
  const net: NodeFigures['net'] = [];
  for (const [name, c] of cur.net) {
    const p = prev.net.get(name);
    // a counter that went back (interface re-created, 32-bit wrap) gives no rate this once
    if (!p || c.rxBytes < p.rxBytes || c.txBytes < p.txBytes) continue;
    net.push({
      interface: name,
      rxBps: (c.rxBytes - p.rxBytes) / sec,
      txBps: (c.txBytes - p.txBytes) / sec,
    });
  }
  return {
    cpuPct,
    memUsedBytes: cur.mem?.usedBytes ?? null,
    memTotalBytes: cur.mem?.totalBytes ?? null,
    diskUsedBytes: cur.disk?.usedBytes ?? null,
    diskTotalBytes: cur.disk?.totalBytes ?? null,
    net,
  };
}
