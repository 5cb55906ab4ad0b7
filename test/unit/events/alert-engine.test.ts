/**
 * The rule engine with a fake clock and made-up inputs: raise once, no duplicate
 * while active, clear when the condition ends, acknowledge, escalate, incidents.
 */
import { beforeEach, describe, expect, it } from 'vitest';
import type { Alert } from '../../../contract/events.js';
import { AlertEngine } from '../../../engine/src/events/alert-engine.js';
import {
  DEFAULT_THRESHOLDS,
  backingFileRule,
  capacityRule,
  hostDisconnectedRule,
  ioErrorsRule,
  ioLatencyRule,
  ioThreadsRule,
  listenerDownRule,
  uncleanRestartRule,
  volumeOfflineRule,
  type AlertInputs,
  type Rule,
  type VolumeIo,
} from '../../../engine/src/events/rules.js';
import { vol } from './volume-inputs.js';
import { openDatabase, recordEvent, type Db } from '../../../engine/src/persistence/db.js';

const SUB = 'nqn.2026-01.com.example:vol1';
const HOST = 'nqn.2026-01.com.example:esx-01';

let db: Db;
let pushed: { kind: string; alert: Alert }[];

function engine(rules: Rule[], thresholds = DEFAULT_THRESHOLDS): AlertEngine {
  return new AlertEngine(db, rules, () => thresholds, {
    raised: (alert) => pushed.push({ kind: 'raised', alert }),
    cleared: (alert) => pushed.push({ kind: 'cleared', alert }),
    acknowledged: (alert) => pushed.push({ kind: 'acked', alert }),
  });
}

const events = (type: string) =>
  db.prepare('SELECT * FROM events WHERE type = ? ORDER BY id').all(type) as {
    severity: string;
    message: string;
    data: string;
  }[];

beforeEach(() => {
  db = openDatabase(':memory:').db;
  pushed = [];
});

describe('host disconnected', () => {
  const inputs = (connected: boolean): AlertInputs => ({
    subsystems: [{ nqn: SUB, hosts: [HOST], allowAnyHost: false }],
    connections: connected ? [{ subnqn: SUB, hostnqn: HOST }] : [],
  });

  it('raises after the grace time, once, and clears on reconnect', () => {
    const e = engine([hostDisconnectedRule()]);
    let t = 1_000_000;
    e.evaluate(inputs(true), t);
    e.evaluate(inputs(false), (t += 5_000)); // gone since here
    e.evaluate(inputs(false), (t += 59_000));
    expect(pushed).toEqual([]);
    const first = e.evaluate(inputs(false), (t += 1_000));
    expect(first.raised).toHaveLength(1);
    const a = first.raised[0]!;
    expect(a).toMatchObject({ rule: 'host.disconnected', severity: 'warning', clearedAt: null });
    expect(a.message).toBe(
      `Host esx-01 (${HOST}) has been disconnected from volume vol1 for 60 seconds. ` +
        "Check the host's network link and its NVMe/TCP adapter; if the host was retired, remove it from the volume's allowed hosts.",
    );
    // no duplicate while it holds
    for (let i = 0; i < 5; i++) expect(e.evaluate(inputs(false), (t += 5_000)).raised).toEqual([]);
    expect(e.store.active()).toHaveLength(1);
    const back = e.evaluate(inputs(true), (t += 5_000));
    expect(back.cleared.map((x) => x.id)).toEqual([a.id]);
    expect(back.cleared[0]!.clearedAt).toBe(t);
    expect(pushed.map((p) => p.kind)).toEqual(['raised', 'cleared']);
    expect(events('alert.raised')).toHaveLength(1);
    expect(events('alert.cleared')[0]!.message).toBe(`Resolved: ${a.title}.`);
  });

  it('never raises for a host that was never connected, and forgets one no longer allowed', () => {
    const e = engine([hostDisconnectedRule()]);
    e.evaluate(inputs(false), 0);
    expect(e.evaluate(inputs(false), 3_600_000).raised).toEqual([]);
    e.evaluate(inputs(true), 4_000_000);
    e.evaluate(inputs(false), 4_001_000);
    expect(e.evaluate(inputs(false), 4_100_000).raised).toHaveLength(1);
    const removed = { subsystems: [{ nqn: SUB, hosts: [], allowAnyHost: false }], connections: [] };
    expect(e.evaluate(removed, 4_105_000).cleared).toHaveLength(1);
  });

  it('keeps an alert raised before a restart while the host stays away', () => {
    engine([hostDisconnectedRule()]).evaluate(inputs(true), 0);
    const before = engine([hostDisconnectedRule()]);
    before.evaluate(inputs(true), 0);
    before.evaluate(inputs(false), 1_000);
    before.evaluate(inputs(false), 70_000);
    expect(before.store.active()).toHaveLength(1);
    // a new engine process: fresh rule memory, same database
    const after = engine([hostDisconnectedRule()]);
    const r = after.evaluate(inputs(false), 200_000);
    expect(r).toEqual({ raised: [], cleared: [] });
    expect(after.evaluate(inputs(true), 205_000).cleared).toHaveLength(1);
  });
});

