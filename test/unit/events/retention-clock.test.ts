/**
 * Retention by age and a wall clock stepped ahead: the event log and the closed alerts
 * outlive a clock a year ahead at boot or while running, and age out again once the
 * clock has been steady for an hour.
 */
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CLOCK_SETTLE_MS } from '../../../engine/src/events/service.js';
import { EventStore } from '../../../engine/src/events/event-store.js';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { tempDir } from '../../helpers/engine.js';
import { quietEventsService } from './quiet-service.js';

const DAY = 24 * 3600_000;
const T = Date.UTC(2026, 0, 15); // the right time
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** A database with an event a day for the last 30 days and a closed alert, closed at T − 1 day. */
function seeded(): Db {
  const { db } = openDatabase(path.join(tempDir(), 'branchsan.db'));
  cleanups.push(() => db.close());
  const ins = db.prepare(
    "INSERT INTO events (ts, severity, type, message) VALUES (?, 'info', 'host.connected', 'Host connected.')",
  );
  for (let d = 30; d >= 1; d--) ins.run(T - d * DAY);
  db.prepare(
    `INSERT INTO alerts (rule, subject, severity, title, message, raised_at, cleared_at, cleared_why)
     VALUES ('capacity', '/srv', 'warning', 'Full', 'Full.', ?, ?, 'resolved')`,
  ).run(T - 2 * DAY, T - DAY);
  return db;
}

/** The engine's events service on `db`, with a wall clock and a monotonic one the test sets. */
function service(db: Db, clocks: { wall: number; monoSec: number }) {
  const s = quietEventsService(db, {
    intervalMs: 3_600_000,
    now: () => clocks.wall,
    clock: { monotonicSec: () => clocks.monoSec, lastEventAt: new EventStore(db).newestTs() },
  });
  cleanups.push(() => s.stop());
  return s;
}

const count = (db: Db, table: 'events' | 'alerts') =>
  db.prepare(`SELECT COUNT(*) FROM ${table}`).pluck().get() as number;

describe('event retention and a wall clock stepped ahead', () => {
  it('a clock a year ahead at start deletes nothing by age until it has been steady for an hour', async () => {
    const db = seeded();
    const clocks = { wall: T + 365 * DAY, monoSec: 100 }; // the RTC was a year ahead at boot
    const s = service(db, clocks);
    s.start();
    await s.prune();
    // Before: the start's pass deleted the whole log and the closed alert.
    expect(count(db, 'events')).toBe(30);
    expect(count(db, 'alerts')).toBe(1);
    // NTP sets it right ten minutes later: nothing is old enough to go
    clocks.wall = T + 10 * 60_000;
    clocks.monoSec += 600;
    await s.prune();
    expect(count(db, 'events')).toBe(30);
    expect(count(db, 'alerts')).toBe(1);
    // retention by age still works once the clock is steady: 20 days' retention
    s.setSettings({ events: { retentionDays: 20 } }, 'test');
    clocks.wall += CLOCK_SETTLE_MS;
    clocks.monoSec += CLOCK_SETTLE_MS / 1000;
    await s.prune();
    expect(count(db, 'events')).toBe(19); // those of the last 20 days: T − 19 days to T − 1 day
    expect(count(db, 'alerts')).toBe(1);
  });

  it('a clock stepped a year ahead while running deletes nothing by age', async () => {
    const db = seeded();
    const clocks = { wall: T, monoSec: 5000 };
    const s = service(db, clocks);
    s.start();
    await s.prune();
    expect(count(db, 'events')).toBe(30);
    clocks.wall += 365 * DAY; // a wrong NTP answer, or a manual change
    clocks.monoSec += 600;
    await s.prune();
    // Before: every event and the closed alert were deleted.
    expect(count(db, 'events')).toBe(30);
    expect(count(db, 'alerts')).toBe(1);
  });

  it('without the guard (no monotonic clock given) the wall clock is trusted, as before', async () => {
    const db = seeded();
    const s = quietEventsService(db, {
      now: () => T + 365 * DAY,
    });
    cleanups.push(() => s.stop());
    await s.prune();
    expect(count(db, 'events')).toBe(0);
    expect(count(db, 'alerts')).toBe(0);
  });
});
