/**
 * The Prometheus text exposition (format 0.0.4) of the sampler's latest reading.
 * I/O figures are exposed as the core's raw counters, not as per-second rates:
 * Prometheus computes rates itself (rate()) and survives a missed scrape that way.
 * Latency is a histogram built from the core's log2 buckets, so histogram_quantile()
 * works; io_time_seconds_total is the summed latency, whose rate() is the mean queue
 * depth (Little's law). Node gauges come from the last one-second sample.
 */
import { countBySeverity } from '../../../contract/alert-words.js';
import type { Alert } from '../../../contract/events.js';
import type { MetricsSample } from '../../../contract/metrics.js';
import { LATENCY_BUCKETS } from '../core/stats.js';
import type { IoStatsSnapshot } from '../core/stats.js';
import type { BackendPathCounts } from '../core/index.js';
import type { NamespaceReading, RawReading } from './sampler.js';

/** Histogram buckets exposed: le = 2^b µs for b ≤ this (≈ 16.8 s), then +Inf. */
const LAST_EXPOSED_BUCKET = 24;

type Labels = Record<string, string | number>;

class Exposition {
  private readonly lines: string[] = [];

  family(name: string, type: 'counter' | 'gauge' | 'histogram', help: string): void {
    this.lines.push(`# HELP ${name} ${help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')}`);
    this.lines.push(`# TYPE ${name} ${type}`);
  }

  sample(name: string, labels: Labels, value: number): void {
    const l = Object.entries(labels)
      .map(([k, v]) => `${k}="${escapeLabel(String(v))}"`)
      .join(',');
    this.lines.push(`${name}${l ? `{${l}}` : ''} ${formatValue(value)}`);
  }

  text(): string {
    return this.lines.join('\n') + '\n';
  }
}

export function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

const COUNTERS: [suffix: string, help: string, of: (s: IoStatsSnapshot) => number][] = [
  ['read_ops_total', 'Read commands completed.', (s) => s.readOps],
  ['write_ops_total', 'Write commands completed.', (s) => s.writeOps],
  [
    'other_ops_total',
    'Flush, Write Zeroes, DSM and Compare commands completed.',
    (s) => s.otherOps,
  ],
  ['read_bytes_total', 'Bytes read by hosts.', (s) => s.readBytes],
  ['write_bytes_total', 'Bytes written by hosts.', (s) => s.writeBytes],
  ['errors_total', 'Commands completed with an error status.', (s) => s.errors],
  [
    'io_time_seconds_total',
    'Summed command latency; its rate is the mean queue depth.',
    (s) => (s.readLatencyUs + s.writeLatencyUs + s.otherLatencyUs) / 1e6,
  ],
];

interface IoEntity {
  labels: Labels;
  stats: IoStatsSnapshot;
}

function ioFamilies(out: Exposition, prefix: string, what: string, items: IoEntity[]): void {
  for (const [suffix, help, of] of COUNTERS) {
    out.family(`${prefix}_${suffix}`, 'counter', `${help} Per ${what}.`);
    for (const it of items) out.sample(`${prefix}_${suffix}`, it.labels, of(it.stats));
  }
}

function latencyHistogram(
  out: Exposition,
  name: string,
  help: string,
  items: IoEntity[],
  pick: (s: IoStatsSnapshot) => { hist: ArrayLike<number>; sumUs: number },
): void {
  out.family(name, 'histogram', help);
  for (const it of items) {
    const { hist, sumUs } = pick(it.stats);
    let cumulative = 0;
    let total = 0;
    for (let b = 0; b < LATENCY_BUCKETS; b++) total += hist[b] ?? 0;
    for (let b = 0; b <= LAST_EXPOSED_BUCKET; b++) {
      cumulative += hist[b] ?? 0;
      out.sample(`${name}_bucket`, { ...it.labels, le: String(2 ** b / 1e6) }, cumulative);
    }
    out.sample(`${name}_bucket`, { ...it.labels, le: '+Inf' }, total);
    out.sample(`${name}_sum`, it.labels, sumUs / 1e6);
    out.sample(`${name}_count`, it.labels, total);
  }
}

