/**
 * Metric history in SQLite: four tiers of (series_id, ts, value) rows, each a
 * WITHOUT ROWID table keyed by (series_id, ts) so a range query for one series is one
 * b-tree range. Time is in whole seconds since the epoch.
 *
 *   tier  step  kept     filled from
 *   1s    1 s   1 h      the sampler, one transaction per second
 *   10s   10 s  24 h     1s, when a 10 s bucket closes
 *   1m    60 s  30 days  10s
 *   1h    1 h   1 year   1m
 *
 * A coarser point combines the finer points of its bucket with the series' aggregate:
 * 'avg' for rates and gauges (the mean of the finer means: buckets are equal length),
 * 'max' for tail latencies (p99, p99.9), because an averaged tail hides the spike an
 * operator looks for. Buckets with no finer points get no row (no invented zeroes).
 *
 * Size: besides per-tier retention, the history's bytes are held under a cap. Above
 * 95 % of it, rows are deleted oldest first from the finest tier, then the next, down
 * to 85 %; only rows already rolled up into the next tier go (the coarsest tier has no
 * next). The history's bytes are the database's used bytes (pages in use × page size)
 * less what the rest of it (the event log, above all, which has limits of its own)
 * took when last measured (noteMeasured, off the event loop: see db-reader.ts). Where
 * no thread can measure it (a database held exclusively, in memory), the history's rows
 * are counted instead (countRows, noteCounted) at the fewest bytes a row can take: an
 * estimate that can only be low, so the cap may act late, never early, and never
 * touches the coarsest tier. Neither measured nor counted yet (the first 30 s after a
 * start), the cap deletes nothing: counting the whole database as history once emptied
 * every tier, a year of hourly rows included, when the event log alone was near the cap.
 *
 * The cap deletes a batch of at most CAP_BATCH_ROWS rows at a time: one batch with each
 * append, and after a lowered cap (setMaxBytes) batches the caller runs with the
 * engine's thread free between them (trimStep). Deleted pages are reused, so the file
 * itself stops growing near the cap; it only shrinks with a VACUUM (lowering the cap
 * later lowers the used bytes, not the file).
 */
import { withoutSync, type Db } from './db.js';

export type MetricAgg = 'avg' | 'max';

export interface TierSpec {
  readonly name: '1s' | '10s' | '1m' | '1h';
  readonly table: string;
  readonly stepSec: number;
  readonly retentionSec: number;
}

const DAY = 86_400;
export const TIERS: readonly TierSpec[] = [
  { name: '1s', table: 'metric_1s', stepSec: 1, retentionSec: 3600 },
  { name: '10s', table: 'metric_10s', stepSec: 10, retentionSec: DAY },
  { name: '1m', table: 'metric_1m', stepSec: 60, retentionSec: 30 * DAY },
  { name: '1h', table: 'metric_1h', stepSec: 3600, retentionSec: 365 * DAY },
];

export const DEFAULT_MAX_BYTES = 256 * 1024 * 1024;
const HIGH_WATER = 0.95;
const LOW_WATER = 0.85;
/**
 * Rows one batch of the cap's deletions takes at most (a few ms). Lowering the cap by
 * 200 MB in one transaction held the engine's thread 4 to 9 s.
 */
export const CAP_BATCH_ROWS = 4000;
/**
 * Steps of a tier one cut of the cap takes from each series (256 s of the 1 s tier, 11
 * days of the 1 h one), so at most this many rows of it: a page of rows or more, so that
 * a cut frees pages as it goes. No more than CAP_BATCH_ROWS.
 */
const CAP_CUT_STEPS = 256;
/**
 * The fewest bytes a history row takes on disk: a record of 8 bytes at least (a 4-byte
 * header, a 4-byte time, a series id and value stored in no bytes, as SQLite does for 0
 * and 1), its length byte and its 2-byte cell pointer, pages full. Rows counted at this
 * size give a history no larger than it is (stored rows take 15 to 30 bytes here).
 */