describe('acknowledgement', () => {
  it('records who acknowledged; the alert stays active until its condition ends', () => {
    const e = engine([capacityRule()]);
    const fs = (usedPct: number): AlertInputs => ({
      filesystems: [
        { subject: '/data', label: 'the data directory /data', usedPct, availBytes: 5e9 },
      ],
    });
    const [a] = e.evaluate(fs(85), 10).raised;
    const acked = e.acknowledge(a!.id, 'console:alice', 20)!;
    expect(acked).toMatchObject({ ackedAt: 20, ackedBy: 'console:alice', clearedAt: null });
    expect(e.acknowledge(a!.id, 'console:bob', 30)!.ackedBy).toBe('console:alice');
    expect(events('alert.acknowledged')).toHaveLength(1);
    expect(e.evaluate(fs(86), 40).raised).toEqual([]);
    expect(e.evaluate(fs(50), 50).cleared).toHaveLength(1);
    expect(e.acknowledge(999, 'x', 60)).toBeUndefined();
  });
});

describe('capacity', () => {
  const fs = (usedPct: number): AlertInputs => ({
    filesystems: [
      { subject: '/data', label: 'the data directory /data', usedPct, availBytes: 12.3e9 },
    ],
  });

  it('warns at 80 %, escalates at 90 % (clear + raise), with hysteresis on the way down', () => {
    const e = engine([capacityRule()]);
    expect(e.evaluate(fs(79.9), 1).raised).toEqual([]);
    const w = e.evaluate(fs(80), 2).raised[0]!;
    expect(w.severity).toBe('warning');
    expect(w.message).toMatch(/is 80 % full \(12\.3 GB free\)\. Free space on it or grow it/);
    const up = e.evaluate(fs(91), 3);
    expect(up.cleared.map((a) => a.id)).toEqual([w.id]);
    expect(up.raised[0]!.severity).toBe('critical');
    expect(e.evaluate(fs(89), 4)).toEqual({ raised: [], cleared: [] }); // within 2 points
    expect(e.evaluate(fs(87.5), 5).raised[0]!.severity).toBe('warning');
    expect(e.evaluate(fs(78.5), 6)).toEqual({ raised: [], cleared: [] });
    expect(e.evaluate(fs(77), 7).cleared).toHaveLength(1);
    expect(e.store.active()).toEqual([]);
  });

  it('keeps an alert when the filesystem could not be read this round', () => {
    const e = engine([capacityRule()]);
    e.evaluate(fs(95), 1);
    expect(e.evaluate({ filesystems: [] }, 2)).toEqual({ raised: [], cleared: [] });
    const unread = { filesystems: [], filesystemsWatched: ['/data'] };
    expect(e.evaluate(unread, 3)).toEqual({ raised: [], cleared: [] });
  });

  // Before, an alert on a removed volume's filesystem was kept as "could not be read"
  // for ever: it never cleared, and acknowledging does not close a capacity alert.
  it('resolves the alert of a filesystem no longer watched (its volume was removed)', () => {
    const e = engine([capacityRule()]);
    const raised = e.evaluate(fs(95), 1).raised[0]!;
    const gone = e.evaluate({ filesystems: [], filesystemsWatched: ['/other'] }, 2);
    expect(gone.cleared.map((a) => a.id)).toEqual([raised.id]);
    expect(e.store.active()).toEqual([]);
  });

  it('follows the configured thresholds', () => {
    const e = engine([capacityRule()], { ...DEFAULT_THRESHOLDS, capacityWarningPct: 60 });
    expect(e.evaluate(fs(65), 1).raised[0]!.severity).toBe('warning');
  });
});

