/**
 * The metric history store on synthetic series: exact rollup arithmetic (avg and max),
 * retention of each tier across the 1 h, 24 h, 30 d and 1 y boundaries, which tier a
 * query reads and how many points it returns, and the size cap measured as SQLite sees
 * it: nothing deleted before a measurement, rows counted where none can be made, and
 * deletions in bounded batches.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { DbReader } from '../../../engine/src/persistence/db-reader.js';
import {
  CAP_BATCH_ROWS,
  HISTORY_TABLES,
  MetricsStore,
  type MetricPoint,
  type SeriesDef,
} from '../../../engine/src/persistence/metrics-store.js';
import { tempDir } from '../../helpers/engine.js';
import { bytesReadBy, coldConnection, readsCounted } from '../../helpers/reads.js';

const DAY = 86_400;
/** A start aligned to every tier's bucket (a multiple of 3600). */
const T0 = 3600 * 472_222;

const RATE: SeriesDef = {
  key: 'ns:nqn.2026-01.test:v/1:read_iops',
  scope: 'namespace',
  metric: 'read_iops',
  unit: 'ops/s',
  agg: 'avg',
  labels: { nqn: 'nqn.2026-01.test:v', nsid: '1' },
};
const TAIL: SeriesDef = { ...RATE, key: 'ns:nqn.2026-01.test:v/1:read_lat_p99_us', agg: 'max' };

let db: Db | undefined;
afterEach(() => {
  db?.close();
  db = undefined;
});

function openStore(maxBytes?: number): { store: MetricsStore; db: Db } {
  db = openDatabase(path.join(tempDir(), 'm.db')).db;
  return { store: new MetricsStore(db, { maxBytes }), db };
}

/**
 * Measures the history's share of d as the engine does, on a reader thread (dbstat);
 * returns the bytes of the rest of the database.
 */
async function measure(d: Db, store: MetricsStore): Promise<number> {
  const reader = new DbReader(d);
  try {
    const m = await reader.measure(HISTORY_TABLES);
    store.noteMeasured(m);
    return m.used - m.tables;
  } finally {
    await reader.close();
  }
}

/** v(t) = t − T0 for the rate, 1000 + (t − T0) for the tail: every bucket's mean and max are known. */
function fill(store: MetricsStore, from: number, to: number): void {
  for (let t = from; t < to; t++) {
    store.append(t, [
      { series: RATE, value: t - T0 },
      { series: TAIL, value: 1000 + t - T0 },
    ]);
  }
}

function rows(d: Db, table: string, key: string): { ts: number; value: number }[] {
  return d
    .prepare(
      `SELECT ts, value FROM ${table} WHERE series_id = (SELECT id FROM metric_series WHERE key = ?) ORDER BY ts`,
    )
    .all(key) as { ts: number; value: number }[];
}