/** An active alert as the exposition shows it. */
export type ExposedAlert = Pick<Alert, 'rule' | 'subject' | 'severity' | 'ackedAt'>;

export function renderPrometheus(
  raw: RawReading | null,
  last: MetricsSample | null,
  alerts: readonly ExposedAlert[] = [],
  connections: ConnectionMemory | null = null,
): string {
  const out = new Exposition();
  const namespaces: IoEntity[] = (raw?.namespaces ?? []).map((n) => ({
    labels: { nqn: n.nqn, nsid: n.nsid },
    stats: n.stats,
  }));
  ioFamilies(out, 'branchsan_namespace', 'namespace', namespaces);
  latencyHistogram(
    out,
    'branchsan_namespace_read_latency_seconds',
    'Read completion latency per namespace.',
    namespaces,
    (s) => ({ hist: s.readLatencyHist, sumUs: s.readLatencyUs }),
  );
  latencyHistogram(
    out,
    'branchsan_namespace_write_latency_seconds',
    'Write completion latency per namespace.',
    namespaces,
    (s) => ({ hist: s.writeLatencyHist, sumUs: s.writeLatencyUs }),
  );
  backendPathFamilies(out, raw?.namespaces ?? []);
  const controllers: IoEntity[] = (raw?.controllers ?? []).map((c) => ({
    labels: { nqn: c.subnqn, hostnqn: c.hostnqn, cntlid: c.cntlid },
    stats: c.stats,
  }));
  ioFamilies(out, 'branchsan_host', 'host connection (I/O controller)', controllers);
  nodeFamilies(out, raw, last);
  if (connections) connectionFamilies(out, connections);
  alertFamilies(out, alerts);
  return out.text();
}

/**
 * How each file or block namespace's backend ran its I/O: on the event loop or on an
 * I/O thread, and the polls for lone I/Os' completions, so that the io tuning of a
 * volume (inlineReads, inlineWrites, completionSpinMicros) can be judged.
 */
function backendPathFamilies(out: Exposition, namespaces: readonly NamespaceReading[]): void {
  const families: [
    name: string,
    help: string,
    label: string,
    [string, keyof BackendPathCounts][],
  ][] = [
    [
      'branchsan_namespace_event_loop_io_total',
      'I/O the engine ran on its event loop instead of an I/O thread: reads the page cache held (op="read"), reads tried so that were not cached and went to a thread (op="read-missed"), lone writes to a file in RAM (op="write").',
      'op',
      [
        ['read', 'inlineReads'],
        ['read-missed', 'inlineReadsMissed'],
        ['write', 'inlineWrites'],
      ],
    ],
    [
      'branchsan_namespace_completion_polls_total',
      'Lone I/Os on an I/O thread whose completion the event loop polled for (io.completionSpinMicros): caught in the poll, or missed (the poll ran out; many misses mean the disk is slower than the poll).',
      'result',
      [
        ['caught', 'pollsCaught'],
        ['missed', 'pollsMissed'],
      ],
    ],
  ];
  for (const [name, help, label, values] of families) {
    out.family(name, 'counter', help);
    for (const { nqn, nsid, paths } of namespaces) {
      if (!paths) continue;
      for (const [v, key] of values) out.sample(name, { nqn, nsid, [label]: v }, paths[key]);
    }
  }
}

/** What the NVMe/TCP connections hold against their cap (the transport's PeerMemoryGuard.stats()). */
export interface ConnectionMemory {
  readonly connections: number;
  readonly heldBytes: number;
  readonly capBytes: number;
  readonly tight: boolean;
  readonly tightEntered: number;
  readonly shedNoProgress: number;
  readonly shedOverCap: number;
}