/** Inputs holding one file volume, vol1, with these fields set. */

describe('I/O errors and latency', () => {
  it('raises when the error counter grows, clears after 5 quiet minutes, rebaselines on reset', () => {
    const e = engine([ioErrorsRule()]);
    e.evaluate(vol({ errors: 4 }), 0); // baseline: old errors do not alert
    expect(e.store.active()).toEqual([]);
    const [a] = e.evaluate(vol({ errors: 7 }), 5_000).raised;
    expect(a!.severity).toBe('error');
    expect(a!.message).toContain('Volume vol1 (namespace 1) failed 3 I/O commands');
    expect(a!.message).toContain('/srv/vol1.img');
    expect(e.evaluate(vol({ errors: 9 }), 60_000).raised).toEqual([]);
    expect(e.evaluate(vol({ errors: 9 }), 60_000 + 299_000).cleared).toEqual([]);
    expect(e.evaluate(vol({ errors: 9 }), 60_000 + 300_000).cleared).toHaveLength(1);
    expect(e.evaluate(vol({ errors: 0 }), 400_000).raised).toEqual([]); // counters restarted
  });

  it('raises on latency sustained for 30 s, from the mean or from a p99 when given', () => {
    const e = engine([ioLatencyRule()]);
    let t = 0;
    let ops = 0;
    let us = 0;
    const step = (meanMs: number, p99?: number) => {
      ops += 100;
      us += 100 * meanMs * 1000;
      t += 10_000;
      return e.evaluate(
        vol({ readOps: ops, readLatencyUs: us, ...(p99 ? { intervalP99Us: p99 } : {}) }),
        t,
      );
    };
    step(1);
    step(80);
    step(80);
    step(80);
    expect(e.store.active()).toEqual([]);
    const [a] = step(80).raised; // 30 s after the first slow interval
    expect(a!.message).toMatch(/80\.0 ms on average, above the 50 ms threshold/);
    step(1);
    step(1);
    expect(step(1).cleared).toEqual([]);
    expect(step(1).cleared).toHaveLength(1);
    // percentiles from histograms take precedence over the mean
    for (let i = 0; i < 4; i++) step(1, 120_000);
    expect(e.store.active()[0]!.message).toContain('120.0 ms (99th percentile)');
  });

  it('an engine restart neither resolves nor re-raises an I/O alert whose condition holds', () => {
    // I/O errors: raised, acknowledged; then the engine restarts (new rule state).
    const before = engine([ioErrorsRule()]);
    before.evaluate(vol({ errors: 0 }), 0);
    const [a] = before.evaluate(vol({ errors: 2 }), 5_000).raised;
    before.acknowledge(a!.id, 'admin', 6_000);
    const after = engine([ioErrorsRule()]);
    // Before: the first round after the restart cleared it ("Resolved" was sent).
    const first = after.evaluate(vol({ errors: 2 }), 10_000);
    expect(first.cleared).toEqual([]);
    expect(first.raised).toEqual([]);
    expect(after.store.active().map((x) => [x.id, x.ackedBy])).toEqual([[a!.id, 'admin']]);
    // Quiet for 5 minutes after the restart: it clears as usual.
    expect(after.evaluate(vol({ errors: 2 }), 10_000 + 299_000).cleared).toEqual([]);
    expect(after.evaluate(vol({ errors: 2 }), 10_000 + 300_000).cleared).toHaveLength(1);

    // Latency: raised, then the engine restarts while it is still slow.
    pushed = [];
    const slow = engine([ioLatencyRule()]);
    let t = 1_000_000;
    let ops = 0;
    let us = 0;
    const step = (e: AlertEngine, meanMs: number) => {
      ops += 100;
      us += 100 * meanMs * 1000;
      t += 10_000;
      return e.evaluate(vol({ readOps: ops, readLatencyUs: us }), t);
    };
    step(slow, 1);
    for (let i = 0; i < 4; i++) step(slow, 80);
    expect(slow.store.active().filter((x) => x.rule === 'io.latency')).toHaveLength(1);
    const restarted = engine([ioLatencyRule()]);
    for (let i = 0; i < 3; i++) expect(step(restarted, 80).cleared).toEqual([]);
    expect(pushed.map((p) => p.kind)).toEqual(['raised']);
    // Fast again for the sustain time: cleared once.
    step(restarted, 1);
    step(restarted, 1);
    step(restarted, 1);
    expect(step(restarted, 1).cleared).toHaveLength(1);
  });
});