describe('metric history store', () => {
  it('rolls 1 s points up into 10 s, 1 min and 1 h with avg and max, exactly', () => {
    const { store, db } = openStore();
    fill(store, T0, T0 + 7200);
    store.maintain(T0 + 7199);
    const tens = rows(db, 'metric_10s', RATE.key);
    expect(tens).toHaveLength(720);
    tens.forEach((r, i) => expect(r).toEqual({ ts: T0 + 10 * i, value: 10 * i + 4.5 }));
    const tensMax = rows(db, 'metric_10s', TAIL.key);
    tensMax.forEach((r, i) => expect(r.value).toBe(1000 + 10 * i + 9));
    const mins = rows(db, 'metric_1m', RATE.key);
    expect(mins).toHaveLength(120);
    mins.forEach((r, i) => expect(r).toEqual({ ts: T0 + 60 * i, value: 60 * i + 29.5 }));
    expect(rows(db, 'metric_1m', TAIL.key).map((r) => r.value)).toEqual(
      mins.map((_, i) => 1000 + 60 * i + 59),
    );
    expect(rows(db, 'metric_1h', RATE.key)).toEqual([
      { ts: T0, value: 1799.5 },
      { ts: T0 + 3600, value: 5399.5 },
    ]);
    expect(rows(db, 'metric_1h', TAIL.key).map((r) => r.value)).toEqual([4599, 8199]);
    // the 1 s tier keeps one hour
    const secs = rows(db, 'metric_1s', RATE.key);
    expect(secs[0]!.ts).toBe(T0 + 7199 - 3600);
    expect(secs.at(-1)!.ts).toBe(T0 + 7199);
  });

  it('expires each tier at its retention: 1 h, 24 h, 30 days, 1 year', () => {
    const { store, db } = openStore();
    fill(store, T0, T0 + 7200);
    const count = (): Record<string, number> => store.rowCounts();
    // one more day: the 10 s tier's two hours are gone, 1 min and 1 h stay
    const t2 = T0 + 7200 + DAY;
    store.append(t2, [{ series: RATE, value: 1 }]);
    expect(count()).toMatchObject({ '1s': 1, '10s': 0, '1m': 240, '1h': 4 });
    // a second after the day boundary nothing of the first two hours is in 10 s
    expect(rows(db, 'metric_10s', RATE.key)).toEqual([]);
    expect(rows(db, 'metric_1m', RATE.key)[0]).toEqual({ ts: T0, value: 29.5 });
    // 30 days on: the 1 min tier is gone too; the 1 h tier still answers
    const t3 = t2 + 30 * DAY;
    store.append(t3, [{ series: RATE, value: 2 }]);
    expect(rows(db, 'metric_1m', RATE.key).every((r) => r.ts >= t3 - 30 * DAY)).toBe(true);
    expect(rows(db, 'metric_1m', RATE.key).some((r) => r.ts < T0 + 7200)).toBe(false);
    expect(rows(db, 'metric_1h', RATE.key).slice(0, 2)).toEqual([
      { ts: T0, value: 1799.5 },
      { ts: T0 + 3600, value: 5399.5 },
    ]);
    // the t2 point itself reached 1 h through 10 s and 1 min before they expired
    expect(
      rows(db, 'metric_1h', RATE.key).find((r) => r.ts === Math.floor(t2 / 3600) * 3600),
    ).toEqual({ ts: Math.floor(t2 / 3600) * 3600, value: 1 });
    // a year on: the first hours have left the 1 h tier
    store.append(t3 + 365 * DAY, [{ series: RATE, value: 3 }]);
    expect(rows(db, 'metric_1h', RATE.key).some((r) => r.ts < T0 + 7200)).toBe(false);
    // the tail series got no point after the first two hours: nothing is left of it
    expect(store.findSeries(TAIL.key)).toBeUndefined();
    expect(store.findSeries(RATE.key)).toBeDefined();
  });

  it('rolls up what was stored before a gap (engine down for hours) on the next append', () => {
    const { store, db } = openStore();
    fill(store, T0, T0 + 25); // 25 s, then silence
    store.append(T0 + 5 * 3600, [{ series: RATE, value: 7 }]);
    expect(rows(db, 'metric_10s', RATE.key)).toEqual([
      { ts: T0, value: 4.5 },
      { ts: T0 + 10, value: 14.5 },
      { ts: T0 + 20, value: 22 }, // the partial bucket: the mean of what exists (20..24)
    ]);
    expect(rows(db, 'metric_1h', RATE.key)).toEqual([{ ts: T0, value: (4.5 + 14.5 + 22) / 3 }]);
  });

  it('answers a query from the finest tier that covers the range, within maxPoints', () => {
    const { store } = openStore();
    fill(store, T0, T0 + 7200);
    const now = T0 + 7199;
    const rate = store.findSeries(RATE.key)!;
    const last5min = store.query(rate, now - 299, now, 600);
    expect(last5min).toMatchObject({ tier: '1s', stepSec: 1 });
    expect(last5min.points).toHaveLength(300);
    expect(last5min.points[0]).toEqual([now - 299, 7199 - 299]);
    // two hours: the 1 s tier no longer reaches back; 10 s has 720 points > 600, so
    // it is regrouped into 20 s steps (before: the 1 min tier, 120 points)
    const twoHours = store.query(rate, T0, now, 600);
    expect(twoHours).toMatchObject({ tier: '10s', stepSec: 20 });
    expect(twoHours.points).toHaveLength(360);
    expect(twoHours.points[1]).toEqual([T0 + 20, 29.5]);
    expect(store.query(rate, T0, now, 1000)).toMatchObject({ tier: '10s', stepSec: 10 });
    // one point: the finest tier that holds the range, regrouped with the series' aggregate
    const one = store.query(rate, T0, now, 1);
    expect(one).toMatchObject({ tier: '10s', stepSec: 7200, points: [[T0, 3599.5]] });
    const tail = store.query(store.findSeries(TAIL.key)!, T0, now, 1);
    expect(tail.points).toEqual([[T0, 1000 + 7199]]);
    // from before the series existed: counted from its first point; 1 s no longer has it
    expect(store.query(rate, T0 - DAY, T0 + 299, 600)).toMatchObject({ tier: '10s', stepSec: 10 });
  });

  it('reads a young series from 1 s, though coarser buckets are stamped before its start', () => {
    const { store } = openStore();
    const s0 = T0 + 1805; // mid-minute: the 1 min and 1 h rows are stamped before s0
    fill(store, s0, s0 + 130);
    const now = s0 + 129;
    const q = store.query(store.findSeries(RATE.key)!, now - 300, now, 600);
    expect(q).toMatchObject({ tier: '1s', stepSec: 1 });
    expect(q.points).toHaveLength(130);
  });

  it('holds the database under its size cap, dropping the oldest fine-grained rows first', async () => {
    const cap = 2 * 1024 * 1024;
    const { store, db } = openStore(cap);
    const rest = await measure(db, store); // the rest of the database: the schema's pages
    const series: SeriesDef[] = Array.from({ length: 300 }, (_, i) => ({
      ...RATE,
      key: `ns:nqn.2026-01.test:v/${i + 1}:read_iops`,
    }));
    const fileBytes = (): number => {
      db.pragma('wal_checkpoint(TRUNCATE)');
      return (
        (db.pragma('page_count', { simple: true }) as number) *
        (db.pragma('page_size', { simple: true }) as number)
      );
    };
    let maxSeen = 0;
    for (let t = T0; t < T0 + 800; t++) {
      const points: MetricPoint[] = series.map((s, i) => ({
        series: s,
        value: (t * 7 + i) % 1000,
      }));
      store.append(t, points);
      if (t % 100 === 0) maxSeen = Math.max(maxSeen, fileBytes());
    }
    maxSeen = Math.max(maxSeen, fileBytes());
    // the cap holds the history: the file less the rest of the database
    expect(maxSeen - rest).toBeLessThanOrEqual(cap);
    expect(store.historyBytes()).toBeLessThanOrEqual(cap);
    const counts = store.rowCounts();
    // 800 s × 300 series would be 240,000 rows of 1 s (≈ 4 MiB): the cap took the oldest
    expect(counts['1s']).toBeLessThan(240_000);
    const oldest1s = db.prepare('SELECT MIN(ts) FROM metric_1s').pluck().get() as number;
    expect(oldest1s).toBeGreaterThan(T0);
    // what went was rolled up first: the coarser tiers still reach back to the start
    expect(db.prepare('SELECT MIN(ts) FROM metric_10s').pluck().get()).toBe(T0);
    expect(db.prepare('SELECT MIN(ts) FROM metric_1m').pluck().get()).toBe(T0);
  });
});

