/**
 * Metrics, wired: a one-second timer runs the sampler, stores the points (one
 * transaction), pushes `metrics.sample` to connected dashboards, and keeps what the
 * Prometheus endpoint serves. Settings (Prometheus on/off, the history cap) live in
 * the settings table; the scrape token is a secret file, DATA/secrets/metrics-token.
 * A change of them is recorded in the audit log, like every configuration change.
 */
import os from 'node:os';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import {
  MetricsSettingsSet,
  type MethodParams,
  type MethodResult,
  type MetricsQueryResult,
  type MetricSeriesInfo,
  type MetricsSample,
  type MetricsSettings,
} from '../../../contract/api.js';
import { metricsRoute, type HttpRoute } from '../control/metrics-endpoint.js';
import type { SessionHub } from '../control/sessions.js';
import type { Target } from '../core/index.js';
import { MetricsSampler, targetIoSource, type IoSource } from '../metrics/sampler.js';
import type { NodeSources } from '../metrics/node.js';
import {
  renderPrometheus,
  type ConnectionMemory,
  type ExposedAlert,
} from '../metrics/prometheus.js';
import { samplePoints, selectorKey } from '../metrics/series.js';
import { getSetting, recordEvent, setSetting, type Db } from '../persistence/db.js';
import {
  DEFAULT_MAX_BYTES,
  HISTORY_TABLES,
  MetricsStore,
  type SeriesRow,
} from '../persistence/metrics-store.js';
import { ReaderUnavailable, type DbReader } from '../persistence/db-reader.js';
import { betweenBatches, type WalCheckpointer } from '../persistence/wal-checkpointer.js';
import { METRICS_TOKEN_AGAIN, type MetricsEndpointDown } from '../events/rules.js';
import { errorCode, storageProblem, UserError, whereStorageAllows } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import {
  checkSecretReplaceable,
  randomToken,
  readSecret,
  writeSecret,
  type SecretRenewal,
} from './secrets.js';

const KEY_PROMETHEUS = 'metrics.prometheus';
const KEY_MAX_BYTES = 'metrics.maxBytes';
const TOKEN_SECRET = 'metrics-token';
/**
 * How a scrape token is had anew, for the hint about a token file that cannot be used:
 * the engine makes one only when asked (rotateToken, or the endpoint turned on without
 * one), never at its start, so a deleted token stays gone and every scrape is refused.
 */
const TOKEN_RENEWAL: SecretRenewal = {
  orElse:
    'or delete it and, once the engine runs, call metrics.settings.set with rotateToken: true for a new one, which scrapers then need',
  afresh:
    'once the engine runs, call metrics.settings.set with rotateToken: true for a new one, which scrapers then need',
};
/** The same, for a rotation refused because something else is in the file's place. */
const ROTATE_AGAIN: SecretRenewal = {
  ...TOKEN_RENEWAL,
  afresh:
    'call metrics.settings.set with rotateToken: true again; nothing was changed, and scrapers then need the new token',
};
const DEFAULT_MAX_POINTS = 600;
/** metrics.series page size when none is asked for (the most one page may hold). */
const SERIES_PAGE = 5000;
/** While rounds keep failing, a line saying so at most this often. */
const FAILING_RETELL_MS = 10 * 60_000;
/**
 * The history's share of the database is measured (off the event loop) this long after
 * the start, then this often: the cap counts the rest of the database as measured, and
 * deletes nothing before the first measurement (see MetricsStore).
 */
const FIRST_MEASURE_MS = 30_000;
const MEASURE_EVERY_MS = 10 * 60_000;