describe('slow I/O from intervals with few commands', () => {
  /** One volume's counters, advanced by `ops` commands of `meanMs` every 5 s. */
  function volume(e: AlertEngine) {
    let t = 0;
    let ops = 0;
    let us = 0;
    e.evaluate(vol({}), t);
    return {
      step(n: number, meanMs: number) {
        ops += n;
        us += n * meanMs * 1000;
        t += 5_000;
        return { t, ...e.evaluate(vol({ readOps: ops, readLatencyUs: us }), t) };
      },
      /** Steps until `untilMs`; says when something was raised or cleared. */
      run(untilMs: number, n: number, meanMs: number) {
        const changes: string[] = [];
        while (t < untilMs) {
          const r = this.step(n, meanMs);
          changes.push(...r.raised.map(() => `raised at ${r.t / 1000} s`));
          changes.push(...r.cleared.map(() => `cleared at ${r.t / 1000} s`));
        }
        return changes;
      },
    };
  }

  // Before the fix such intervals counted as fast: this disk never alerted.
  it('a failing disk completing few commands, each taking seconds, raises after the sustain time', () => {
    const e = engine([ioLatencyRule()]);
    expect(volume(e).run(120_000, 19, 2_000)).toEqual(['raised at 35 s']);
    expect(e.store.active()[0]!.message).toBe(
      'Volume vol1 (namespace 1) answers hosts very slowly: it completed only 19 commands in the last 5 seconds, taking 2000.0 ms on average, far above the 50 ms threshold. ' +
        'Check the disk under it (/srv/vol1.img) for wear or a failing device, and whether another workload saturates it.',
    );
  });

  // Before the fix the alert cleared 30 s after the disk got worse.
  it('an active alert stays while the disk degrades to few commands, then to none', () => {
    const e = engine([ioLatencyRule()]);
    const v = volume(e);
    expect(v.run(60_000, 100, 80)).toEqual(['raised at 35 s']);
    expect(v.run(180_000, 10, 3_000)).toEqual([]);
    expect(v.run(600_000, 0, 0)).toEqual([]); // idle, or every command hangs
    expect(v.run(660_000, 3, 1)).toEqual([]); // a few fast ones tell nothing either
    expect(v.run(700_000, 100, 1)).toEqual(['cleared at 695 s']); // 30 s fast
  });

  it('few commands not far over the threshold neither start nor end the sustain time', () => {
    const e = engine([ioLatencyRule()]);
    const v = volume(e);
    // alone, they never raise
    expect(v.run(300_000, 5, 200)).toEqual([]);
    // between slow intervals they do not restart the count (before the fix they did)
    v.step(100, 80); // slow from here
    v.step(5, 200);
    v.step(5, 1);
    v.step(0, 0);
    v.step(5, 200);
    v.step(5, 1);
    expect(v.step(100, 80).raised).toHaveLength(1); // 30 s after the first slow interval
  });

  it('one very slow command before an idle stretch and one after it are not sustained slow I/O', () => {
    const e = engine([ioLatencyRule()]);
    const v = volume(e);
    for (let i = 0; i < 12; i++) {
      v.step(1, 8_000); // a disk waking from spin-down
      expect(v.run(v.step(0, 0).t + 60_000, 0, 0)).toEqual([]);
    }
    expect(e.store.active()).toEqual([]);
  });
});