describe('metric history store: failures and clocks', () => {
  const HOST_A: SeriesDef = { ...RATE, key: 'host:v/hostA:read_iops', scope: 'host' };
  const HOST_B: SeriesDef = { ...RATE, key: 'host:v/hostB:read_iops', scope: 'host' };

  it('a commit that fails forgets the series it made: a later series never takes over its id', () => {
    const { store, db } = openStore();
    store.append(T0, [{ series: RATE, value: 1 }]);
    // A real SQLite failure inside the append's transaction (as a full disk gives one
    // at commit), after the new series' row was inserted.
    db.exec(
      "CREATE TRIGGER refuse BEFORE INSERT ON metric_1s WHEN NEW.value = 999 BEGIN SELECT RAISE(ABORT, 'disk full'); END",
    );
    expect(() => store.append(T0 + 1, [{ series: HOST_A, value: 999 }])).toThrow(/disk full/);
    db.exec('DROP TRIGGER refuse');
    // Before: host A stayed known under an id the rollback had removed, and host B
    // got the same id, so A's history showed B's values.
    expect(store.findSeries(HOST_A.key)).toBeUndefined();
    store.append(T0 + 2, [{ series: HOST_B, value: 7 }]);
    store.append(T0 + 3, [{ series: HOST_A, value: 5 }]);
    const a = store.findSeries(HOST_A.key)!;
    const b = store.findSeries(HOST_B.key)!;
    expect(a.id).not.toBe(b.id);
    expect(store.query(a, T0, T0 + 10, 100).points).toEqual([[T0 + 3, 5]]);
    expect(store.query(b, T0, T0 + 10, 100).points).toEqual([[T0 + 2, 7]]);
    // And a cap that asks for space comes to an end: nothing unknown holds rows.
    store.noteMeasured({ used: store.usedBytes(), tables: store.usedBytes() });
    store.setMaxBytes(4096);
    let batches = 0;
    while (store.trimStep()) expect(++batches).toBeLessThan(100);
  });

  it('drops, at open, rows of series that no longer exist', () => {
    const { db } = openStore();
    db.prepare('INSERT INTO metric_1s (series_id, ts, value) VALUES (?, ?, ?)').run(42, T0, 1);
    const again = new MetricsStore(db);
    expect(again.rowCounts()['1s']).toBe(0);
  });

  it('a clock that jumped a day ahead and came back does not stop the rollups', () => {
    const { store, db } = openStore();
    for (let t = T0; t < T0 + 600; t++) store.append(t, [{ series: RATE, value: 1 }]);
    store.append(T0 + DAY, [{ series: RATE, value: 1 }]); // one sample from the future
    for (let t = T0 + 600; t < T0 + 3 * 3600; t++) store.append(t, [{ series: RATE, value: 2 }]);
    // Before: the 10 s tier stopped at the jump, so these hours rolled up into nothing
    // and their 1 s rows then expired.
    const tens = rows(db, 'metric_10s', RATE.key);
    expect(tens.at(-1)!.ts).toBe(T0 + 3 * 3600 - 10);
    expect(tens.filter((r) => r.ts >= T0 + 600)).toHaveLength((3 * 3600 - 600) / 10);
    expect(rows(db, 'metric_1m', RATE.key).at(-1)!.ts).toBe(T0 + 3 * 3600 - 60);
    expect(rows(db, 'metric_1h', RATE.key).map((r) => r.ts)).toEqual([T0, T0 + 3600, T0 + 7200]);
    // The future sample is gone from every tier.
    for (const t of ['metric_1s', 'metric_10s', 'metric_1m', 'metric_1h'])
      expect(rows(db, t, RATE.key).filter((r) => r.ts > T0 + 3 * 3600)).toEqual([]);
  });

  /** A store whose monotonic clock the test moves (`clock.mono`, seconds). */
  function steppedStore(d?: Db): { store: MetricsStore; db: Db; clock: { mono: number } } {
    db = d ?? openDatabase(path.join(tempDir(), 'm.db')).db;
    const clock = { mono: 0 };
    return { store: new MetricsStore(db, { monotonicSec: () => clock.mono }), db, clock };
  }
  /** One sample a second over [from, to) of the wall clock, the monotonic clock moving along. */
  function run(store: MetricsStore, clock: { mono: number }, from: number, to: number): void {
    for (let t = from; t < to; t++) {
      store.append(t, [{ series: RATE, value: 1 }]);
      clock.mono += 1;
    }
  }

  it('a clock a year ahead, set back within the hour, costs no history', () => {
    const { store, db, clock } = steppedStore();
    run(store, clock, T0, T0 + 2 * 3600);
    const before = Object.fromEntries(
      ['metric_10s', 'metric_1m', 'metric_1h'].map((t) => [t, rows(db, t, RATE.key).length]),
    );
    // A year ahead for ten minutes (a bad RTC, then NTP), then back where it was.
    const YEAR = 365 * DAY;
    run(store, clock, T0 + 2 * 3600 + YEAR, T0 + 2 * 3600 + YEAR + 600);
    run(store, clock, T0 + 2 * 3600 + 600, T0 + 2 * 3600 + 700);
    // Before: the year-ahead samples expired every tier, the 1 h one included.
    expect(rows(db, 'metric_10s', RATE.key)[0]!.ts).toBe(T0);
    expect(rows(db, 'metric_1m', RATE.key)[0]!.ts).toBe(T0);
    expect(rows(db, 'metric_1h', RATE.key).map((r) => r.ts)).toEqual([T0, T0 + 3600]);
    for (const [t, n] of Object.entries(before))
      expect(rows(db, t, RATE.key).length).toBeGreaterThanOrEqual(n);
    // the rows stamped a year ahead are gone from every tier
    for (const t of ['metric_1s', 'metric_10s', 'metric_1m', 'metric_1h'])
      expect(rows(db, t, RATE.key).filter((r) => r.ts > T0 + 3 * 3600)).toEqual([]);
  });

  it('a clock stepped back a few seconds rolls up again only the bucket that holds now', () => {
    const { store, db } = steppedStore();
    const series = Array.from({ length: 50 }, (_, i) => ({ ...RATE, key: `${RATE.key}:${i}` }));
    const at = (t: number, bump = 0): MetricPoint[] =>
      series.map((s, i) => ({ series: s, value: t - T0 + i + bump }));
    for (let t = T0; t < T0 + 1800; t++) store.append(t, at(t));
    const changes = () => db.prepare('SELECT total_changes()').pluck().get() as number;
    const before = changes();
    // NTP steps the clock back 2 s across the 10 s (and 1 min) boundary at T0 + 1800
    store.append(T0 + 1797, at(T0 + 1797, 1000));
    // Rows written: the two 1 s rows per series stamped ahead go, the 10 s and 1 min
    // rows of the buckets holding now go, the new sample comes: about 250. Before,
    // every 10 s, 1 min and 1 h bucket of the half hour was rolled up again (over 10k).
    expect(changes() - before).toBeLessThan(500);
    for (let t = T0 + 1798; t < T0 + 1830; t++) store.append(t, at(t));
    const key = series[3]!.key;
    const ones = rows(db, 'metric_1s', key);
    const mean = (from: number, to: number, r: { ts: number; value: number }[]) => {
      const v = r.filter((x) => x.ts >= from && x.ts < to).map((x) => x.value);
      return v.reduce((a, b) => a + b, 0) / v.length;
    };
    // the bucket that holds the step is exact, with the sample taken after it
    const tens = rows(db, 'metric_10s', key);
    const b = tens.find((r) => r.ts === T0 + 1790)!;
    expect(b.value).toBeCloseTo(mean(T0 + 1790, T0 + 1800, ones), 9);
    expect(ones.find((r) => r.ts === T0 + 1797)!.value).toBe(1797 + 3 + 1000);
    // and so are the ones before it (untouched) and after it (rolled as usual)
    for (const ts of [T0 + 1780, T0 + 1800, T0 + 1810])
      expect(tens.find((r) => r.ts === ts)!.value).toBeCloseTo(mean(ts, ts + 10, ones), 9);
    const minute = rows(db, 'metric_1m', key).find((r) => r.ts === T0 + 1740)!;
    expect(minute.value).toBeCloseTo(mean(T0 + 1740, T0 + 1800, tens), 9);
  });

  it('a clock stepped back onto the last second of a rolled bucket rolls that bucket again', () => {
    const { store, db } = steppedStore();
    for (let t = T0; t < T0 + 1802; t++) store.append(t, [{ series: RATE, value: 0 }]);
    // back from T0 + 1801 to T0 + 1799: the 10 s bucket [1790, 1800) was rolled already
    store.append(T0 + 1799, [{ series: RATE, value: 100 }]);
    for (let t = T0 + 1800; t < T0 + 1830; t++) store.append(t, [{ series: RATE, value: 0 }]);
    // Before: only a step back past the finer tier's end was seen; this bucket kept 0.
    expect(rows(db, 'metric_10s', RATE.key).find((r) => r.ts === T0 + 1790)!.value).toBe(10);
    expect(rows(db, 'metric_1m', RATE.key).find((r) => r.ts === T0 + 1740)!.value).toBeCloseTo(
      10 / 6,
      9,
    );
  });

  it('after a step ahead that stays, retention resumes once the clock has held for an hour', () => {
    const { store, db, clock } = steppedStore();
    run(store, clock, T0, T0 + 600);
    const ahead = T0 + 2 * DAY; // ahead by two days, for good
    run(store, clock, ahead, ahead + 3000);
    expect(rows(db, 'metric_1s', RATE.key)[0]!.ts).toBe(T0); // kept while the clock settles
    run(store, clock, ahead + 3000, ahead + 3700);
    expect(rows(db, 'metric_1s', RATE.key)[0]!.ts).toBeGreaterThan(ahead); // then 1 h as always
    expect(rows(db, 'metric_10s', RATE.key)[0]!.ts).toBeGreaterThanOrEqual(ahead - DAY);
    expect(rows(db, 'metric_1m', RATE.key)[0]!.ts).toBe(T0); // 30 days: still within
  });

  it('at open, a newest row far behind the clock waits an hour before retention', () => {
    const first = steppedStore();
    run(first.store, first.clock, T0, T0 + 600);
    // Opened again two days later (or with a clock two days wrong).
    const { store, db, clock } = steppedStore(first.db);
    run(store, clock, T0 + 2 * DAY, T0 + 2 * DAY + 60);
    expect(rows(db, 'metric_10s', RATE.key)[0]!.ts).toBe(T0);
    run(store, clock, T0 + 2 * DAY + 60, T0 + 2 * DAY + 3700);
    expect(rows(db, 'metric_10s', RATE.key)[0]!.ts).toBeGreaterThan(T0 + DAY);
    // A restart a minute after the last row changes nothing.
    const again = steppedStore(db);
    again.store.append(T0 + 2 * DAY + 3760, [{ series: RATE, value: 1 }]);
    again.store.maintain(T0 + 2 * DAY + 3760);
    expect(rows(db, 'metric_1s', RATE.key)[0]!.ts).toBe(T0 + 2 * DAY + 3760 - 3600); // not paused
  });
});

