/**
 * Event queries (filters, paging), retention (in batches, exact with gaps in the ids,
 * no walk of the log to find nothing to delete), the recorded-event hook, the log file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EventStore, PRUNE_BATCH_ROWS } from '../../../engine/src/events/event-store.js';
import { quietEventsService } from './quiet-service.js';
import {
  onEventRecorded,
  openDatabase,
  recordEvent,
  type RecordedEvent,
} from '../../../engine/src/persistence/db.js';
import { DbReader } from '../../../engine/src/persistence/db-reader.js';
import type { Db } from '../../../engine/src/persistence/db.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { RotatingLogFile } from '../../../engine/src/util/log-file.js';
import { tempDir } from '../../helpers/engine.js';
import { bytesReadBy, coldConnection, readsCounted } from '../../helpers/reads.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** The same queries on the engine's connection and through a reader thread. */
const WAYS = ['on the engine connection', 'through the reader thread'] as const;

function seeded(way: (typeof WAYS)[number] = WAYS[0]) {
  const threaded = way === WAYS[1];
  const { db } = openDatabase(threaded ? path.join(tempDir(), 'events.db') : ':memory:');
  const sev = ['info', 'warning', 'error', 'critical'] as const;
  const types = ['engine.started', 'alert.raised', 'alert.cleared', 'alertx.other'];
  const ins = db.prepare('INSERT INTO events (ts, severity, type, message) VALUES (?, ?, ?, ?)');
  for (let i = 1; i <= 250; i++) ins.run(i * 1000, sev[i % 4], types[i % 4], `event ${i}`);
  const reader = threaded ? new DbReader(db) : undefined;
  cleanups.push(() => {
    reader?.close();
    db.close();
  });
  return { db, store: new EventStore(db, reader) };
}

describe.each(WAYS)('events.list queries, %s', (way) => {
  it('pages newest first with nextBefore until the end', async () => {
    const { store } = seeded(way);
    const seen: number[] = [];
    let before: number | undefined;
    for (;;) {
      const page = await store.list({ limit: 100, ...(before ? { before } : {}) });
      seen.push(...page.events.map((e) => e.id));
      if (page.nextBefore === null) break;
      before = page.nextBefore;
    }
    expect(seen).toHaveLength(250);
    expect(seen[0]).toBe(250);
    expect(seen).toEqual([...seen].sort((a, b) => b - a));
  });

  it('filters by minimum severity, type (exact or prefix), and time range', async () => {
    const { store } = seeded(way);
    const crit = (await store.list({ limit: 1000, severity: 'error' })).events;
    expect(crit.every((e) => e.severity === 'error' || e.severity === 'critical')).toBe(true);
    expect(crit).toHaveLength(125);
    const exact = (await store.list({ limit: 1000, type: 'alert.raised' })).events;
    expect(exact.every((e) => e.type === 'alert.raised')).toBe(true);
    const prefix = (await store.list({ limit: 1000, type: 'alert.*' })).events;
    expect(new Set(prefix.map((e) => e.type))).toEqual(new Set(['alert.raised', 'alert.cleared']));
    const range = (await store.list({ limit: 1000, since: 10_000, until: 20_000 })).events;
    expect(range.map((e) => e.ts)).toEqual(
      [19, 18, 17, 16, 15, 14, 13, 12, 11, 10].map((n) => n * 1000),
    );
    const page = await store.list({ limit: 3, type: 'alert.*', since: 100_000 });
    expect(page.events).toHaveLength(3);
    const next = await store.list({
      limit: 3,
      type: 'alert.*',
      since: 100_000,
      before: page.nextBefore!,
    });
    expect(next.events[0]!.id).toBeLessThan(page.events[2]!.id);
  });

  it('returns data as JSON', async () => {
    const { db, store } = seeded(way);
    recordEvent(db, { type: 'x.y', severity: 'info', message: 'm', data: { a: [1, 2] } });
    expect((await store.list({ limit: 1 })).events[0]!.data).toEqual({ a: [1, 2] });
  });

  it('retention removes events by age and by count', async () => {
    const { store } = seeded(way);
    expect(await store.prune(250_000, 200_000, 1_000_000)).toBe(49); // ts < 50 000
    expect(await store.prune(250_000, 1e12, 100)).toBe(101);
    const left = (await store.list({ limit: 1000 })).events;
    expect(left).toHaveLength(100);
    expect(left.at(-1)!.id).toBe(151);
  });
});

