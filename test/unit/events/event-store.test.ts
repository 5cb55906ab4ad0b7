/** Event queries (filters, paging), retention, the recorded-event hook, the log file. */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EventStore } from '../../../engine/src/events/event-store.js';
import {
  onEventRecorded,
  openDatabase,
  recordEvent,
  type RecordedEvent,
} from '../../../engine/src/persistence/db.js';
import { DbReader } from '../../../engine/src/persistence/db-reader.js';
import { RotatingLogFile } from '../../../engine/src/util/log-file.js';
import { tempDir } from '../../helpers/engine.js';

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
    expect(store.prune(250_000, 200_000, 1_000_000)).toBe(49); // ts < 50 000
    expect(store.prune(250_000, 1e12, 100)).toBe(101);
    const left = (await store.list({ limit: 1000 })).events;
    expect(left).toHaveLength(100);
    expect(left.at(-1)!.id).toBe(151);
  });
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