/**
 * Rows written straight into every tier, as weeks of sampling leave them up to `now`
 * (aligned to every tier), for `series` series: 1 s for the last hour, 10 s for the
 * last day, 1 min for 30 days, 1 h for 40 days, every bucket rolled up.
 */
function history(d: Db, now: number, series = 1): void {
  const tiers: [table: string, step: number, keep: number][] = [
    ['metric_1s', 1, 3600],
    ['metric_10s', 10, DAY],
    ['metric_1m', 60, 30 * DAY],
  ];
  d.transaction(() => {
    for (let id = 1; id <= series; id++) {
      const key = id === 1 ? RATE.key : `${RATE.key}:${id}`;
      d.prepare(
        "INSERT INTO metric_series (id, key, scope, metric, unit, agg, labels, first_ts) VALUES (?, ?, 'namespace', 'read_iops', 'ops/s', 'avg', '{}', ?)",
      ).run(id, key, now - 40 * DAY);
      for (const [table, step, keep] of tiers) {
        const ins = d.prepare(`INSERT INTO ${table} (series_id, ts, value) VALUES (?, ?, ?)`);
        for (let ts = now - keep; ts < now; ts += step) ins.run(id, ts, (ts % 1000) + 0.5);
      }
      const hour = d.prepare('INSERT INTO metric_1h (series_id, ts, value) VALUES (?, ?, ?)');
      for (let ts = now - 40 * DAY; ts < now; ts += 3600) hour.run(id, ts, 7.5);
    }
    for (const [tier, step] of [
      ['10s', 10],
      ['1m', 60],
      ['1h', 3600],
    ] as const)
      d.prepare('INSERT INTO metric_rollups (tier, done_until) VALUES (?, ?)').run(
        tier,
        Math.floor(now / step) * step,
      );
  })();
}

