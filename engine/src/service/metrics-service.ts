/**
 * Metrics, wired: a one-second timer runs the sampler, stores the points (one
 * transaction), pushes `metrics.sample` to connected dashboards, and keeps what the
 * Prometheus endpoint serves. Settings (Prometheus on/off, the history cap) live in
 * the settings table; the scrape token is a secret file, DATA/secrets/metrics-token.
 */
import path from 'node:path';
import type {
  MethodParams,
  MethodResult,
  MetricsQueryResult,
  MetricSeriesInfo,
  MetricsSample,
  MetricsSettings,
} from '../../../contract/api.js';
import { metricsRoute, type HttpRoute } from '../control/metrics-endpoint.js';
import type { SessionHub } from '../control/sessions.js';
import type { Target } from '../core/index.js';
import { MetricsSampler, targetIoSource, type IoSource } from '../metrics/sampler.js';
import type { NodeSources } from '../metrics/node.js';
import { renderPrometheus } from '../metrics/prometheus.js';
import { samplePoints, selectorKey } from '../metrics/series.js';
import { getSetting, setSetting, type Db } from '../persistence/db.js';
import { DEFAULT_MAX_BYTES, MetricsStore, type SeriesRow } from '../persistence/metrics-store.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { loadOrCreateSecret, randomToken, readSecret, writeSecret } from './secrets.js';

const KEY_PROMETHEUS = 'metrics.prometheus';
const KEY_MAX_BYTES = 'metrics.maxBytes';
const TOKEN_SECRET = 'metrics-token';
const DEFAULT_MAX_POINTS = 600;

export interface MetricsServiceOptions {
  db: Db;
  dataDir: string;
  /** The live target, or any I/O source (tests). */
  io: Target | IoSource;
  hub: Pick<SessionHub, 'broadcast'>;
  log: Logger;
  /** ms since epoch (default Date.now); tests step it. */
  clock?: () => number;
  node?: NodeSources;
  includeLoopback?: boolean;
}

export class MetricsService {
  readonly store: MetricsStore;
  readonly sampler: MetricsSampler;
  private readonly clock: () => number;
  private last: MetricsSample | null = null;
  private timer?: NodeJS.Timeout;
  private running: Promise<void> | null = null;
  private prometheus: boolean;
  private token: string | null;

  constructor(private readonly opts: MetricsServiceOptions) {
    this.clock = opts.clock ?? Date.now;
    const stored = Number(getSetting(opts.db, KEY_MAX_BYTES));
    const maxBytes = Number.isSafeInteger(stored) && stored > 0 ? stored : DEFAULT_MAX_BYTES;
    this.store = new MetricsStore(opts.db, { maxBytes });
    const io = 'listControllers' in opts.io ? targetIoSource(opts.io) : opts.io;
    this.sampler = new MetricsSampler({
      io,
      dataDir: opts.dataDir,
      clock: this.clock,
      node: opts.node,
      includeLoopback: opts.includeLoopback,
    });
    this.prometheus = getSetting(opts.db, KEY_PROMETHEUS) === '1';
    this.token = readSecret(opts.dataDir, TOKEN_SECRET) ?? null;
  }

  /** Samples every intervalMs until stop(). */
  start(intervalMs = 1000): void {
    void this.tick(); // sets the baseline, so the first second already has rates
    this.timer = setInterval(() => void this.tick(), intervalMs);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** One sampling round; a round still running (slow /proc, slow disk) makes this one a no-op. */
  tick(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.round()
      .catch((err: unknown) => this.opts.log.warn('metrics sample failed', { err }))
      .finally(() => (this.running = null));
    return this.running;
  }

  private async round(): Promise<void> {
    const r = await this.sampler.sample();
    if (!r) return;
    this.last = r.sample;
    this.store.append(Math.floor(r.sample.at / 1000), samplePoints(r));
    this.opts.hub.broadcast('metrics.sample', r.sample);
  }

  /** The most recent sample (what was last pushed). */
  latest(): MetricsSample | null {
    return this.last;
  }

  query(p: MethodParams<'metrics.query'>): MetricsQueryResult {
    const key = typeof p.series === 'string' ? p.series : selectorKey(p.series);
    const series = this.store.findSeries(key);
    if (!series) {
      throw new UserError(
        `No metric history named ${key}.`,
        'List what exists with metrics.series.',
        'not-found',
        'series',
      );
    }
    const to = p.to ?? this.clock();
    const answer = this.store.query(
      series,
      Math.floor(p.from / 1000),
      Math.floor(to / 1000),
      p.maxPoints ?? DEFAULT_MAX_POINTS,
    );
    return {
      series: info(series),
      tier: answer.tier,
      stepSec: answer.stepSec,
      points: answer.points.map(([t, v]) => [t * 1000, v]),
    };
  }

  series(): MethodResult<'metrics.series'> {
    return { series: this.store.listSeries().map(info) };
  }

  settings(): MetricsSettings {
    return {
      prometheus: {
        enabled: this.prometheus,
        path: '/metrics',
        tokenFile: path.join(this.opts.dataDir, 'secrets', TOKEN_SECRET),
      },
      maxBytes: this.store.cap,
      usedBytes: this.store.usedBytes(),
    };
  }

  setSettings(p: MethodParams<'metrics.settings.set'>): MethodResult<'metrics.settings.set'> {
    const { db, dataDir } = this.opts;
    if (p.maxBytes !== undefined) {
      setSetting(db, KEY_MAX_BYTES, String(p.maxBytes));
      this.store.setMaxBytes(p.maxBytes);
    }
    if (p.rotateToken) {
      this.token = randomToken(32);
      writeSecret(dataDir, TOKEN_SECRET, this.token);
    }
    if (p.prometheusEnabled !== undefined) {
      if (p.prometheusEnabled)
        this.token ??= loadOrCreateSecret(dataDir, TOKEN_SECRET, () => randomToken(32));
      setSetting(db, KEY_PROMETHEUS, p.prometheusEnabled ? '1' : '0');
      this.prometheus = p.prometheusEnabled;
    }
    const s = this.settings();
    return this.prometheus && this.token ? { ...s, token: this.token } : s;
  }

  /** GET /metrics for the console's HTTP server. */
  route(): HttpRoute {
    return metricsRoute({
      enabled: () => this.prometheus,
      token: () => this.token,
      render: () => renderPrometheus(this.sampler.latest(), this.last),
    });
  }
}

function info(s: SeriesRow): MetricSeriesInfo {
  return {
    key: s.key,
    scope: s.scope,
    metric: s.metric,
    unit: s.unit,
    agg: s.agg,
    labels: { ...s.labels },
  };
}