function connectionFamilies(out: Exposition, c: ConnectionMemory): void {
  const gauges: [string, string, number][] = [
    ['branchsan_nvme_tcp_connections', 'NVMe/TCP connections open now.', c.connections],
    [
      'branchsan_nvme_tcp_held_bytes',
      'Bytes the NVMe/TCP connections hold for their hosts: answers not yet taken, reads running, write data.',
      c.heldBytes,
    ],
    [
      'branchsan_nvme_tcp_held_cap_bytes',
      'The cap on held bytes; over it each connection runs one read and one write transfer at a time.',
      c.capBytes,
    ],
    ['branchsan_nvme_tcp_over_cap', '1 while held bytes are over the cap.', c.tight ? 1 : 0],
  ];
  for (const [name, help, value] of gauges) {
    out.family(name, 'gauge', help);
    out.sample(name, {}, value);
  }
  out.family(
    'branchsan_nvme_tcp_over_cap_episodes_total',
    'counter',
    'Times held bytes went over the cap.',
  );
  out.sample('branchsan_nvme_tcp_over_cap_episodes_total', {}, c.tightEntered);
  const dropped = 'branchsan_nvme_tcp_disconnected_total';
  out.family(
    dropped,
    'counter',
    'Connections the engine disconnected because their host made no progress: for 60 s (no-progress), or for 2 s while over the cap (over-cap).',
  );
  out.sample(dropped, { reason: 'no-progress' }, c.shedNoProgress);
  out.sample(dropped, { reason: 'over-cap' }, c.shedOverCap);
}

/**
 * The node's active alerts, so a head office's Prometheus can alert on every branch's
 * alerts with one rule: a count per severity (every severity, 0 included, so
 * `branchsan_alerts_active{severity="critical"} > 0` needs no absent()), and one series
 * per alert, as Prometheus' own ALERTS does.
 */
function alertFamilies(out: Exposition, alerts: readonly ExposedAlert[]): void {
  out.family(
    'branchsan_alerts_active',
    'gauge',
    'Active alerts by severity (`branchsan alerts` lists them, with what to do).',
  );
  for (const [severity, n] of countBySeverity(alerts)) {
    out.sample('branchsan_alerts_active', { severity }, n);
  }
  out.family(
    'branchsan_alert_active',
    'gauge',
    'One series per active alert, 1 while it holds: its rule, what it is about, its severity, and whether someone acknowledged it.',
  );
  for (const a of alerts) {
    const labels = {
      rule: a.rule,
      subject: a.subject,
      severity: a.severity,
      acknowledged: a.ackedAt !== null ? 'true' : 'false',
    };
    out.sample('branchsan_alert_active', labels, 1);
  }
}

function nodeFamilies(out: Exposition, raw: RawReading | null, last: MetricsSample | null): void {
  const gauges: [string, string, number | null | undefined][] = [
    ['branchsan_node_cpu_usage_percent', 'CPU busy over the last second.', last?.node.cpuPct],
    [
      'branchsan_node_memory_used_bytes',
      'Memory in use (total − available).',
      raw?.node.mem?.usedBytes,
    ],
    ['branchsan_node_memory_total_bytes', 'Installed memory.', raw?.node.mem?.totalBytes],
    [
      'branchsan_node_data_fs_used_bytes',
      "Used bytes of the data directory's file system.",
      raw?.node.disk?.usedBytes,
    ],
    [
      'branchsan_node_data_fs_size_bytes',
      "Size of the data directory's file system.",
      raw?.node.disk?.totalBytes,
    ],
  ];
  for (const [name, help, value] of gauges) {
    out.family(name, 'gauge', help);
    if (value !== null && value !== undefined) out.sample(name, {}, value);
  }
  const net = [...(raw?.node.net ?? new Map()).entries()];
  out.family(
    'branchsan_node_network_receive_bytes_total',
    'counter',
    'Bytes received per interface.',
  );
  for (const [iface, c] of net) {
    out.sample('branchsan_node_network_receive_bytes_total', { interface: iface }, c.rxBytes);
  }
  out.family('branchsan_node_network_transmit_bytes_total', 'counter', 'Bytes sent per interface.');
  for (const [iface, c] of net) {
    out.sample('branchsan_node_network_transmit_bytes_total', { interface: iface }, c.txBytes);
  }
}