describe('metric history store: the size cap', () => {
  const NOW = T0 + 60 * DAY;

  it('deletes nothing before the history is measured, however large the rest of the database', async () => {
    const { db } = openStore();
    history(db, NOW);
    // an event log of about 3 MB: above the 2 MiB cap by itself
    const ins = db.prepare(
      "INSERT INTO events (ts, severity, type, message) VALUES (?, 'info', 'test.filler', ?)",
    );
    db.transaction(() => {
      for (let i = 0; i < 3000; i++) ins.run(i, `event ${i} `.padEnd(1000, 'x'));
    })();
    const store = new MetricsStore(db, { maxBytes: 2 << 20 });
    const before = store.rowCounts();
    expect(store.usedBytes()).toBeGreaterThan(2 << 20);
    for (let t = NOW; t < NOW + 5; t++) store.append(t, [{ series: RATE, value: 1 }]);
    while (store.trimStep()); // nothing to do
    // Before: the whole database counted as history, and the first samples emptied every
    // tier, the 40 days of 1 h rows (which exist nowhere else) with them.
    const after = store.rowCounts();
    expect(after['1h']).toBe(before['1h']);
    expect(after['1m']).toBe(before['1m']);
    expect(after['1s']).toBe(before['1s'] + 5);
    // Measured, the history is far under the cap: still nothing goes.
    await measure(db, store);
    expect(store.historyBytes()).toBeLessThan(2 << 20);
    store.append(NOW + 5, [{ series: RATE, value: 1 }]);
    expect(store.rowCounts()['1h']).toBe(before['1h']);
  });

  it('counts rows where it cannot measure: an estimate never above the truth, that spares the coarsest tier', () => {
    const { db } = openStore();
    history(db, NOW, 3);
    const store = new MetricsStore(db, { maxBytes: 16 * 1024 });
    const storedBytes = () =>
      db
        .prepare(
          `SELECT SUM(pgsize) FROM dbstat WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name IN (${HISTORY_TABLES.map(() => '?').join(',')}))`,
        )
        .pluck()
        .get(...HISTORY_TABLES) as number;
    /** Counts as the service does, a step at a time; returns the steps taken. */
    const count = (): number => {
      const counting = store.countRows();
      let steps = 0;
      let step = counting.next();
      for (; !step.done; step = counting.next()) steps++;
      expect(step.value).toBe(Object.values(store.rowCounts()).reduce((a, b) => a + b, 0));
      store.noteCounted(step.value);
      return steps;
    };
    const counts = store.rowCounts();
    expect(count()).toBe(3 * 4); // a series' range of a tier a step
    expect(store.historyBytes()).toBeGreaterThan(16 * 1024);
    expect(store.historyBytes()).toBeLessThanOrEqual(storedBytes());
    // far above the cap: finer rows go (all rolled up), the 1 h rows stay
    while (store.trimStep());
    expect(store.rowCounts()['1s']).toBeLessThan(counts['1s']);
    expect(store.rowCounts()['1h']).toBe(counts['1h']);
    // nothing but 1 h rows left, counted above the cap: still they stay
    for (const t of ['metric_1s', 'metric_10s', 'metric_1m']) db.exec(`DELETE FROM ${t}`);
    count();
    expect(store.historyBytes()).toBeGreaterThan(16 * 1024);
    expect(store.trimStep()).toBe(false);
    expect(store.rowCounts()['1h']).toBe(counts['1h']);
    // Measured, the same cap takes the oldest 1 h rows: a measurement is no estimate.
    store.noteMeasured({ used: store.usedBytes(), tables: storedBytes() });
    while (store.trimStep());
    expect(store.rowCounts()['1h']).toBeLessThan(counts['1h']);
  });

  it('a lowered cap deletes nothing at once: batches of at most CAP_BATCH_ROWS rows bring the history under it', async () => {
    const { store, db } = openStore();
    const series = Array.from({ length: 60 }, (_, i) => ({ ...RATE, key: `${RATE.key}:${i}` }));
    for (let t = T0; t < T0 + 1200; t++)
      store.append(
        t,
        series.map((s, i) => ({ series: s, value: t + i })),
      );
    await measure(db, store);
    const before = store.rowCounts();
    const cap = Math.round(store.historyBytes() * 0.8); // a fifth too much: 1 s rows go
    const changes = () => db.prepare('SELECT total_changes()').pluck().get() as number;
    let last = changes();
    // Before: setMaxBytes deleted all that was to go in one transaction (seconds of
    // the engine's thread with a large history).
    store.setMaxBytes(cap);
    expect(changes()).toBe(last);
    let batches = 0;
    for (let more = true; more; batches++) {
      more = store.trimStep();
      expect(changes() - last).toBeLessThanOrEqual(CAP_BATCH_ROWS);
      last = changes();
    }
    expect(batches).toBeGreaterThan(3);
    expect(store.historyBytes()).toBeLessThanOrEqual(cap * 0.85);
    // the oldest 1 s rows went, and only those
    const after = store.rowCounts();
    expect(after['1s']).toBeLessThan(before['1s']);
    expect(db.prepare('SELECT MIN(ts) FROM metric_1s').pluck().get()).toBeGreaterThan(T0);
    expect([after['10s'], after['1m'], after['1h']]).toEqual([
      before['10s'],
      before['1m'],
      before['1h'],
    ]);
  });

  it.skipIf(!readsCounted)(
    'opening the store looks up the series each tier holds, not every row',
    async () => {
      const file = path.join(tempDir(), 'm.db');
      const d = openDatabase(file).db;
      history(d, NOW, 20);
      // rows of a series that no longer exists (a failed commit of an older version)
      d.prepare('INSERT INTO metric_1m (series_id, ts, value) VALUES (?, ?, ?)').run(99, NOW, 1);
      d.close();
      const size = fs.statSync(file).size;
      expect(size).toBeGreaterThan(10e6);
      db = coldConnection(file);
      const read = await bytesReadBy(() => new MetricsStore(db!));
      // Before: the sweep for such rows read every row of every tier.
      expect(read).toBeLessThan(size / 20);
      expect(db.prepare('SELECT COUNT(*) FROM metric_1m WHERE series_id = 99').pluck().get()).toBe(
        0,
      );
    },
  );
});