export const MIN_ROW_BYTES = 11;
/** Rows a query reads at most for one answer when a finer tier would need more (a few ms). */
const QUERY_ROWS = 12_000;
/** Retention runs at most this often (seconds of sample time); rollups run every append. */
const EXPIRE_EVERY_SEC = 10;
/** Series without a row left in any tier (a namespace deleted a year ago) go this often. */
const PRUNE_EVERY_SEC = 3600;
/**
 * The wall clock ran this much further than the monotonic clock: a step ahead (see
 * MetricsStoreOptions.monotonicSec), after which retention waits SETTLE_SEC.
 */
const STEP_AHEAD_SEC = 300;
const SETTLE_SEC = 3600;

export interface SeriesDef {
  readonly key: string;
  readonly scope: 'node' | 'nic' | 'namespace' | 'host';
  readonly metric: string;
  readonly unit: string;
  readonly agg: MetricAgg;
  readonly labels: Readonly<Record<string, string>>;
}

export interface SeriesRow extends SeriesDef {
  readonly id: number;
  /** Its first point (s); a query never reaches back past it. */
  readonly firstTs: number;
}

export interface MetricPoint {
  readonly series: SeriesDef;
  readonly value: number;
}

export interface QueryAnswer {
  tier: TierSpec['name'];
  stepSec: number;
  /** [bucket start in seconds, value], ascending. */
  points: [number, number][];
}

export interface MetricsStoreOptions {
  maxBytes?: number;
  /**
   * Seconds on a clock that wall-clock steps do not move (any origin). With it, when
   * the sample time runs more than STEP_AHEAD_SEC ahead of this clock (a bad RTC at
   * boot, a wrong NTP answer, a manual change), and at open when the newest stored row
   * is that far behind the wall clock (the engine was stopped, or the clock is wrong),
   * retention waits until SETTLE_SEC of this clock have passed: a clock a year ahead,
   * set back within the hour, then costs no history (the rows stamped in the future go
   * when it comes back, see afterClockJump). The size cap still holds meanwhile.
   * Without it (tests of retention), the sample time is trusted as it is.
   */
  monotonicSec?: () => number;
}

/** A cut of the cap: tier's rows before `before` go, series by series from nextId on. */
interface Cut {
  readonly tier: number;
  readonly before: number;
  nextId: number;
}

/** The tables of the metric history (with their indexes, what the cap holds). */
export const HISTORY_TABLES: readonly string[] = ['metric_series', ...TIERS.map((t) => t.table)];

export class MetricsStore {
  private maxBytes: number;
  /**
   * Bytes of the database that are not history, as last measured, or as estimated from
   * a count of the history's rows; null until either (the cap then deletes nothing).
   */
  private other: { bytes: number; estimated: boolean } | null = null;
  /** Above the high water mark, until the low one is reached: a batch with each append. */
  private trimming = false;
  /** The cut the cap is making, series by series (see trimBatch). */
  private cut: Cut | null = null;
  private readonly ids = new Map<string, SeriesRow>();
  private lastExpire = -Infinity;
  private lastPrune = -Infinity;
  private readonly monotonicSec: (() => number) | null;
  /** The last sample time and monotonic time seen (the newest row's time at open). */
  private lastWall: number | null = null;
  private lastMono = 0;
  /** Retention waits until the monotonic clock reaches this (after a step ahead). */
  private settledAt = -Infinity;
  private readonly stmt;

