/**
 * io.errors forgets a namespace that left the snapshot: its alert resolves (as every
 * volume rule's does when its subject vanishes) and a namespace created again under the
 * same NQN and NSID starts from a clean baseline, not from the old one's counter.
 * io.latency forgets it the same way. Through the real AlertEngine and an in-memory
 * SQLite database with a fake clock, or the rule alone.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import { AlertEngine } from '../../../engine/src/events/alert-engine.js';
import {
  DEFAULT_THRESHOLDS,
  ioErrorsRule,
  ioLatencyRule,
} from '../../../engine/src/events/rules.js';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { vol } from './volume-inputs.js';

let db: Db;
beforeEach(() => {
  db = openDatabase(':memory:').db;
});

const engine = () =>
  new AlertEngine(db, [ioErrorsRule()], () => DEFAULT_THRESHOLDS, {
    raised: () => undefined,
    cleared: () => undefined,
    acknowledged: () => undefined,
  });

/** Every namespace removed: the target answered, it just has none. */
const none = { volumes: [] };

describe('io.errors when a namespace goes away', () => {
  it('resolves its alert, and a namespace re-created under the same id starts clean', () => {
    const e = engine();
    e.evaluate(vol({ errors: 3 }), 0); // baseline
    const [a] = e.evaluate(vol({ errors: 5 }), 5_000).raised;
    expect(a!.message).toContain('failed 2 I/O commands');
    // removed: nothing left to watch, so the alert resolves rather than waiting 5 minutes
    expect(e.evaluate(none, 10_000).cleared.map((x) => x.id)).toEqual([a!.id]);
    // Created again: its own counter has already reached 6. Before the fix the rule
    // still held the old namespace's 5 and raised "failed 3 I/O commands" (2 of them
    // the old namespace's) for errors the new one had before it was first seen.
    expect(e.evaluate(vol({ errors: 6 }), 15_000)).toEqual({ raised: [], cleared: [] });
    expect(e.store.active()).toEqual([]);
    // from that baseline it counts its own errors only
    const [b] = e.evaluate(vol({ errors: 7 }), 20_000).raised;
    expect(b!.message).toContain('failed 1 I/O command sent by hosts');
  });

  it('forgets a quiet namespace too: its old counter is no baseline for a new one', () => {
    const e = engine();
    e.evaluate(vol({ errors: 4 }), 0);
    e.evaluate(vol({ errors: 4 }), 5_000);
    e.evaluate(none, 10_000);
    // Before the fix: 4 → 9 counted as 5 new errors, an alert on first sight.
    expect(e.evaluate(vol({ errors: 9 }), 15_000).raised).toEqual([]);
    expect(e.evaluate(vol({ errors: 9 }), 20_000).raised).toEqual([]);
  });

  it('forgets nothing when the counters could not be read this round', () => {
    // the rule alone: the stored alert keeps its first message, the rule's count goes on
    const rule = ioErrorsRule();
    const at = (now: number) => ({ now, thresholds: DEFAULT_THRESHOLDS, active: new Map() });
    rule.evaluate(vol({ errors: 3 }), at(0));
    expect(rule.evaluate(vol({ errors: 5 }), at(5_000))[0]!.message).toContain('failed 2');
    expect(rule.evaluate({}, at(10_000))).toEqual([]); // no volumes known, no alert active
    // unknown is not gone: the count goes on from 5
    expect(rule.evaluate(vol({ errors: 6 }), at(15_000))[0]!.message).toContain('failed 3');
  });
});

describe('io.latency when a namespace goes away', () => {
  it('measures a namespace re-created under the same id from its own first counters', () => {
    const rule = ioLatencyRule(0); // no sustain time: an interval over the threshold alerts
    const at = (now: number) => ({ now, thresholds: DEFAULT_THRESHOLDS, active: new Map() });
    rule.evaluate(vol({ readOps: 1000, readLatencyUs: 1000 * 100 }), at(0)); // 0.1 ms each
    expect(rule.evaluate({ volumes: [] }, at(5_000))).toEqual([]);
    // Created again, first seen with its own counters. Before the fix the rule measured
    // them against the old namespace's: 100 "new" reads taking 500 ms each, an alert.
    const again = vol({ readOps: 1100, readLatencyUs: 1000 * 100 + 100 * 500_000 });
    expect(rule.evaluate(again, at(10_000))).toEqual([]);
    // from there it measures its own reads: 100 more at 80 ms each is over 50 ms
    const slow = vol({ readOps: 1200, readLatencyUs: 1000 * 100 + 100 * 500_000 + 100 * 80_000 });
    expect(rule.evaluate(slow, at(15_000))[0]!.message).toMatch(/80(\.0)? ms/);
  });
});
