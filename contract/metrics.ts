/**
 * The metrics part of the API contract: series names, the query and settings shapes
 * and the per-second sample pushed to dashboards. api.ts wires these into its method
 * and event tables; this file imports nothing from api.ts so the two never form an
 * initialisation cycle.
 *
 * A series is named by a string key (what metrics.series lists) or by a structured
 * selector; both name the same thing:
 *   node:<metric>                       node:cpu_pct
 *   nic:<interface>:<metric>            nic:eth0:rx_bps
 *   ns:<subnqn>/<nsid>:<metric>         ns:nqn.2026-01.com.example:vol1/1:read_iops
 *   host:<subnqn>/<hostnqn>:<metric>    every controller of that host on that subsystem
 * Keys are looked up exactly, never parsed, because NQNs may contain ':' and '/'.
 */
import { z } from 'zod';

/** Per namespace and per host connection. Latencies are completion latencies in µs. */
export const IO_METRICS = [
  'read_iops',
  'write_iops',
  'other_iops',
  'read_bps',
  'write_bps',
  'read_lat_p50_us',
  'read_lat_p99_us',
  'read_lat_p999_us',
  'write_lat_p50_us',
  'write_lat_p99_us',
  'write_lat_p999_us',
  'queue_depth',
  'errors_ps',
] as const;
export const NODE_METRICS = [
  'cpu_pct',
  'mem_used_bytes',
  'mem_total_bytes',
  'disk_used_bytes',
  'disk_total_bytes',
] as const;
export const NIC_METRICS = ['rx_bps', 'tx_bps'] as const;
export type IoMetric = (typeof IO_METRICS)[number];
export type NodeMetric = (typeof NODE_METRICS)[number];
export type NicMetric = (typeof NIC_METRICS)[number];

/** History tiers, finest first. */
export const METRIC_TIERS = ['1s', '10s', '1m', '1h'] as const;
export type MetricTier = (typeof METRIC_TIERS)[number];

// NQNs are checked loosely here: a selector only looks a series up, it creates nothing.
const NqnLike = z.string().min(1).max(223);

export const MetricSelector = z.discriminatedUnion('scope', [
  z.object({ scope: z.literal('node'), metric: z.enum(NODE_METRICS) }).strict(),
  z
    .object({
      scope: z.literal('nic'),
      interface: z.string().min(1).max(64),
      metric: z.enum(NIC_METRICS),
    })
    .strict(),
  z
    .object({
      scope: z.literal('namespace'),
      nqn: NqnLike,
      nsid: z.number().int().min(1).max(1024),
      metric: z.enum(IO_METRICS),
    })
    .strict(),
  z
    .object({
      scope: z.literal('host'),
      nqn: NqnLike,
      hostnqn: NqnLike,
      metric: z.enum(IO_METRICS),
    })
    .strict(),
]);
export type MetricSelector = z.infer<typeof MetricSelector>;

export const MetricAgg = z.enum(['avg', 'max']);
export type MetricAgg = z.infer<typeof MetricAgg>;

export const MetricSeriesInfo = z.object({
  key: z.string(),
  scope: z.enum(['node', 'nic', 'namespace', 'host']),
  metric: z.string(),
  unit: z.string(),
  /** How coarser tiers combine finer points. */
  agg: MetricAgg,
  /** nqn, nsid, hostnqn, interface as they apply. */
  labels: z.record(z.string(), z.string()),
});
export type MetricSeriesInfo = z.infer<typeof MetricSeriesInfo>;

/**
 * One page of metrics.series, in key order (UTF-16 code units). A node with many hosts
 * on its allow-lists holds tens of thousands of series: all at once would exceed what
 * a client buffers.
 */
export const MetricsSeriesParams = z
  .object({
    /** Only keys that start with this (e.g. `ns:` or `host:nqn…`). */
    prefix: z.string().max(600).optional(),
    /** Only keys after this one: the `next` of the previous page. */
    after: z.string().max(600).optional(),
    /** Most series in the page (default and maximum 5000). */
    limit: z.number().int().min(1).max(5000).optional(),
  })
  .strict();
export type MetricsSeriesParams = z.infer<typeof MetricsSeriesParams>;

export const MetricsSeriesResult = z.object({
  series: z.array(MetricSeriesInfo),
  /** Present when more series follow: pass it as `after` for the next page. */
  next: z.string().optional(),
});