  constructor(
    private readonly db: Db,
    opts: MetricsStoreOptions = {},
  ) {
    this.maxBytes = opts.maxBytes ?? DEFAULT_MAX_BYTES;
    this.stmt = {
      insertSeries: db.prepare(
        'INSERT INTO metric_series (key, scope, metric, unit, agg, labels, first_ts) VALUES (?, ?, ?, ?, ?, ?, ?)',
      ),
      insert: TIERS.map((t) =>
        db.prepare(`INSERT OR REPLACE INTO ${t.table} (series_id, ts, value) VALUES (?, ?, ?)`),
      ),
      // metric_series drives the loop (CROSS JOIN fixes the order): one PK range per series
      rollup: TIERS.slice(1).map((t, i) =>
        db.prepare(
          `INSERT OR REPLACE INTO ${t.table} (series_id, ts, value)
           SELECT p.series_id, (p.ts / ${t.stepSec}) * ${t.stepSec},
                  CASE s.agg WHEN 'max' THEN MAX(p.value) ELSE AVG(p.value) END
           FROM metric_series s CROSS JOIN ${TIERS[i]!.table} p ON p.series_id = s.id
           WHERE p.ts >= ? AND p.ts < ?
           GROUP BY p.series_id, p.ts / ${t.stepSec}`,
        ),
      ),
      expire: TIERS.map((t) =>
        db.prepare(
          `DELETE FROM ${t.table} WHERE series_id IN (SELECT id FROM metric_series) AND ts < ?`,
        ),
      ),
      trim: TIERS.map((t) => db.prepare(`DELETE FROM ${t.table} WHERE series_id = ? AND ts < ?`)),
      count: TIERS.map((t) =>
        db.prepare(`SELECT COUNT(*) FROM ${t.table} WHERE series_id = ?`).pluck(),
      ),
      oldest: TIERS.map((t) =>
        db.prepare(`SELECT MIN(ts) FROM ${t.table} WHERE series_id = ?`).pluck(),
      ),
      newest: TIERS.map((t) =>
        db.prepare(`SELECT MAX(ts) FROM ${t.table} WHERE series_id = ?`).pluck(),
      ),
      deadSeries: db
        .prepare(
          `SELECT key FROM metric_series s WHERE ${TIERS.map(
            (t) => `NOT EXISTS (SELECT 1 FROM ${t.table} WHERE series_id = s.id)`,
          ).join(' AND ')}`,
        )
        .pluck(),
      deleteSeries: db.prepare('DELETE FROM metric_series WHERE key = ?'),
      getDone: db.prepare('SELECT done_until FROM metric_rollups WHERE tier = ?').pluck(),
      setDone: db.prepare(
        'INSERT INTO metric_rollups (tier, done_until) VALUES (?, ?) ON CONFLICT (tier) DO UPDATE SET done_until = excluded.done_until',
      ),
      range: TIERS.map((t) =>
        (['avg', 'max'] as const).map((agg) =>
          db.prepare(
            `SELECT ts - ts % @step AS b, ${agg.toUpperCase()}(value) AS v FROM ${t.table}
             WHERE series_id = @id AND ts >= @from AND ts <= @to GROUP BY b ORDER BY b`,
          ),
        ),
      ),
    };
    this.loadIds();
    this.dropOrphans();
    this.monotonicSec = opts.monotonicSec ?? null;
    if (this.monotonicSec) {
      this.lastWall = this.newestRow();
      this.lastMono = this.monotonicSec();
    }
  }

  /** The newest row's time in any tier (s), or null when there is none. */
  private newestRow(): number | null {
    let newest: number | null = null;
    TIERS.forEach((_, i) => {
      const ts = this.edgeOfTier(i, 'newest'); // per series: an index lookup, not a scan
      if (ts !== null && (newest === null || ts > newest)) newest = ts;
    });
    return newest;
  }

  /**
   * Whether retention may run at nowSec: not within SETTLE_SEC after the sample time
   * stepped ahead of the monotonic clock (see MetricsStoreOptions.monotonicSec).
   */
  private clockSettled(nowSec: number): boolean {
    if (!this.monotonicSec) return true;
    const mono = this.monotonicSec();
    if (
      this.lastWall !== null &&
      nowSec - this.lastWall - (mono - this.lastMono) > STEP_AHEAD_SEC
    ) {
      this.settledAt = mono + SETTLE_SEC;
    }
    this.lastWall = nowSec;
    this.lastMono = mono;
    return mono >= this.settledAt;
  }

