/**
 * From one sampler result to named series points for the history store. Key formats
 * are documented in contract/metrics.ts; selectorKey() builds the same keys from a
 * structured selector. Host-connection history is kept per (subsystem, host), not per
 * controller: a CNTLID changes with every reconnect, and a series per reconnect would
 * grow the series table without bound.
 */
import {
  IO_METRICS,
  type IoFigures,
  type IoMetric,
  type MetricSelector,
  type NicMetric,
  type NodeMetric,
} from '../../../contract/metrics.js';
import type { MetricAgg, MetricPoint, SeriesDef } from '../persistence/metrics-store.js';
import type { SamplerResult } from './sampler.js';

const IO_META: Record<
  IoMetric,
  { unit: string; agg: MetricAgg; of: (f: IoFigures) => number | undefined }
> = {
  read_iops: { unit: 'ops/s', agg: 'avg', of: (f) => f.readIops },
  write_iops: { unit: 'ops/s', agg: 'avg', of: (f) => f.writeIops },
  other_iops: { unit: 'ops/s', agg: 'avg', of: (f) => f.otherIops },
  read_bps: { unit: 'bytes/s', agg: 'avg', of: (f) => f.readBps },
  write_bps: { unit: 'bytes/s', agg: 'avg', of: (f) => f.writeBps },
  // p50 is typical latency: averaging it keeps its meaning; the tails keep their worst
  read_lat_p50_us: { unit: 'us', agg: 'avg', of: (f) => f.readLatUs?.p50 },
  read_lat_p99_us: { unit: 'us', agg: 'max', of: (f) => f.readLatUs?.p99 },
  read_lat_p999_us: { unit: 'us', agg: 'max', of: (f) => f.readLatUs?.p999 },
  write_lat_p50_us: { unit: 'us', agg: 'avg', of: (f) => f.writeLatUs?.p50 },
  write_lat_p99_us: { unit: 'us', agg: 'max', of: (f) => f.writeLatUs?.p99 },
  write_lat_p999_us: { unit: 'us', agg: 'max', of: (f) => f.writeLatUs?.p999 },
  queue_depth: { unit: 'commands', agg: 'avg', of: (f) => f.queueDepth },
  errors_ps: { unit: 'errors/s', agg: 'avg', of: (f) => f.errorsPs },
};

const NODE_UNITS: Record<NodeMetric, string> = {
  cpu_pct: 'percent',
  mem_used_bytes: 'bytes',
  mem_total_bytes: 'bytes',
  disk_used_bytes: 'bytes',
  disk_total_bytes: 'bytes',
};

export function nodeKey(metric: NodeMetric): string {
  return `node:${metric}`;
}
export function nicKey(iface: string, metric: NicMetric): string {
  return `nic:${iface}:${metric}`;
}
export function nsKey(nqn: string, nsid: number, metric: IoMetric): string {
  return `ns:${nqn}/${nsid}:${metric}`;
}
export function hostKey(nqn: string, hostnqn: string, metric: IoMetric): string {
  return `host:${nqn}/${hostnqn}:${metric}`;
}

export function selectorKey(s: MetricSelector): string {
  switch (s.scope) {
    case 'node':
      return nodeKey(s.metric);
    case 'nic':
      return nicKey(s.interface, s.metric);
    case 'namespace':
      return nsKey(s.nqn, s.nsid, s.metric);
    case 'host':
      return hostKey(s.nqn, s.hostnqn, s.metric);
  }
}

function ioPoints(
  scope: 'namespace' | 'host',
  labels: Record<string, string>,
  key: (m: IoMetric) => string,
  f: IoFigures,
  out: MetricPoint[],
): void {
  for (const metric of IO_METRICS) {
    const meta = IO_META[metric];
    const value = meta.of(f);
    // no reads in the interval: no latency point, rather than a misleading 0
    if (value === undefined) continue;
    out.push({
      series: { key: key(metric), scope, metric, unit: meta.unit, agg: meta.agg, labels },
      value,
    });
  }
}

export function samplePoints(r: SamplerResult): MetricPoint[] {
  const out: MetricPoint[] = [];
  const node = r.sample.node;
  const nodeValues: Record<NodeMetric, number | null> = {
    cpu_pct: node.cpuPct,
    mem_used_bytes: node.memUsedBytes,
    mem_total_bytes: node.memTotalBytes,
    disk_used_bytes: node.diskUsedBytes,
    disk_total_bytes: node.diskTotalBytes,
  };
  for (const [metric, value] of Object.entries(nodeValues) as [NodeMetric, number | null][]) {
    if (value === null) continue;
    const series: SeriesDef = {
      key: nodeKey(metric),
      scope: 'node',
      metric,
      unit: NODE_UNITS[metric],
      agg: 'avg',
      labels: {},
    };
    out.push({ series, value });
  }
  for (const n of node.net) {
    for (const [metric, value] of [
      ['rx_bps', n.rxBps],
      ['tx_bps', n.txBps],
    ] as const) {
      out.push({
        series: {
          key: nicKey(n.interface, metric),
          scope: 'nic',
          metric,
          unit: 'bytes/s',
          agg: 'avg',
          labels: { interface: n.interface },
        },
        value,
      });
    }
  }
  for (const ns of r.sample.namespaces) {
    const labels = { nqn: ns.nqn, nsid: String(ns.nsid) };
    ioPoints('namespace', labels, (m) => nsKey(ns.nqn, ns.nsid, m), ns, out);
  }
  for (const l of r.links) {
    const labels = { nqn: l.nqn, hostnqn: l.hostnqn };
    ioPoints('host', labels, (m) => hostKey(l.nqn, l.hostnqn, m), l, out);
  }
  return out;
}