export interface MetricsServiceOptions {
  db: Db;
  dataDir: string;
  /** The live target, or any I/O source (tests). */
  io: Target | IoSource;
  hub: Pick<SessionHub, 'broadcast'>;
  log: Logger;
  /** ms since epoch (default Date.now); tests step it. */
  clock?: () => number;
  /**
   * Seconds on a clock wall-clock steps do not move (default: the time since boot,
   * CLOCK_BOOTTIME); see MetricsStoreOptions.monotonicSec. Tests that step `clock`
   * as if time passed step this with it.
   */
  monotonicSec?: () => number;
  node?: NodeSources;
  includeLoopback?: boolean;
  /** The active alerts, for /metrics (the events service's; none by default). */
  alerts?: () => readonly ExposedAlert[];
  /** The NVMe/TCP connections' memory against their cap, for the exposition. */
  connections?: () => ConnectionMemory;
  /**
   * Measures the history's share of the database off the engine's thread (absent, or
   * unable to read the file: the history's rows are counted instead, see MetricsStore).
   */
  reader?: DbReader;
  /** Checkpoints the WAL off the engine's thread; the cap's batches wait for it. */
  checkpointer?: Pick<WalCheckpointer, 'room'>;
}

export class MetricsService {
  readonly store: MetricsStore;
  readonly sampler: MetricsSampler;
  private readonly clock: () => number;
  private last: MetricsSample | null = null;
  private timer?: NodeJS.Timeout;
  private running: Promise<void> | null = null;
  /** The current streak of failed rounds, or null. */
  private failing: { since: number; toldAt: number; lost: number } | null = null;
  private prometheus: boolean;
  private token: string | null;
  /**
   * The endpoint is on, but its token file could not be used at the start: it refuses
   * every scrape until a token is in force again (setSettings) or it is turned off.
   */
  private tokenUnusable: MetricsEndpointDown | null = null;
  private measureTimer?: NodeJS.Timeout;
  private measuring: Promise<void> | null = null;
  /** Batches of the cap's deletions running (trimToCap), or null. */
  private trimming: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly opts: MetricsServiceOptions) {
    this.clock = opts.clock ?? Date.now;
    const stored = Number(getSetting(opts.db, KEY_MAX_BYTES));
    const maxBytes = Number.isSafeInteger(stored) && stored > 0 ? stored : DEFAULT_MAX_BYTES;
    this.store = new MetricsStore(opts.db, {
      maxBytes,
      // boot time: monotonic, and unlike performance.now() it runs on through a suspend
      monotonicSec: opts.monotonicSec ?? os.uptime,
    });
    const io = 'listControllers' in opts.io ? targetIoSource(opts.io) : opts.io;
    this.sampler = new MetricsSampler({
      io,
      dataDir: opts.dataDir,
      clock: this.clock,
      node: opts.node,
      includeLoopback: opts.includeLoopback,
    });
    this.prometheus = getSetting(opts.db, KEY_PROMETHEUS) === '1';
    // read only for an endpoint that is on (else setSettings reads it when turned on)
    this.token = this.prometheus ? this.startToken() : null;
  }

  /**
   * The scrape token at the start. A file that cannot be used (others can read it, the
   * engine may not, a directory in its place, a failing disk) leaves the endpoint on
   * and refusing every scrape, said in the log, an event and an alert (metrics.endpoint):
   * a monitoring secret must not keep the storage from being served.
   */
  private startToken(): string | null {
    const { dataDir, db, log } = this.opts;
    try {
      return readSecret(dataDir, TOKEN_SECRET, TOKEN_RENEWAL) ?? null;
    } catch (err) {
      const file = this.tokenFile();
      const problem =
        err instanceof UserError
          ? `${err.message} ${err.hint ?? ''}`.trim()
          : `The scrape token file ${file} could not be read (${(err as Error).message}). Check the data directory's disk (dmesg), or delete the file and call metrics.settings.set with rotateToken: true for a new one, which scrapers then need.`;
      this.tokenUnusable = { problem, since: this.clock() };
      const message = `The Prometheus endpoint /metrics refuses every scrape: ${problem} ${METRICS_TOKEN_AGAIN}`;
      log.error(message, { tokenFile: file });
      whereStorageAllows(log, 'record an event', () =>
        recordEvent(db, { type: 'metrics.token-unusable', severity: 'error', message }),
      );
      return null;
    }
  }

  /** Why the endpoint, on, serves nothing, for the metrics.endpoint alert (none: it works or is off). */
  endpointDown(): MetricsEndpointDown[] {
    return this.tokenUnusable ? [this.tokenUnusable] : [];
  }

  /** Samples every intervalMs until stop(); measures the history's size now and then. */
  start(intervalMs = 1000): void {
    void this.tick(); // sets the baseline, so the first second already has rates
    this.timer = setInterval(() => void this.tick(), intervalMs);
    const measureLater = (ms: number) => {
      this.measureTimer = setTimeout(() => {
        void this.measureHistory().finally(() => {
          if (this.timer) measureLater(MEASURE_EVERY_MS);
        });
      }, ms);
      this.measureTimer.unref();
    };
    measureLater(FIRST_MEASURE_MS);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.timer = undefined;
    clearTimeout(this.measureTimer);
    // a count of rows, or a batch of the cap's, ends at its next step (a measurement on
    // the reader's thread is not waited for: nothing of it touches the database after)
    await Promise.all([this.running, this.trimming]);
  }

  /**
   * Measures how much of the database is history, on a thread of its own, for the cap
   * (MetricsStore.noteMeasured). A database no thread can read beside the engine's
   * connection (opened exclusively on a full disk, in memory) has its history's rows
   * counted instead, a series at a time with the engine's thread free between them
   * (MetricsStore.noteCounted). Another failure keeps the last measurement.
   */
  measureHistory(): Promise<void> {
    this.measuring ??= this.measureNow().finally(() => (this.measuring = null));
    return this.measuring;
  }

  private async measureNow(): Promise<void> {
    const { reader, log } = this.opts;
    try {
      if (reader) {
        const m = await reader.measure(HISTORY_TABLES);
        if (this.stopped) return;
        this.store.noteMeasured(m);
        log.debug('metrics history measured', { historyBytes: m.tables, databaseBytes: m.used });
        void this.trimToCap();
        return;
      }
    } catch (err) {
      if (!(err instanceof ReaderUnavailable)) {
        log.debug('metrics history not measured; the cap counts the last measurement', { err });
        return;
      }
    }
    try {
      const counting = this.store.countRows();
      let step = counting.next();
      while (!step.done) {
        await nextTurn();
        if (this.stopped) return;
        step = counting.next();
      }
      this.store.noteCounted(step.value);
      log.debug('metrics history counted (the database cannot be measured)', {
        rows: step.value,
      });
      void this.trimToCap();
    } catch (err) {
      log.debug('metrics history not counted; the cap counts the last count', { err });
    }
  }

  /**
   * Brings the history under the cap in batches (MetricsStore.trimStep), the engine's
   * thread free between them: lowering the cap by 200 MB in one go held it for seconds.
   * Resolves when done; one run at a time.
   */
  trimToCap(): Promise<void> {
    this.trimming ??= (async () => {
      try {
        while (!this.stopped && this.store.trimStep()) {
          await betweenBatches(this.opts.checkpointer);
        }
      } catch (err) {
        this.opts.log.warn('metrics history not trimmed to the cap; the next sample retries', {
          err,
        });
      }
    })().finally(() => (this.trimming = null));
    return this.trimming;
  }

  /** One sampling round; a round still running (slow /proc, slow disk) makes this one a no-op. */
  tick(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.round()
      .then(
        () => this.recovered(),
        (err: unknown) => this.failed(err),
      )
      .finally(() => (this.running = null));
    return this.running;
  }

  private async round(): Promise<void> {
    const r = await this.sampler.sample();
    if (!r) return;
    this.last = r.sample;
    // Live figures go out before the history is stored: a full data disk stops the
    // history, not the dashboard's live view (which is what shows that disk filling).
    this.opts.hub.broadcast('metrics.sample', r.sample);
    this.store.append(Math.floor(r.sample.at / 1000), samplePoints(r));
  }

  /**
   * A failed round. The first of a streak is logged with what to do, then one line
   * every FAILING_RETELL_MS at most: a full disk fails every second, and a warning
   * per second would bury everything else in the log.
   */
  private failed(err: unknown): void {
    const now = this.clock();
    const f = this.failing;
    if (f) {
      f.lost++;
      if (now - f.toldAt < FAILING_RETELL_MS) return;
      f.toldAt = now;
      this.opts.log.warn(
        `metrics history still not recorded: ${f.lost} samples lost since ${new Date(f.since).toISOString()}`,
        { err },
      );
      return;
    }
    this.failing = { since: now, toldAt: now, lost: 1 };
    const why = storageProblem(err);
    this.opts.log.warn(
      why
        ? `metrics history is not recorded: ${why}. Live figures still reach the dashboard; ` +
            'recording resumes by itself once the data directory takes writes again (this is said again every 10 minutes until then).'
        : 'metrics sample failed; retrying every second (said again every 10 minutes while it fails)',
      { err },
    );
  }

  /** A round worked: the end of a failure streak is logged once, with what it cost. */
  private recovered(): void {
    const f = this.failing;
    if (!f) return;
    this.failing = null;
    this.opts.log.info(
      `metrics history recorded again; ${f.lost} samples since ${new Date(f.since).toISOString()} were lost`,
    );
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

  series(p: MethodParams<'metrics.series'> = {}): MethodResult<'metrics.series'> {
    const limit = p.limit ?? SERIES_PAGE;
    const prefix = p.prefix ?? '';
    const page: SeriesRow[] = [];
    let more = false;
    for (const s of this.store.listSeries(p.after)) {
      if (!s.key.startsWith(prefix)) {
        if (s.key > prefix) break; // sorted: no later key has the prefix
        continue;
      }
      if (page.length === limit) {
        more = true;
        break;
      }
      page.push(s);
    }
    return { series: page.map(info), ...(more ? { next: page.at(-1)!.key } : {}) };
  }

  settings(): MetricsSettings {
    return {
      prometheus: {
        enabled: this.prometheus,
        path: '/metrics',
        tokenFile: this.tokenFile(),
      },
      maxBytes: this.store.cap,
      usedBytes: this.store.usedBytes(),
      historyBytes: this.store.historyBytes(),
    };
  }

  private tokenFile(): string {
    return path.join(this.opts.dataDir, 'secrets', TOKEN_SECRET);
  }

  /**
   * Changes the endpoint and the cap, all or nothing. Everything is checked first (the
   * request, a token file others could read); then the setting rows and the audit row
   * are written in one transaction, and only once it has committed does memory follow.
   * A new token is written aside before the transaction and renamed over the old one
   * after it (writeSecret), as host secrets are: the audit row is written before the
   * new token takes effect, so when the database refuses the change (a full disk)
   * nothing changed, and the old token keeps working.
   */
  setSettings(
    p: MethodParams<'metrics.settings.set'>,
    actor: string,
  ): MethodResult<'metrics.settings.set'> {
    const { db, dataDir } = this.opts;
    const req = validSettings(p);
    const asked =
      req.maxBytes !== undefined || req.prometheusEnabled !== undefined || req.rotateToken;
    if (!asked) return this.answer(); // nothing to change, nothing to record
    // The token in force after the change: a new one when rotated, or when the endpoint
    // is turned on and none exists yet. Read now, so that a file others can read is
    // refused before anything is written.
    let token = this.token;
    let fresh: 'rotated' | 'created' | undefined;
    if (req.rotateToken) {
      // a directory (or pipe) in its place could not be replaced: refused before the
      // change is recorded, which would say it was rotated
      checkSecretReplaceable(dataDir, TOKEN_SECRET, ROTATE_AGAIN);
      token = randomToken(32);
      fresh = 'rotated';
    } else if (req.prometheusEnabled && token === null) {
      token = readSecret(dataDir, TOKEN_SECRET, TOKEN_RENEWAL) ?? null;
      if (token === null) {
        token = randomToken(32);
        fresh = 'created';
      }
    }
    // what was asked, and a token made along the way; never the token itself
    const details = fresh === 'created' ? { ...req, tokenCreated: true } : req;
    let committed = false;
    const store = () => {
      db.transaction(() => {
        if (req.maxBytes !== undefined) setSetting(db, KEY_MAX_BYTES, String(req.maxBytes));
        if (req.prometheusEnabled !== undefined)
          setSetting(db, KEY_PROMETHEUS, req.prometheusEnabled ? '1' : '0');
        this.audit(actor, details);
      })();
      committed = true;
      // Committed: memory follows the database.
      if (req.prometheusEnabled !== undefined) this.prometheus = req.prometheusEnabled;
      if (req.maxBytes !== undefined) this.holdCap(req.maxBytes);
      if (!this.prometheus) this.tokenUnusable = null; // off: its file is not read
    };
    try {
      // a new token is written aside, the change recorded, then the token put in place
      if (fresh) writeSecret(dataDir, TOKEN_SECRET, token!, store);
      else store();
    } catch (err) {
      if (!committed) {
        this.opts.log.error('metrics settings not stored; nothing changed', { err });
        throw new UserError(
          `The metrics settings were not saved (${(err as Error).message}); nothing was changed${this.prometheus && this.token ? ', and the current scrape token still works' : ''}.`,
          storageProblem(err) !== null
            ? "Check free space on the data directory's filesystem (or make it writable again), then retry."
            : 'Retry; if it fails again, `branchsan diagnostics` collects what is needed to report it.',
          'unavailable',
        );
      }
      // Recorded but not in effect: the old token (or none) stays, in memory as on disk,
      // and the audit says so after the row that said it was made (something put in the
      // file's place after checkSecretReplaceable, a failing disk).
      this.opts.log.error('new metrics token recorded but not put in place', { err });
      try {
        this.audit(actor, { tokenNotInPlace: fresh, error: errorCode(err) || String(err) });
      } catch (auditErr) {
        this.opts.log.error('the audit cannot say that the new metrics token is not in place', {
          err: auditErr,
        });
      }
      throw new UserError(
        `The metrics settings were saved, but the new scrape token could not be put in place (${(err as Error).message}); ` +
          (this.token
            ? 'the previous token still works.'
            : 'the endpoint refuses every scrape until it has a token.'),
        `${storageProblem(err) !== null ? 'Free space on the data directory (or make it writable again)' : `Check what is at ${this.tokenFile()} (ls -ld it; a regular file or nothing may be there)`}, then rotate the token (metrics.settings.set with rotateToken: true).`,
        'unavailable',
      );
    }
    this.token = token;
    if (token !== null) this.tokenUnusable = null;
    return this.answer();
  }

  private audit(actor: string, details: unknown): void {
    this.opts.db
      .prepare('INSERT INTO audit (ts, actor, action, details) VALUES (?, ?, ?, ?)')
      .run(this.clock(), actor, 'metrics.settings.set', JSON.stringify(details));
  }

  /** The settings, with the token when the endpoint is on (for the scraper's config). */
  private answer(): MethodResult<'metrics.settings.set'> {
    const s = this.settings();
    return this.prometheus && this.token ? { ...s, token: this.token } : s;
  }

  /**
   * The new cap, once stored. Trimming the history to it is upkeep, not the change: it
   * goes on after the answer, in batches (trimToCap); if it fails (the disk filled
   * meanwhile), the cap holds all the same and the next sample trims again.
   */
  private holdCap(maxBytes: number): void {
    this.store.setMaxBytes(maxBytes);
    void this.trimToCap();
  }

  /** GET /metrics for the console's HTTP server. */
  route(): HttpRoute {
    return metricsRoute({
      enabled: () => this.prometheus,
      token: () => this.token,
      render: () =>
        renderPrometheus(
          this.sampler.latest(),
          this.last,
          this.opts.alerts?.() ?? [],
          this.opts.connections?.() ?? null,
        ),
    });
  }
}

/** The request as the API checks it (callers inside the engine skip the RPC layer). */
function validSettings(
  p: MethodParams<'metrics.settings.set'>,
): MethodParams<'metrics.settings.set'> {
  const valid = MetricsSettingsSet.safeParse(p);
  if (valid.success) return valid.data;
  const issue = valid.error.issues[0]!;
  const field = issue.path.join('.');
  throw new UserError(
    `The metrics setting ${field || '(unnamed)'} is not valid: ${issue.message}.`,
    'Correct the value and save again.',
    'invalid',
    field || undefined,
  );
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
