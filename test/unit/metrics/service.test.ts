/**
 * The metrics service end to end in one process: a synthetic I/O source, synthetic
 * /proc, a real database and a clock stepped by the test. Ticks go through the
 * sampler into the store and out as `metrics.sample`; the clock then jumps across
 * the 1 h, 24 h and 30 day boundaries and each tier keeps exactly what it should.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MetricsSample } from '../../../contract/api.js';
import { IoStats } from '../../../engine/src/core/stats.js';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { DbReader } from '../../../engine/src/persistence/db-reader.js';
import { MetricsService } from '../../../engine/src/service/metrics-service.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';

const NQN = 'nqn.2026-01.io.branchsan.test:vol1';
const HOUR = 3600;
const DAY = 86_400;
/** Aligned to every bucket, in ms. */
const START = 3600 * 472_222 * 1000;

const proc = {
  readText: async (p: string) =>
    p === '/proc/meminfo' ? 'MemTotal: 1000 kB\nMemAvailable: 250 kB\n' : '',
  statfs: async () => ({ bsize: 4096, blocks: 100, bfree: 50 }),
};

let db: Db | undefined;
let reader: DbReader | undefined;
afterEach(() => {
  reader?.close();
  db?.close();
  db = reader = undefined;
});

function setup(o: { offThread?: boolean } = {}) {
  const dataDir = tempDir();
  db = openDatabase(path.join(dataDir, 'branchsan.db')).db;
  reader = new DbReader(db, undefined, o.offThread);
  const stats = new IoStats();
  const clock = { now: START };
  const pushed: MetricsSample[] = [];
  const logged: { level: string; msg: string; err?: { code?: string } }[] = [];
  const log = createLogger({ sink: { write: (l) => logged.push(JSON.parse(l)) }, level: 'debug' });
  const service = new MetricsService({
    db,
    dataDir,
    io: {
      namespaces: () => [{ nqn: NQN, nsid: 1, stats: stats.snapshot() }],
      controllers: () => [],
    },
    hub: {
      broadcast: (name, data) => name === 'metrics.sample' && pushed.push(data as MetricsSample),
    },
    log,
    clock: () => clock.now,
    monotonicSec: () => clock.now / 1000, // the steps are time that passed, not clock steps
    node: proc,
    reader,
  });
  return { service, stats, clock, pushed, dataDir, logged };
}

/** Second s (from START) does s % 7 reads: read_iops at s is s % 7. */
async function run(s: ReturnType<typeof setup>, fromSec: number, toSec: number): Promise<void> {
  for (let t = fromSec; t < toSec; t++) {
    s.clock.now = START + t * 1000;
    for (let i = 0; i < t % 7; i++) s.stats.record('read', 4096, 200, false);
    await s.service.tick();
  }
}

const key = `ns:${NQN}/1:read_iops`;