  /**
   * Drops rows of series that no longer exist: left by a failed commit before series ids
   * were kept in step with the database (see tx). Nothing would ever expire them. The
   * series ids each tier holds are found by one index seek each, from one to the next:
   * a query for rows whose series is unknown walked every row, 350 ms at 227 MB.
   */
  private dropOrphans(): void {
    const known = new Set([...this.ids.values()].map((s) => s.id));
    this.tx(() => {
      for (const t of TIERS) {
        const next = this.db
          .prepare(`SELECT MIN(series_id) FROM ${t.table} WHERE series_id > ?`)
          .pluck();
        const drop = this.db.prepare(`DELETE FROM ${t.table} WHERE series_id = ?`);
        for (
          let id = next.get(-Infinity) as number | null;
          id !== null;
          id = next.get(id) as number | null
        )
          if (!known.has(id)) drop.run(id);
      }
    });
  }

  /** The series ids as the database holds them. */
  private loadIds(): void {
    this.ids.clear();
    for (const r of this.db
      .prepare(
        'SELECT id, key, scope, metric, unit, agg, labels, first_ts AS firstTs FROM metric_series',
      )
      .all() as (Omit<SeriesRow, 'labels'> & { labels: string })[]) {
      this.ids.set(r.key, { ...r, labels: JSON.parse(r.labels) as Record<string, string> });
    }
  }

  /**
   * Runs `fn` in a transaction. If it fails (a full disk at commit), SQLite rolls the
   * series it made or pruned back, so the in-memory ids are reloaded: otherwise an id
   * that no longer exists would be reused by the next new series, mixing two series.
   */
  private tx(fn: () => void): void {
    try {
      this.db.transaction(fn)();
    } catch (err) {
      try {
        this.loadIds();
      } catch {
        // the database cannot even be read now; the first error says why
      }
      throw err;
    }
  }

  /**
   * A new cap. It deletes nothing itself: the next append deletes one batch, and a
   * caller that wants the history under the cap sooner runs trimStep until it is.
   */
  setMaxBytes(bytes: number): void {
    this.maxBytes = bytes;
  }

  /**
   * One batch of the cap's deletions (at most CAP_BATCH_ROWS rows), in a transaction of
   * its own; true while more are to go. The caller frees the engine's thread between calls.
   */
  trimStep(): boolean {
    let more = false;
    withoutSync(this.db, () => this.tx(() => (more = this.trimBatch())));
    return more;
  }

  get cap(): number {
    return this.maxBytes;
  }

  /**
   * Stores one sampling instant's points, then rolls up closed buckets, expires old rows
   * and holds the cap, all in one transaction. The commit skips the fsync: a power cut
   * may lose the last seconds of history, and an fsync a second would wear the disk for
   * nothing. The next configuration commit (synchronous FULL) syncs the log anyway.
   */
  append(tsSec: number, points: readonly MetricPoint[]): void {
    withoutSync(this.db, () =>
      this.tx(() => {
        const insert = this.stmt.insert[0]!;
        for (const p of points) {
          if (Number.isFinite(p.value)) insert.run(this.seriesId(p.series, tsSec), tsSec, p.value);
        }
        this.maintainNow(tsSec);
      }),
    );
  }

  /** Rollups, retention and the cap as of nowSec, without new points (also for tests). */
  maintain(nowSec: number): void {
    this.tx(() => this.maintainNow(nowSec, true));
  }