const Ms = z.number().int().min(0); // ms since epoch

export const MetricsQueryParams = z
  .object({
    series: z.union([z.string().min(1).max(600), MetricSelector]),
    from: Ms,
    /** Default: now. */
    to: Ms.optional(),
    /** Upper bound on the points returned (default 600). */
    maxPoints: z.number().int().min(1).max(10_000).optional(),
  })
  .strict()
  .refine((p) => p.to === undefined || p.to > p.from, {
    message: 'to must be after from',
    path: ['to'],
  });

export const MetricsQueryResult = z.object({
  series: MetricSeriesInfo,
  /** The tier the points were read from. */
  tier: z.enum(METRIC_TIERS),
  /** Seconds per point (a multiple of the tier's step when maxPoints forced coarser). */
  stepSec: z.number().int().min(1),
  /** [start of the point's interval in ms, value]; intervals without data are absent. */
  points: z.array(z.tuple([z.number(), z.number()])),
});
export type MetricsQueryResult = z.infer<typeof MetricsQueryResult>;

export const MetricsSettings = z.object({
  prometheus: z.object({
    enabled: z.boolean(),
    /** On the web console's HTTP server; scrape with Authorization: Bearer <token>. */
    path: z.literal('/metrics'),
    /** The bearer token's file (mode 0600): point Prometheus' credentials_file at a copy. */
    tokenFile: z.string(),
  }),
  /**
   * Cap on the metric history's bytes (historyBytes); the oldest fine-grained history
   * goes first. The rest of the database (the event log) has limits of its own.
   */
  maxBytes: z.number().int(),
  /** Bytes the whole database uses now (pages in use × page size). */
  usedBytes: z.number().int(),
  /**
   * Bytes of metric history as the cap counts them: usedBytes less the rest of the
   * database as last measured (every 10 minutes; where the database cannot be measured,
   * estimated from a count of the history's rows). Before the first measurement, all of
   * it, and the cap deletes nothing.
   */
  historyBytes: z.number().int(),
});
export type MetricsSettings = z.infer<typeof MetricsSettings>;

export const MetricsSettingsSet = z
  .object({
    prometheusEnabled: z.boolean().optional(),
    /** Replace the bearer token (scrapers need the new one). */
    rotateToken: z.boolean().optional(),
    maxBytes: z
      .number()
      .int()
      .min(1 << 20, 'at least 1 MiB')
      .max(2 ** 40, 'at most 1 TiB')
      .optional(),
  })
  .strict();

const Latency = z.object({ p50: z.number(), p99: z.number(), p999: z.number() });

/** One interval's I/O of a namespace or a controller; latencies null when it did no such I/O. */
export const IoFigures = z.object({
  readIops: z.number(),
  writeIops: z.number(),
  otherIops: z.number(),
  readBps: z.number(),
  writeBps: z.number(),
  readLatUs: Latency.nullable(),
  writeLatUs: Latency.nullable(),
  /** Mean commands outstanding (sum of latencies / interval, Little's law). */
  queueDepth: z.number(),
  errorsPs: z.number(),
});
export type IoFigures = z.infer<typeof IoFigures>;

export const NodeFigures = z.object({
  /** null where the platform gives no reading (first sample, no /proc). */
  cpuPct: z.number().nullable(),
  memUsedBytes: z.number().nullable(),
  memTotalBytes: z.number().nullable(),
  diskUsedBytes: z.number().nullable(),
  diskTotalBytes: z.number().nullable(),
  net: z.array(z.object({ interface: z.string(), rxBps: z.number(), txBps: z.number() })),
});
export type NodeFigures = z.infer<typeof NodeFigures>;

/** Pushed once a second: the dashboard's live view. */
export const MetricsSample = z.object({
  at: z.number(), // ms since epoch
  intervalSec: z.number(),
  node: NodeFigures,
  namespaces: z.array(IoFigures.extend({ nqn: z.string(), nsid: z.number().int() })),
  /** One entry per connected I/O controller. */
  hosts: z.array(
    IoFigures.extend({ nqn: z.string(), hostnqn: z.string(), cntlid: z.number().int() }),
  ),
});
export type MetricsSample = z.infer<typeof MetricsSample>;