describe('metrics service', () => {
  it('while the database refuses writes: live samples still go out, one warning (again after 10 min), one line at the end', async () => {
    const s = setup();
    await run(s, 0, 3);
    const warnings = () => s.logged.filter((l) => l.level === 'warn');
    // A real refusal by SQLite for this connection (SQLITE_READONLY), every round.
    db!.pragma('query_only = 1');
    await run(s, 3, 8);
    expect(s.pushed.map((p) => p.namespaces[0]!.readIops)).toEqual([1, 2, 3, 4, 5, 6, 0]);
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]!.msg).toBe(
      'metrics history is not recorded: the data directory is read-only. Live figures still ' +
        'reach the dashboard; recording resumes by itself once the data directory takes ' +
        'writes again (this is said again every 10 minutes until then).',
    );
    expect(warnings()[0]!.err?.code).toMatch(/^SQLITE_READONLY/);
    await run(s, 607, 608); // ten minutes on
    expect(warnings()).toHaveLength(2);
    expect(warnings()[1]!.msg).toBe(
      `metrics history still not recorded: 6 samples lost since ${new Date(START + 3000).toISOString()}`,
    );
    db!.pragma('query_only = 0');
    await run(s, 608, 610);
    expect(warnings()).toHaveLength(2);
    expect(s.logged.filter((l) => l.msg.startsWith('metrics history recorded again'))).toEqual([
      expect.objectContaining({
        level: 'info',
        msg: `metrics history recorded again; 6 samples since ${new Date(START + 3000).toISOString()} were lost`,
      }),
    ]);
    const stored = s.service.query({
      series: key,
      from: START,
      to: START + 610_000,
      maxPoints: 1000,
    }).points;
    expect(stored.map(([t]) => (t - START) / 1000)).toEqual([1, 2, 608, 609]);
  });

  it('samples every tick into the store and pushes metrics.sample', async () => {
    const s = setup();
    await run(s, 0, 4); // the first tick is the baseline
    expect(s.pushed).toHaveLength(3);
    expect(s.pushed.map((p) => p.namespaces[0]!.readIops)).toEqual([1, 2, 3]);
    expect(s.pushed[0]!.node).toMatchObject({ memUsedBytes: 750 * 1024, diskUsedBytes: 50 * 4096 });
    const series = s.service.series().series;
    expect(series.find((x) => x.key === key)).toMatchObject({
      scope: 'namespace',
      metric: 'read_iops',
      unit: 'ops/s',
      agg: 'avg',
      labels: { nqn: NQN, nsid: '1' },
    });
    expect(series.find((x) => x.key === `ns:${NQN}/1:read_lat_p99_us`)!.agg).toBe('max');
    const q = s.service.query({
      series: { scope: 'namespace', nqn: NQN, nsid: 1, metric: 'read_iops' },
      from: START,
    });
    expect(q).toMatchObject({ tier: '1s', stepSec: 1 });
    expect(q.points).toEqual([
      [START + 1000, 1],
      [START + 2000, 2],
      [START + 3000, 3],
    ]);
    expect(() => s.service.query({ series: 'ns:nope/1:read_iops', from: START })).toThrow(
      /No metric history/,
    );
  });

  it('keeps each tier across the 1 h, 24 h and 30 day boundaries', async () => {
    const s = setup();
    await run(s, 0, 2 * HOUR + 1);
    const now = START + 2 * HOUR * 1000;
    // the last hour (3601 points, both ends included): 1 s in 2 s steps if 3600 points
    // are welcome, in 7 s steps for the default 600 (515 points, up to now)
    const hour = { series: key, from: now - HOUR * 1000, to: now };
    expect(s.service.query({ ...hour, maxPoints: 3600 })).toMatchObject({
      tier: '1s',
      stepSec: 2,
    });
    const hourly = s.service.query(hour);
    expect(hourly).toMatchObject({ tier: '1s', stepSec: 7 });
    expect(hourly.points.length).toBeLessThanOrEqual(600);
    expect(hourly.points.at(-1)![0]).toBeGreaterThan(now - 7000);
    // two hours: 1 s no longer reaches back; 10 s has 721 steps, so 20 s steps of it
    const two = s.service.query({ series: key, from: START, to: now });
    expect(two).toMatchObject({ tier: '10s', stepSec: 20 });
    expect(two.points).toHaveLength(360); // the 10 s bucket holding now is not closed yet
    // seconds 10k..10k+9 with 0 at second 0 (the baseline has no point)
    const mean = (from: number, to: number): number => {
      let sum = 0;
      let n = 0;
      for (let t = Math.max(from, 1); t < to; t++, n++) sum += t % 7;
      return sum / n;
    };
    const tenMeans = (from: number): number => {
      const tens = [];
      for (let b = from; b < from + 60; b += 10) tens.push(mean(b, b + 10));
      return tens.reduce((a, x) => a + x, 0) / tens.length;
    };
    const twentyMean = (from: number): number =>
      (mean(from, from + 10) + mean(from + 10, from + 20)) / 2;
    expect(two.points[0]![0]).toBe(START);
    expect(two.points[0]![1]).toBeCloseTo(twentyMean(0), 12); // SQLite sums in another order
    expect(two.points[15]![1]).toBeCloseTo(twentyMean(300), 12);
    const tenSec = s.service.query({ series: key, from: START, to: now, maxPoints: 1000 });
    expect(tenSec.tier).toBe('10s');
    expect(tenSec.points[3]).toEqual([START + 30_000, mean(30, 40)]);

    // a day later (the engine was off): 10 s history of the first hours is gone
    await run(s, 2 * HOUR + DAY, 2 * HOUR + DAY + 2);
    const oldest10s = db!.prepare('SELECT MIN(ts) FROM metric_10s').pluck().get() as number;
    expect(oldest10s).toBe(START / 1000 + 2 * HOUR); // only the bucket the jump closed
    const day = s.service.query({ series: key, from: START, to: now });
    expect(day.tier).toBe('1m');
    expect(day.points[0]![1]).toBeCloseTo(tenMeans(0), 12);

    // thirty days later: only the 1 h tier still holds the first hours
    await run(s, 2 * HOUR + 31 * DAY, 2 * HOUR + 31 * DAY + 2);
    const month = s.service.query({ series: key, from: START, to: now - 1000 });
    expect(month.tier).toBe('1h');
    expect(month.points).toHaveLength(2);
    expect(month.points[0]![0]).toBe(START);
  });

  it('turns Prometheus on with a 0600 token file, and sets the history cap', () => {
    const s = setup();
    expect(s.service.settings()).toMatchObject({
      prometheus: { enabled: false, path: '/metrics' },
      maxBytes: 256 * 1024 * 1024,
    });
    const on = s.service.setSettings({ prometheusEnabled: true, maxBytes: 4 << 20 }, 'cli');
    expect(on.prometheus.enabled).toBe(true);
    expect(on.token).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const file = on.prometheus.tokenFile;
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(file, 'utf8').trim()).toBe(on.token);
    const rotated = s.service.setSettings({ rotateToken: true }, 'cli');
    expect(rotated.token).not.toBe(on.token);
    expect(s.service.settings().maxBytes).toBe(4 << 20);
    const off = s.service.setSettings({ prometheusEnabled: false }, 'cli');
    expect(off.token).toBeUndefined();
    expect(off.prometheus.enabled).toBe(false);
  });
});