describe('event retention on a large log', () => {
  /** n events, one a second from ts 1000 s; their ids are 1..n. */
  function log(n: number, file = ':memory:') {
    const { db } = openDatabase(file);
    const ins = db.prepare(
      "INSERT INTO events (ts, severity, type, message) VALUES (?, 'info', 'host.connected', ?)",
    );
    db.transaction(() => {
      for (let i = 1; i <= n; i++) ins.run(1000_000 + i * 1000, `Host ${i} connected.`.padEnd(150));
    })();
    return db;
  }
  const ids = (db: Db) => db.prepare('SELECT id FROM events ORDER BY id').pluck().all() as number[];

  it('deletes in batches, the engine thread free between them', async () => {
    const db = log(10_000);
    cleanups.push(() => db.close());
    const store = new EventStore(db);
    const left: number[] = [];
    const count = () => db.prepare('SELECT COUNT(*) FROM events').pluck().get() as number;
    // 3000 events are past the age limit, 6000 more past the count limit of 1000
    const n = await store.prune(1000_000 + 10_000_000, 7_000_000, 1000, {
      batchRows: 500,
      pause: async () => {
        left.push(count());
        await new Promise((r) => setImmediate(r));
      },
    });
    expect(n).toBe(9000);
    expect(ids(db)).toEqual(Array.from({ length: 1000 }, (_, i) => 9001 + i));
    // Before: two statements, 9000 rows and no pause. Now a pause after each batch,
    // and no batch took more than 500 rows.
    expect(left.length).toBeGreaterThanOrEqual(9000 / 500 - 1);
    [10_000, ...left, 1000].forEach((c, i, all) => {
      if (i > 0) expect(all[i - 1]! - c).toBeLessThanOrEqual(500);
    });
  });

  it('keeps the newest maxCount exactly when events left gaps in the ids', async () => {
    const db = log(3000);
    cleanups.push(() => db.close());
    // a clock that stepped back: every tenth event of the newest 2000 is stamped long ago
    db.prepare('UPDATE events SET ts = 5 WHERE id > 1000 AND id % 10 = 5').run();
    const store = new EventStore(db);
    await store.prune(1000_000 + 3000_000, 3000_000, 1500, { batchRows: 100 });
    // the age rule took those 200, leaving gaps; the count rule then kept 1500 rows,
    // though MAX(id) − 1500 would have cut into them
    const kept = ids(db);
    expect(kept).toHaveLength(1500);
    expect(kept.at(-1)).toBe(3000);
    const all = Array.from({ length: 3000 }, (_, i) => i + 1).filter(
      (i) => i <= 1000 || i % 10 !== 5,
    );
    expect(kept).toEqual(all.slice(-1500));
  });

  it('the events service prunes after start a batch at a time, and a stop ends it at the next', async () => {
    const db = log(30_000); // all stamped in 1970: past any retention
    cleanups.push(() => db.close());
    const warned: string[] = [];
    const service = quietEventsService(db, {
      log: createLogger({ sink: { write: (l) => warned.push(JSON.parse(l).msg) }, level: 'warn' }),
    });
    const left = () => db.prepare('SELECT COUNT(*) FROM events').pluck().get() as number;
    service.start();
    // Before: start deleted all 30,000 before it returned.
    expect(left()).toBe(30_000 - PRUNE_BATCH_ROWS);
    await new Promise((r) => setImmediate(r));
    await service.stop();
    const stoppedAt = left();
    expect(stoppedAt).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 50));
    expect(left()).toBe(stoppedAt);
    expect(warned).toEqual([]);
  });

  it.skipIf(!readsCounted)(
    'a prune with nothing to delete reads a few pages, not the log',
    async () => {
      const file = path.join(tempDir(), 'events.db');
      log(20_000, file).close(); // about 4 MB
      const db = coldConnection(file);
      cleanups.push(() => db.close());
      const store = new EventStore(db);
      const size = fs.statSync(file).size;
      expect(size).toBeGreaterThan(3e6);
      let n = -1;
      const read = await bytesReadBy(async () => (n = await store.prune(0, 1e15, 100_000)));
      expect(n).toBe(0);
      // Before: finding the 100,000th newest event walked every row, read all of the file.
      expect(read).toBeLessThan(size / 20);
    },
  );
});

describe('onEventRecorded', () => {
  it('tells listeners about every recorded event; a throwing listener changes nothing', () => {
    const { db } = openDatabase(':memory:');
    const got: RecordedEvent[] = [];
    const off1 = onEventRecorded(db, () => {
      throw new Error('listener bug');
    });
    const off2 = onEventRecorded(db, (e) => got.push(e));
    const id = recordEvent(db, { type: 'a.b', severity: 'error', message: 'm', data: { k: 1 } });
    expect(got).toEqual([
      { id, ts: expect.any(Number), severity: 'error', type: 'a.b', message: 'm', data: { k: 1 } },
    ]);
    off1();
    off2();
    recordEvent(db, { type: 'a.c', severity: 'info', message: 'm' });
    expect(got).toHaveLength(1);
  });
});

describe('engine log file', () => {
  it('rotates by size and keeps N files', () => {
    const dir = tempDir();
    const f = new RotatingLogFile(dir, { maxBytes: 1000, keep: 3 });
    const line = 'x'.repeat(99) + '\n';
    for (let i = 0; i < 55; i++) f.write(line);
    f.close();
    const names = fs.readdirSync(dir).sort();
    expect(names).toEqual(['engine.log', 'engine.log.1', 'engine.log.2', 'engine.log.3']);
    for (const n of names) expect(fs.statSync(path.join(dir, n)).size).toBeLessThanOrEqual(1000);
    expect(fs.statSync(path.join(dir, 'engine.log.1')).size).toBe(1000);
    // reopening appends to the current file
    const g = new RotatingLogFile(dir, { maxBytes: 1000, keep: 3 });
    const before = fs.statSync(path.join(dir, 'engine.log')).size;
    g.write(line);
    g.close();
    expect(fs.statSync(path.join(dir, 'engine.log')).size).toBe(before + 100);
  });
});