describe('metric history store: queries', () => {
  const NOW = T0 + 60 * DAY;

  it('never returns more points than maxPoints', () => {
    const { db } = openStore();
    history(db, NOW);
    const store = new MetricsStore(db);
    const rate = store.findSeries(RATE.key)!;
    // Before: 600 s of the 1 s tier at 600 points gave 601 (both ends count).
    expect(store.query(rate, NOW - 601, NOW - 1, 600).points.length).toBeLessThanOrEqual(600);
    for (const span of [1, 59, 60, 601, 3599, 3600, 86_399, 7 * DAY, 35 * DAY])
      for (const maxPoints of [1, 2, 7, 599, 600, 1000]) {
        const q = store.query(rate, NOW - 1 - span, NOW - 1, maxPoints);
        expect(q.points.length, `${span} s at ${maxPoints}`).toBeLessThanOrEqual(maxPoints);
        expect(q.points.length, `${span} s at ${maxPoints}`).toBeGreaterThan(0);
      }
  });

  it('a day at 600 points: the 10 s tier regrouped, up to the last minutes, not 24 hourly points', () => {
    const { db } = openStore();
    history(db, NOW);
    const store = new MetricsStore(db);
    const rate = store.findSeries(RATE.key)!;
    const day = store.query(rate, NOW - DAY, NOW, 600);
    // Before: the 1 h tier, 24 points, the newest an hour old.
    expect(day).toMatchObject({ tier: '10s', stepSec: 150 });
    expect(day.points.length).toBeGreaterThan(500);
    expect(day.points.length).toBeLessThanOrEqual(600);
    expect(NOW - day.points.at(-1)![0]).toBeLessThanOrEqual(150);
    // a bucket of 15 rows of 10 s: the mean of their values
    const [b, v] = day.points[10]!;
    const ts = Array.from({ length: 15 }, (_, i) => b + 10 * i);
    expect(v).toBeCloseTo(ts.reduce((a, t) => a + (t % 1000) + 0.5, 0) / 15, 9);
    // a week: the 1 min tier in 17 min steps; a month reads more rows than a query may,
    // so the 1 h tier
    expect(store.query(rate, NOW - 7 * DAY, NOW, 600)).toMatchObject({
      tier: '1m',
      stepSec: 1020,
    });
    expect(store.query(rate, NOW - 30 * DAY, NOW, 600)).toMatchObject({ tier: '1h' });
  });
});