describe('backing file', () => {
  const backing = (state: VolumeIo['backing']) =>
    vol({ backing: state, openFile: '/proc/4242/fd/23' });

  it('raises critical when the served file was deleted, with the way to copy it back', () => {
    const e = engine([backingFileRule()]);
    expect(e.evaluate(backing('ok'), 0).raised).toEqual([]);
    const [a] = e.evaluate(backing('deleted'), 5_000).raised;
    expect(a!.severity).toBe('critical');
    expect(a!.title).toBe('The backing file of volume vol1 (namespace 1) was deleted');
    expect(a!.message).toContain('do not stop or restart it yet');
    expect(a!.message).toContain("cp --sparse=always /proc/4242/fd/23 '/srv/vol1.img'");
    expect(e.evaluate(backing('deleted'), 10_000).raised).toEqual([]); // once while active
  });

  it('raises when the path names another file; clears once it names the served one again', () => {
    const e = engine([backingFileRule()]);
    const [a] = e.evaluate(backing('moved'), 0).raised;
    expect(a!.title).toBe('The backing file of volume vol1 (namespace 1) was moved or replaced');
    expect(a!.message).toContain('Move the file back to /srv/vol1.img');
    expect(e.evaluate(backing(undefined), 5_000).cleared).toEqual([]); // not checked: no change
    expect(e.evaluate(backing('ok'), 10_000).cleared).toHaveLength(1);
  });
});

describe('offline volume', () => {
  const offline = (n: number): AlertInputs => ({
    offline: Array.from({ length: n }, () => ({
      subject: `${SUB}/2`,
      label: 'volume vol1 (namespace 2)',
      path: '/mnt/data/vol2.img',
    })),
  });

  it('raises critical while a configured namespace is not live; clears when it is', () => {
    const e = engine([volumeOfflineRule()]);
    const [a] = e.evaluate(offline(1), 0).raised;
    expect(a!.severity).toBe('critical');
    expect(a!.title).toBe('Volume vol1 (namespace 2) is offline');
    expect(a!.message).toContain('could not be opened (/mnt/data/vol2.img)');
    expect(a!.message).toContain('tries again every 10 seconds');
    expect(e.evaluate(offline(1), 5_000).raised).toEqual([]);
    expect(e.evaluate({}, 10_000).cleared).toEqual([]); // not collected: the alert stands
    expect(e.evaluate(offline(0), 15_000).cleared).toHaveLength(1);
  });
});

describe('listeners down', () => {
  const down = (...kinds: ('nvme-tcp' | 'console')[]): AlertInputs => ({
    listenersDown: kinds.map((kind) => ({
      subject: kind === 'console' ? 'console' : 'nvme-tcp port 1',
      kind,
      address: kind === 'console' ? '127.0.0.1:8450' : '0.0.0.0:4420',
      problem: 'Cannot listen on it: EADDRINUSE. Another program uses that port.',
      since: 0,
      retryEverySec: kind === 'console' ? 5 : 10,
    })),
  });

  it('an NVMe/TCP port is an error, the console a warning; each clears when it listens', () => {
    const e = engine([listenerDownRule()]);
    const raised = e.evaluate(down('nvme-tcp', 'console'), 5_000).raised;
    const port = raised.find((a) => a.subject === 'nvme-tcp port 1')!;
    expect(port.severity).toBe('error');
    expect(port.title).toBe('NVMe/TCP port 0.0.0.0:4420 is not listening');
    expect(port.message).toBe(
      'Hosts cannot connect through NVMe/TCP port 0.0.0.0:4420: it has not been listening since 1970-01-01T00:00:00.000Z. ' +
        'Cannot listen on it: EADDRINUSE. Another program uses that port. The engine tries again every 10 seconds.',
    );
    const web = raised.find((a) => a.subject === 'console')!;
    expect(web.severity).toBe('warning');
    expect(web.title).toBe('Web console is not listening on 127.0.0.1:8450');
    expect(web.message).toContain('Storage keeps serving');
    expect(e.evaluate({}, 10_000).cleared).toEqual([]); // not collected: the alerts stand
    const cleared = e.evaluate(down('console'), 15_000).cleared;
    expect(cleared.map((a) => a.subject)).toEqual(['nvme-tcp port 1']);
    expect(e.evaluate(down(), 20_000).cleared.map((a) => a.subject)).toEqual(['console']);
  });
});