  /** Every series (or those with keys after `after`), by key in UTF-16 code unit order. */
  listSeries(after?: string): SeriesRow[] {
    const rows = [...this.ids.values()].filter((s) => after === undefined || s.key > after);
    return rows.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  findSeries(key: string): SeriesRow | undefined {
    return this.ids.get(key);
  }

  /**
   * At most maxPoints points of one series in [fromSec, toSec], from the finest tier that
   * still holds the start of the range (or of the series, if younger) and has few enough
   * rows in it to read at once (QUERY_ROWS, or maxPoints if more), regrouped with the
   * series' aggregate into the narrowest step (a multiple of the tier's) that keeps to
   * maxPoints. A day at 600 points is the 10 s tier in 150 s steps, up to the last closed
   * 10 s, where the 1 h tier would give 24 points and miss the hour in progress. What a
   * tier holds is judged tier-wide (retention and the cap cut all series alike), so a
   * sparse series (latency of a mostly idle volume) still reads from the fine tiers. A
   * range that starts before every tier reads the one that reaches furthest back.
   */
  query(series: SeriesRow, fromSec: number, toSec: number, maxPoints: number): QueryAnswer {
    const start = Math.max(fromSec, series.firstTs);
    const span = Math.max(0, toSec - start);
    const held = TIERS.map((_, i) => this.edgeOfTier(i, 'oldest'));
    const holding = TIERS.map((_, i) => i).filter(
      (i) => held[i] !== null && held[i]! <= start + TIERS[i]!.stepSec,
    );
    const readable = holding.find(
      (i) => span / TIERS[i]!.stepSec + 1 <= Math.max(QUERY_ROWS, maxPoints),
    );
    const i = readable ?? holding.at(-1) ?? oldestTier(held);
    const tier = TIERS[i]!;
    const step = stepFor(start, toSec, maxPoints, tier.stepSec);
    const rows = this.stmt.range[i]![series.agg === 'max' ? 1 : 0]!.all({
      step,
      id: series.id,
      from: Math.floor(start / step) * step,
      to: toSec,
    }) as { b: number; v: number }[];
    return { tier: tier.name, stepSec: step, points: rows.map((r) => [r.b, r.v]) };
  }

  /** Bytes the database uses: pages in use (not on the free list) × page size. */
  usedBytes(): number {
    const p = (name: string): number => this.db.pragma(name, { simple: true }) as number;
    return (p('page_count') - p('freelist_count')) * p('page_size');
  }

  /**
   * Bytes of the history, as the cap counts them: the used bytes less the rest of the
   * database as last measured (or estimated from a count of rows). Growth since then
   * counts as history (the cap acts early), and the rest shrinking since (events pruned)
   * makes it act late, by at most what the history grew in the 10 minutes between
   * measurements. Before the first measurement all of it is reported, and the cap waits.
   */
  historyBytes(): number {
    return this.cappedBytes() ?? this.usedBytes();
  }

  /** The history's bytes as the cap acts on them; null before any measurement or count. */
  private cappedBytes(): number | null {
    return this.other && Math.max(0, this.usedBytes() - this.other.bytes);
  }

  /** A measurement of the whole database and of HISTORY_TABLES, from one snapshot. */
  noteMeasured(m: { used: number; tables: number }): void {
    this.other = { bytes: Math.max(0, m.used - m.tables), estimated: false };
  }

  /**
   * A count of the history's rows (countRows), for a database no thread can measure:
   * the history is taken as MIN_ROW_BYTES a row, never more than it is. A measurement,
   * once made, is not replaced by this estimate.
   */
  noteCounted(rows: number): void {
    if (this.other && !this.other.estimated) return;
    this.other = {
      bytes: Math.max(0, this.usedBytes() - rows * MIN_ROW_BYTES),
      estimated: true,
    };
  }

  /**
   * Counts the history's rows one series' range of one tier at a time (an index range of
   * at most 43,200 rows, a few ms): the caller frees the engine's thread between the
   * steps this yields, and gets the total as the generator's return value.
   */
  *countRows(): Generator<undefined, number, undefined> {
    let rows = 0;
    for (const count of this.stmt.count) {
      for (const s of [...this.ids.values()]) {
        rows += count.get(s.id) as number;
        yield;
      }
    }
    return rows;
  }

  rowCounts(): Record<TierSpec['name'], number> {
    return Object.fromEntries(
      TIERS.map((t) => [t.name, this.db.prepare(`SELECT COUNT(*) FROM ${t.table}`).pluck().get()]),
    ) as Record<TierSpec['name'], number>;
  }

  private seriesId(def: SeriesDef, tsSec: number): number {
    const known = this.ids.get(def.key);
    if (known) return known.id;
    const { lastInsertRowid } = this.stmt.insertSeries.run(
      def.key,
      def.scope,
      def.metric,
      def.unit,
      def.agg,
      JSON.stringify(def.labels),
      tsSec,
    );
    const row = { ...def, id: Number(lastInsertRowid), firstTs: tsSec };
    this.ids.set(def.key, row);
    return row.id;
  }

  private maintainNow(nowSec: number, forceExpire = false): void {
    const done = this.rollUp(nowSec);
    const settled = this.clockSettled(nowSec);
    if (
      settled &&
      (forceExpire || nowSec - this.lastExpire >= EXPIRE_EVERY_SEC || nowSec < this.lastExpire)
    ) {
      this.expire(nowSec, done);
      this.lastExpire = nowSec;
    }
    if (Math.abs(nowSec - this.lastPrune) >= PRUNE_EVERY_SEC) {
      this.pruneSeries();
      this.lastPrune = nowSec;
    }
    this.trimBatch(done);
  }

  /** Rolls every closed bucket of each coarser tier; returns each tier's done-until (s). */
  private rollUp(nowSec: number): number[] {
    const done: number[] = [nowSec + 1]; // the finest tier is complete up to now
    for (let i = 1; i < TIERS.length; i++) {
      const t = TIERS[i]!;
      let from = (this.stmt.getDone.get(t.name) as number | undefined) ?? 0;
      // a bucket is closed once the finer tier is complete past its end
      const until = Math.floor(done[i - 1]! / t.stepSec) * t.stepSec;
      // Rolled past what the finer tier holds, or past the bucket that holds now (the
      // clock stepped back into a bucket already rolled up): a clock that jumped.
      if (from > until || from > Math.floor(nowSec / t.stepSec) * t.stepSec)
        from = this.afterClockJump(i, nowSec, until);
      if (until > from) {
        this.stmt.rollup[i - 1]!.run(from, until);
        this.stmt.setDone.run(t.name, until);
        done.push(until);
      } else {
        done.push(from);
      }
    }
    return done;
  }

  /**
   * Tier i was rolled up past `until`: the clock had jumped ahead and came back. Left
   * so, nothing would roll up until real time caught up (a year ahead: a year without
   * history) while the finer tiers expired. Rows stamped in the future go, and tier i
   * rolls up again from the bucket that holds now: that is the only one whose rows
   * were deleted or can get finer rows it has not seen (samples come at now and
   * after); every bucket before it was rolled from finer rows that are all still
   * there. Not before the first whole bucket the finer tier holds (its older part
   * expired: redone, the bucket would lose it). Redoing less costs less: redoing the
   * whole finer tier, as this once did, took the event loop 2 s with 1000 series
   * after a clock stepped back 3 s across a 10 s boundary.
   */
  private afterClockJump(i: number, nowSec: number, until: number): number {
    this.db.prepare(`DELETE FROM ${TIERS[0]!.table} WHERE ts > ?`).run(nowSec);
    for (let k = 1; k <= i; k++) {
      const done = Math.floor((nowSec + 1) / TIERS[k]!.stepSec) * TIERS[k]!.stepSec;
      this.db.prepare(`DELETE FROM ${TIERS[k]!.table} WHERE ts >= ?`).run(done);
    }
    const step = TIERS[i]!.stepSec;
    const oldest = this.edgeOfTier(i - 1, 'oldest');
    const from =
      oldest === null
        ? until
        : Math.min(
            until,
            Math.max(Math.floor(nowSec / step) * step, Math.ceil(oldest / step) * step),
          );
    this.stmt.setDone.run(TIERS[i]!.name, from);
    return from;
  }

  private pruneSeries(): void {
    for (const key of this.stmt.deadSeries.all() as string[]) {
      this.stmt.deleteSeries.run(key);
      this.ids.delete(key);
    }
  }

  /** Retention, never touching rows the next tier has not absorbed yet. */
  private expire(nowSec: number, done: number[]): void {
    TIERS.forEach((t, i) => {
      const absorbed = i + 1 < TIERS.length ? done[i + 1]! : Infinity;
      this.stmt.expire[i]!.run(Math.min(nowSec - t.retentionSec, absorbed));
    });
  }

  /**
   * One batch of the cap's deletions: true while more are to go. The cap cuts a tier at
   * a time, oldest first, from the finest that has rows the next tier has absorbed: all
   * its rows before a cut CAP_CUT_STEPS past its oldest go, a series at a time (a
   * contiguous range of pages; cutting every series at once touched a page of each per
   * batch), at most CAP_BATCH_ROWS rows a batch. A cut once begun is finished for every
   * series, so that a tier reaches back equally far for all of them. On an estimate
   * (noteCounted) the coarsest tier is left alone: an estimate is no ground to delete
   * what exists nowhere else.
   */
  private trimBatch(done?: number[]): boolean {
    const bytes = this.cappedBytes();
    if (bytes === null) {
      this.cut = null;
      return (this.trimming = false);
    }
    if (!this.cut) {
      if (bytes <= this.maxBytes * LOW_WATER) return (this.trimming = false);
      if (!this.trimming && bytes <= this.maxBytes * HIGH_WATER) return false;
      this.trimming = true;
      this.cut = this.nextCut(done ?? this.rolledUntil());
      if (!this.cut) return (this.trimming = false); // nothing left that the cap may take
    }
    const cut = this.cut;
    // never past what the next tier holds (that moves back after a clock jump)
    const before = Math.min(cut.before, (done ?? this.rolledUntil())[cut.tier + 1] ?? Infinity);
    const ids = [...this.ids.values()].map((s) => s.id).filter((id) => id >= cut.nextId);
    ids.sort((a, b) => a - b);
    let rows = 0;
    for (const id of ids) {
      if (rows > 0 && rows + CAP_CUT_STEPS > CAP_BATCH_ROWS) break;
      rows += this.stmt.trim[cut.tier]!.run(id, before).changes;
      cut.nextId = id + 1;
    }
    if (cut.nextId > (ids.at(-1) ?? -Infinity)) this.cut = null;
    return this.cut !== null || (this.cappedBytes() ?? 0) > this.maxBytes * LOW_WATER;
  }

  /** Where the cap cuts next (see trimBatch), or null when nothing may go. */
  private nextCut(until: number[]): Cut | null {
    const tiers = this.other?.estimated ? TIERS.length - 1 : TIERS.length;
    for (let i = 0; i < tiers; i++) {
      const limit = until[i + 1] ?? Infinity;
      const oldest = this.edgeOfTier(i, 'oldest');
      if (oldest === null || oldest >= limit) continue;
      // a series has at most one row a step
      const before = Math.min(limit, oldest + CAP_CUT_STEPS * TIERS[i]!.stepSec);
      return { tier: i, before, nextId: -Infinity };
    }
    return null;
  }

  /** Up to when each tier is complete: the finest up to now, the others as rolled up. */
  private rolledUntil(): number[] {
    return TIERS.map((t, i) =>
      i === 0 ? Infinity : ((this.stmt.getDone.get(t.name) as number | undefined) ?? 0),
    );
  }

  /** The oldest (newest) ts of a tier: one PK seek per series, no scan of the tier. */
  private edgeOfTier(i: number, which: 'oldest' | 'newest'): number | null {
    let edge: number | null = null;
    for (const s of this.ids.values()) {
      const t = this.stmt[which][i]!.get(s.id) as number | null;
      if (t !== null && (edge === null || (which === 'oldest' ? t < edge : t > edge))) edge = t;
    }
    return edge;
  }
}

/**
 * The narrowest step, a multiple of tierStep, whose buckets (aligned to multiples of
 * it) over [start, to] number at most maxPoints.
 */
function stepFor(start: number, to: number, maxPoints: number, tierStep: number): number {
  const buckets = (step: number): number => Math.floor(to / step) - Math.floor(start / step) + 1;
  // no fewer steps than this can do; a step or two more at most, for the alignment
  let k = Math.max(1, Math.floor((to - start) / maxPoints / tierStep));
  while (buckets(k * tierStep) > maxPoints) k++;
  return k * tierStep;
}

/** The tier reaching furthest back (the range starts before all of them), else the finest. */
function oldestTier(held: (number | null)[]): number {
  let best = 0;
  held.forEach((t, i) => {
    if (t !== null && (held[best] === null || t < held[best]!)) best = i;
  });
  return best;
}