describe('metrics service: the history cap and the rest of the database', () => {
  it('a large event log does not take the history once measured (off the event loop)', async () => {
    const s = setup();
    // 2 h of history: every tier has rows (1 h ones too)
    await run(s, 0, 2 * HOUR + 5);
    const counts = s.service.store.rowCounts();
    expect(counts['1h']).toBeGreaterThan(0);
    // about 9 MB of events, as a busy node with a raised events.maxEvents keeps
    const insert = db!.prepare(
      "INSERT INTO events (ts, severity, type, message) VALUES (?, 'info', 'test.filler', ?)",
    );
    db!.transaction(() => {
      for (let i = 0; i < 9000; i++) insert.run(START + i, `event ${i} `.padEnd(1000, 'x'));
    })();
    const used = s.service.settings().usedBytes;
    expect(used).toBeGreaterThan(9e6);
    expect(s.service.settings().historyBytes).toBe(used); // not measured yet: all of it shown
    // An 8 MiB cap before the first measurement (the first 30 s after a start) deletes
    // nothing. Before: the whole database counted as history, and the next samples
    // emptied every tier, the 1 h one too.
    s.service.setSettings({ maxBytes: 8 << 20 }, 'cli');
    await s.service.trimToCap();
    await run(s, 2 * HOUR + 5, 2 * HOUR + 8);
    expect(s.service.store.rowCounts()['1h']).toBe(counts['1h']);
    expect(s.service.store.rowCounts()['1s']).toBeGreaterThanOrEqual(counts['1s']);

    await s.service.measureHistory();
    const m = s.service.settings();
    expect(m.historyBytes).toBeGreaterThan(0);
    expect(m.historyBytes).toBeLessThan(2e6);
    expect(m.usedBytes - m.historyBytes).toBeGreaterThan(9e6); // the events, measured
    // Measured, the 8 MiB cap holds the history, not the events (which have their own limit).
    await run(s, 2 * HOUR + 8, 2 * HOUR + 11);
    expect(s.service.store.rowCounts()['1h']).toBe(counts['1h']);
    expect(s.service.store.rowCounts()['1s']).toBeGreaterThanOrEqual(counts['1s']);
    // A cap below the history itself still takes the oldest fine rows first, in batches
    // after the answer.
    s.service.setSettings({ maxBytes: 1 << 20 }, 'cli');
    await s.service.trimToCap();
    expect(s.service.settings().historyBytes).toBeLessThanOrEqual(1 << 20);
    expect(s.service.store.rowCounts()['1s']).toBeLessThan(counts['1s']);
    expect(s.service.store.rowCounts()['1h']).toBe(counts['1h']);
  }, 60_000);

  it('a database the engine holds exclusively (full disk at start): the history is counted, not all of it', async () => {
    const s = setup({ offThread: false }); // the reader cannot measure: ReaderUnavailable
    await run(s, 0, 600);
    const insert = db!.prepare(
      "INSERT INTO events (ts, severity, type, message) VALUES (?, 'info', 'test.filler', ?)",
    );
    db!.transaction(() => {
      for (let i = 0; i < 9000; i++) insert.run(START + i, `event ${i} `.padEnd(1000, 'x'));
    })();
    const counts = s.service.store.rowCounts();
    const before = s.service.settings();
    expect(before.historyBytes).toBe(before.usedBytes);
    await s.service.measureHistory();
    // Before: never measured, so the whole database (9 MB of events) counted for ever.
    const after = s.service.settings();
    expect(after.historyBytes).toBeGreaterThan(0);
    expect(after.historyBytes).toBeLessThan(1e6);
    s.service.setSettings({ maxBytes: 8 << 20 }, 'cli');
    await s.service.trimToCap();
    await run(s, 600, 603);
    expect(s.service.store.rowCounts()['1s']).toBeGreaterThanOrEqual(counts['1s']);
    expect(s.logged.some((l) => l.msg.startsWith('metrics history counted'))).toBe(true);
  }, 60_000);
});