describe('storage threads', () => {
  const failure = (ts: number, reason = 'I/O thread exited (code 1)') => ({
    subject: `${SUB}/1`,
    ts,
    reason,
  });
  const threads = (failures: ReturnType<typeof failure>[], down?: boolean): AlertInputs => ({
    ...vol(down === undefined ? {} : { ioThreadsDown: down }),
    ioThreadFailures: failures,
  });

  it('is critical while no threads serve the volume, an error once new ones do, and clears with the failures', () => {
    const e = engine([ioThreadsRule()]);
    expect(e.evaluate(threads([]), 0).raised).toEqual([]);
    const at = Date.UTC(2026, 10, 27, 3, 0, 0);
    const [down] = e.evaluate(threads([failure(at)], true), 1_000).raised;
    expect(down!.severity).toBe('critical');
    expect(down!.title).toBe('Volume vol1 (namespace 1) is down: its storage threads failed');
    expect(down!.message).toContain(
      'failed once in the last hour (last at 2026-11-27T03:00:00.000Z: I/O thread exited (code 1))',
    );
    expect(down!.message).toContain('its I/O fails and hosts keep retrying');
    expect(down!.message).toContain('branchsan diagnostics');
    expect(e.evaluate(threads([failure(at)], true), 2_000).raised).toEqual([]); // once while it holds
    const back = e.evaluate(threads([failure(at)], false), 3_000);
    expect(back.cleared.map((a) => a.severity)).toEqual(['critical']);
    expect(back.raised.map((a) => a.severity)).toEqual(['error']);
    expect(back.raised[0]!.title).toBe('Storage threads of volume vol1 (namespace 1) failed');
    expect(back.raised[0]!.message).toContain('new threads serve the volume again');
    // a second failure in the hour: down again, and counted
    const again = e.evaluate(threads([failure(at), failure(at + 60_000, 'gone')], true), 4_000);
    expect(again.raised[0]!.message).toContain('failed 2 times in the last hour');
    expect(again.raised[0]!.message).toContain('03:01:00.000Z: gone');
    expect(
      e.evaluate(threads([failure(at), failure(at + 60_000)], false), 5_000).raised,
    ).toHaveLength(1);
    expect(e.evaluate(threads([], undefined), 6_000).cleared).toHaveLength(1); // out of the window
    expect(e.evaluate(threads([]), 7_000).raised).toEqual([]);
  });

  it('threads down with no failure recorded still raise; unknown inputs change nothing', () => {
    const e = engine([ioThreadsRule()]);
    const [a] = e.evaluate(threads([], true), 0).raised;
    expect(a!.severity).toBe('critical');
    expect(a!.message).toContain(
      'of volume vol1 (namespace 1) failed. No new threads serve it yet',
    );
    expect(e.evaluate({}, 1_000).cleared).toEqual([]); // not collected: the alert stands
    expect(e.evaluate(vol({}), 2_000).cleared).toEqual([]); // failures unknown: stands
    // failures of a volume that no longer exists raise nothing
    const other = { ...vol({}), ioThreadFailures: [{ ...failure(0), subject: `${SUB}/9` }] };
    expect(e.evaluate(other, 3_000).cleared).toHaveLength(1);
    expect(e.evaluate(other, 4_000).raised).toEqual([]);
  });
});

