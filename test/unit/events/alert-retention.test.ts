/**
 * Retention of closed alerts: bounded by count as well as by age (a flapping condition
 * stores an alert per flap), a batch at a time with the engine's thread free between
 * batches; active alerts always stay.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { AlertStore } from '../../../engine/src/events/alert-store.js';
import type { Rule } from '../../../engine/src/events/rules.js';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { quietEventsService } from './quiet-service.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function database(): Db {
  const { db } = openDatabase(':memory:');
  cleanups.push(() => db.close());
  return db;
}

const closed = (db: Db) =>
  db
    .prepare('SELECT id FROM alerts WHERE cleared_at IS NOT NULL ORDER BY id')
    .pluck()
    .all() as number[];
const active = (db: Db) =>
  db.prepare('SELECT COUNT(*) FROM alerts WHERE cleared_at IS NULL').pluck().get() as number;

describe('closed alerts retention', () => {
  it('a flapping condition keeps no more closed alerts than events.maxEvents', async () => {
    const db = database();
    let round = 0;
    const flapping: Rule = {
      id: 'test.flapping',
      kind: 'condition',
      evaluate: () =>
        round % 2 === 1
          ? [{ subject: 'host-1', severity: 'warning', title: 'Gone', message: 'Host gone.' }]
          : [],
    };
    const steady: Rule = {
      id: 'test.steady',
      kind: 'condition',
      evaluate: () => [{ subject: 's', severity: 'error', title: 'On', message: 'Still on.' }],
    };
    let now = Date.UTC(2026, 0, 1);
    const s = quietEventsService(db, {
      rules: [steady, flapping],
      now: () => now,
    });
    cleanups.push(() => s.stop());
    s.setSettings({ events: { maxEvents: 1000 } }, 'test');
    for (round = 0; round <= 3000; round++) {
      now += 60_000; // a flap a minute, two days of it: well within the 90 days kept
      await s.evaluate();
    }
    expect(closed(db)).toHaveLength(1500);
    await s.prune();
    const events = db.prepare('SELECT COUNT(*) FROM events').pluck().get() as number;
    expect(events).toBe(1000);
    // Before: all 1500 closed alerts stayed (and would for 90 days, 130,000 of them).
    const kept = closed(db);
    expect(kept).toHaveLength(1000);
    const newest = s.listAlerts(false, 1)[0]!;
    expect(kept.at(-1)).toBe(newest.id); // the last closed stay
    expect(active(db)).toBe(1); // the steady alert, raised first, stays
  });

  it('deletes a batch at a time, oldest closed first, and stops when told', async () => {
    const db = database();
    const ins = db.prepare(
      `INSERT INTO alerts (rule, subject, severity, title, message, raised_at, cleared_at, cleared_why)
       VALUES ('r', ?, 'warning', 't', 'm', ?, ?, 'resolved')`,
    );
    db.prepare(
      `INSERT INTO alerts (rule, subject, severity, title, message, raised_at)
       VALUES ('r', 'active', 'warning', 't', 'm', 1)`,
    ).run();
    // raised in id order, closed in reverse: the count rule goes by when they were closed
    db.transaction(() => {
      for (let i = 0; i < 5000; i++) ins.run(`s${i}`, 1000 + i, 1_000_000 - i);
    })();
    const store = new AlertStore(db);
    const sizes: number[] = [];
    let last = closed(db).length;
    const n = await store.prune(2_000_000, 1e15, 1200, {
      batchRows: 1000,
      pause: async () => {
        const now = closed(db).length;
        sizes.push(last - now);
        last = now;
      },
    });
    expect(n).toBe(3800);
    expect(sizes.every((b) => b <= 1000)).toBe(true);
    // the 1200 closed last stay: here those raised first (id 1 is the active one)
    expect(closed(db)).toEqual(Array.from({ length: 1200 }, (_, i) => i + 2));
    expect(active(db)).toBe(1);

    let asked = 0;
    db.transaction(() => {
      for (let i = 0; i < 5000; i++) ins.run(`t${i}`, 1, 10 + i);
    })();
    const m = await store.prune(2_000_000, 1_990_000, 1e9, {
      batchRows: 1000,
      pause: async () => undefined,
      stopped: () => ++asked > 1,
    });
    expect(m).toBe(2000); // two batches by age, then the stop
  });
});