describe('incidents and tolerance', () => {
  it('raises an unclean restart once; acknowledging closes it for good', () => {
    const id = recordEvent(db, {
      type: 'engine.unclean-restart',
      severity: 'warning',
      message: 'x',
    });
    const e = engine([uncleanRestartRule()]);
    const inputs = { uncleanRestarts: [{ eventId: id, ts: 1_000 }] };
    const [a] = e.evaluate(inputs, 2_000).raised;
    expect(a!.title).toBe('Engine restarted after an unexpected stop');
    expect(e.evaluate(inputs, 7_000).raised).toEqual([]);
    const done = e.acknowledge(a!.id, 'cli', 8_000)!;
    expect(done.clearedAt).toBe(8_000);
    expect(pushed.map((p) => p.kind)).toEqual(['raised', 'acked', 'cleared']);
    expect(e.evaluate(inputs, 9_000)).toEqual({ raised: [], cleared: [] });
  });

  it('a rule that throws is skipped; the others still run', () => {
    const broken: Rule = {
      id: 'broken',
      kind: 'condition',
      evaluate: () => {
        throw new Error('boom');
      },
    };
    const e = engine([broken, capacityRule()]);
    const r = e.evaluate(
      { filesystems: [{ subject: '/d', label: 'd', usedPct: 99, availBytes: 1 }] },
      1,
    );
    expect(r.raised).toHaveLength(1);
  });

  it('the database refuses a second active alert for the same rule and subject', () => {
    const e = engine([capacityRule()]);
    const n = {
      rule: 'capacity',
      subject: '/d',
      severity: 'warning' as const,
      title: 't',
      message: 'm',
    };
    e.store.raise(n, 1);
    expect(() => e.store.raise(n, 2)).toThrow(/UNIQUE/);
  });
});

describe('the list of closed alerts', () => {
  it('has the last closed first, whatever order they were raised in', () => {
    let holding = ['a', 'b'];
    const e = engine([
      {
        id: 'test.subjects',
        kind: 'condition',
        evaluate: () =>
          holding.map((subject) => ({
            subject,
            severity: 'warning' as const,
            title: `Subject ${subject}`,
            message: 'It holds. Nothing to do.',
          })),
      },
    ]);
    e.evaluate({}, 1_000); // a is raised before b (a smaller id)
    holding = ['a'];
    e.evaluate({}, 2_000); // b closes first
    holding = [];
    e.evaluate({}, 3_000);
    expect(e.store.list(false, 10).map((a) => [a.subject, a.clearedAt])).toEqual([
      ['a', 3_000],
      ['b', 2_000],
    ]);
    expect(e.store.list(undefined, 10).map((a) => a.subject)).toEqual(['b', 'a']);
  });
});

describe('why an alert was cleared', () => {
  it('is stored with it: resolved, superseded by another severity, or acknowledged', () => {
    let severity: 'warning' | 'critical' | null = 'warning';
    const e = engine([
      {
        id: 'test.level',
        kind: 'condition',
        closesOnAck: () => true,
        evaluate: () =>
          severity
            ? [{ subject: 'x', severity, title: 'Level', message: 'It holds. Nothing to do.' }]
            : [],
      },
    ]);
    e.evaluate({}, 1_000);
    severity = 'critical';
    e.evaluate({}, 2_000); // the warning is superseded by the critical one
    severity = null;
    e.evaluate({}, 3_000); // the critical one resolves
    severity = 'warning';
    const [again] = e.evaluate({}, 4_000).raised;
    e.acknowledge(again!.id, 'admin@local', 5_000); // and this one closes on acknowledgement
    expect(e.store.list(false, 10).map((a) => [a.severity, a.clearedAt, a.clearedWhy])).toEqual([
      ['warning', 5_000, 'acknowledged'],
      ['critical', 3_000, 'resolved'],
      ['warning', 2_000, 'superseded'],
    ]);
    expect(pushed.filter((p) => p.kind === 'cleared').map((p) => p.alert.clearedWhy)).toEqual([
      'superseded',
      'resolved',
      'acknowledged',
    ]);
  });
});
