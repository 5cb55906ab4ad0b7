/**
 * I/O alerts when their counters cannot be read or start again from 0, and
 * host.disconnected on volumes that allow any host (also across an engine restart: a
 * new process, fresh rule memory, the same database), through the real AlertEngine and
 * a real SQLite database with a fake clock.
 */
import path from 'node:path';
import { beforeEach, describe, expect, it } from 'vitest';
import type { Alert } from '../../../contract/events.js';
import { AlertEngine } from '../../../engine/src/events/alert-engine.js';
import {
  DEFAULT_THRESHOLDS,
  hostDisconnectedRule,
  ioErrorsRule,
  ioLatencyRule,
  MAX_WATCHED_ANY,
  type AlertInputs,
  type Rule,
} from '../../../engine/src/events/rules.js';
import { vol, VOLUME_SUBNQN } from './volume-inputs.js';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { WatchedHostStore } from '../../../engine/src/events/watched-host-store.js';
import { tempDir } from '../../helpers/engine.js';
import { fillDatabase, freeDatabase } from '../../helpers/sqlite-full.js';

const SUB = VOLUME_SUBNQN;
const ESX = 'nqn.2026-01.com.example:esx-01';

let db: Db;
let pushed: { kind: string; alert: Alert }[];

/** One engine process: its own rule memory over the shared database. */
function engine(rules: Rule[]): AlertEngine {
  return new AlertEngine(db, rules, () => DEFAULT_THRESHOLDS, {
    raised: (alert) => pushed.push({ kind: 'raised', alert }),
    cleared: (alert) => pushed.push({ kind: 'cleared', alert }),
    acknowledged: (alert) => pushed.push({ kind: 'acked', alert }),
  });
}

const kinds = () => pushed.map((p) => p.kind);
const alertEvents = () =>
  (
    db.prepare("SELECT type FROM events WHERE type LIKE 'alert.%' ORDER BY id").all() as {
      type: string;
    }[]
  ).map((e) => e.type);

beforeEach(() => {
  db = openDatabase(path.join(tempDir(), 'branchsan.db')).db;
  pushed = [];
});

describe('I/O alerts when their counters are unknown or start again', () => {
  it('counters that start again from 0 (a namespace re-added) keep both active I/O alerts', () => {
    const e = engine([ioErrorsRule(), ioLatencyRule()]);
    let t = 0;
    let ops = 0;
    let errors = 0;
    const step = (meanMs: number, newErrors = 0) => {
      ops += 1000;
      errors += newErrors;
      t += 5_000;
      return e.evaluate(vol({ errors, readOps: ops, readLatencyUs: ops * meanMs * 1000 }), t);
    };
    step(200);
    for (let i = 0; i < 8; i++) step(200, 1);
    expect(e.store.active().map((a) => a.rule)).toEqual(['io.errors', 'io.latency']);
    // Before the fix this pass resolved both ("Resolved" mailed) though the errors were
    // seconds old and the volume still slow; the next passes raised them again.
    ops = 0;
    errors = 0;
    for (let i = 0; i < 5; i++) expect(step(200)).toEqual({ raised: [], cleared: [] });
    expect(kinds()).toEqual(['raised', 'raised']);
    // they end by the usual rules: 5 minutes without errors, 30 s fast
    for (let i = 0; i < 6; i++) expect(step(1).cleared).toEqual([]);
    expect(step(1).cleared.map((a) => a.rule)).toEqual(['io.latency']);
    while (t < 45_000 + 300_000 - 5_000) expect(step(1).cleared).toEqual([]);
    expect(step(1).cleared.map((a) => a.rule)).toEqual(['io.errors']);
    expect(alertEvents()).toEqual([
      'alert.raised',
      'alert.raised',
      'alert.cleared',
      'alert.cleared',
    ]);
  });

  it('a round whose counters could not be read keeps both I/O alerts', () => {
    const e = engine([ioErrorsRule(), ioLatencyRule()]);
    let ops = 0;
    for (let t = 0; t <= 60_000; t += 5_000) {
      ops += 1000;
      e.evaluate(vol({ errors: t / 5_000, readOps: ops, readLatencyUs: ops * 200_000 }), t);
    }
    expect(e.store.active().map((a) => a.rule)).toEqual(['io.errors', 'io.latency']);
    expect(e.evaluate({}, 65_000)).toEqual({ raised: [], cleared: [] });
  });
});

describe('host.disconnected on a volume that allows any host', () => {
  const anyHost = { nqn: SUB, hosts: [] as string[], allowAnyHost: true };
  const at = (hosts: string[], sub = anyHost): AlertInputs => ({
    subsystems: [sub],
    connections: hosts.map((hostnqn) => ({ subnqn: SUB, hostnqn })),
  });

  it('a probe or a one-off connect leaves no alert behind, however many host NQNs', () => {
    const e = engine([hostDisconnectedRule()]);
    let t = 1_700_000_000_000;
    // `branchsan probe` uses a fresh host NQN each run; a scanner may too
    for (let i = 0; i < 500; i++) {
      e.evaluate(at([`nqn.2014-08.org.nvmexpress:uuid:${i}`]), t);
      t += 5_000;
    }
    for (let h = 0; h < 48; h++) {
      expect(e.evaluate(at([]), t)).toEqual({ raised: [], cleared: [] });
      t += 3_600_000;
    }
    expect(db.prepare('SELECT COUNT(*) AS n FROM alerts').get()).toEqual({ n: 0 });
  });

  it('a host that stayed connected is watched; acknowledging its alert closes it for good', () => {
    const e = engine([hostDisconnectedRule()]);
    let t = 0;
    for (; t <= 15 * 60_000; t += 5_000) e.evaluate(at([ESX]), t);
    for (let i = 0; i < 13; i++, t += 5_000) e.evaluate(at([]), t);
    const [a] = e.store.active();
    expect(a!.message).toBe(
      `Host esx-01 (${ESX}) has been disconnected from volume vol1 for 60 seconds. ` +
        "Check the host's network link and its NVMe/TCP adapter. Volume vol1 allows any host, so the engine cannot tell a retired host from a lost one: if this host was retired, acknowledge this alert to close it.",
    );
    // Before the fix acknowledging left it active for ever (the advice to take the host
    // off the allow list could not be followed: there is none).
    expect(e.acknowledge(a!.id, 'console:alice', t)!.clearedAt).toBe(t);
    expect(kinds()).toEqual(['raised', 'acked', 'cleared']);
    for (let h = 0; h < 24; h++, t += 3_600_000)
      expect(e.evaluate(at([]), t)).toEqual({ raised: [], cleared: [] });
    // back for a moment only: still forgotten
    e.evaluate(at([ESX]), t);
    for (let i = 0; i < 30; i++) expect(e.evaluate(at([]), (t += 5_000)).raised).toEqual([]);

    // A host on the allow list of such a volume is watched as before: from its first
    // connection, and acknowledging does not close its alert; reconnecting does.
    const listed = { nqn: SUB, hosts: [ESX], allowAnyHost: true };
    e.evaluate(at([ESX], listed), (t += 5_000));
    e.evaluate(at([], listed), (t += 5_000));
    const [b] = e.evaluate(at([], listed), (t += 60_000)).raised;
    expect(b!.message).toContain("remove it from the volume's allowed hosts");
    expect(e.acknowledge(b!.id, 'cli', (t += 1_000))!.clearedAt).toBeNull();
    expect(e.evaluate(at([], listed), (t += 5_000))).toEqual({ raised: [], cleared: [] });
    expect(e.evaluate(at([ESX], listed), (t += 5_000)).cleared.map((x) => x.id)).toEqual([b!.id]);
  });

  it('an alert for such a host acknowledged before the restart is closed by the next pass', () => {
    // raised and acknowledged by the previous process (or by a version that kept it open)
    const before = engine([hostDisconnectedRule(0)]);
    before.evaluate(at([ESX]), 0);
    before.evaluate(at([]), 1_000);
    const [a] = before.evaluate(at([]), 70_000).raised;
    db.prepare('UPDATE alerts SET acked_at = 80000, acked_by = ? WHERE id = ?').run('cli', a!.id);
    const after = engine([hostDisconnectedRule()]);
    expect(after.evaluate(at([]), 90_000).cleared.map((x) => x.id)).toEqual([a!.id]);
    expect(after.evaluate(at([]), 200_000)).toEqual({ raised: [], cleared: [] });
  });
});

describe('host.disconnected across an engine restart: the watch list is stored', () => {
  const ESX2 = 'nqn.2026-01.com.example:esx-02';
  const listed = (hosts = [ESX, ESX2]) => ({ nqn: SUB, hosts, allowAnyHost: false });
  const at = (hosts: string[], sub: AlertInputs['subsystems'] = [listed()]): AlertInputs => ({
    subsystems: sub,
    connections: hosts.map((hostnqn) => ({ subnqn: SUB, hostnqn })),
  });
  /** A new engine process: fresh rule memory, the watch list read back from the database. */
  const started = (establishedMs?: number) =>
    engine([hostDisconnectedRule(establishedMs, new WatchedHostStore(db))]);
  const rows = () =>
    db
      .prepare(
        'SELECT host_nqn AS host, admitted, last_seen AS lastSeen FROM watched_hosts WHERE subsystem_nqn = ? ORDER BY host_nqn',
      )
      .all(SUB);

  it('a host connected before a crash and never back raises after the grace, counted from the start', () => {
    const T0 = Date.UTC(2026, 2, 1, 22, 0, 0);
    const before = started();
    for (let t = T0; t <= T0 + 120_000; t += 5_000) before.evaluate(at([ESX, ESX2]), t);
    expect(rows()).toEqual([
      { host: ESX, admitted: 'listed', lastSeen: T0 + 120_000 },
      { host: ESX2, admitted: 'listed', lastSeen: T0 + 120_000 },
    ]);
    // Power cut; the engine starts a night later. esx-02 reconnects within the grace,
    // esx-01 never does. Before the fix the new process knew neither host: no alert, ever.
    const T = T0 + 10 * 3_600_000;
    const after = started();
    let t = T;
    for (; t < T + 60_000; t += 5_000)
      expect(after.evaluate(at(t < T + 30_000 ? [] : [ESX2]), t)).toEqual({
        raised: [],
        cleared: [],
      });
    const [a, ...more] = after.evaluate(at([ESX2]), t).raised;
    expect(more).toEqual([]);
    expect(a!.subject).toBe(`${ESX} on ${SUB}`);
    expect(a!.message).toBe(
      `Host esx-01 (${ESX}) has not reconnected to volume vol1 in the 60 seconds since the engine started; ` +
        'it was last connected at 2026-03-01T22:02:00.000Z, before the engine stopped. ' +
        "Check the host's network link and its NVMe/TCP adapter; if the host was retired, remove it from the volume's allowed hosts.",
    );
    expect(after.evaluate(at([ESX, ESX2]), (t += 5_000)).cleared.map((x) => x.id)).toEqual([a!.id]);
  });

  it('an alert raised before the restart stays, neither resolved nor raised again', () => {
    const before = started();
    before.evaluate(at([ESX]), 0);
    before.evaluate(at([]), 5_000);
    const [a] = before.evaluate(at([]), 65_000).raised;
    const after = started();
    for (let t = 1_000_000; t < 1_200_000; t += 5_000)
      expect(after.evaluate(at([]), t)).toEqual({ raised: [], cleared: [] });
    expect(after.evaluate(at([ESX]), 1_200_000).cleared.map((x) => x.id)).toEqual([a!.id]);
    expect(kinds()).toEqual(['raised', 'cleared']);
  });

  it('a host taken off the allow list, or whose volume was removed, is dropped from the list', () => {
    const before = started();
    before.evaluate(at([ESX, ESX2]), 0);
    expect(rows()).toHaveLength(2);
    // esx-02 taken off while connected: no longer watched, its row gone at once
    before.evaluate(at([ESX, ESX2], [listed([ESX])]), 5_000);
    expect(rows()).toMatchObject([{ host: ESX }]);
    // esx-01 taken off while the engine was down: gone with the first pass
    const after = started();
    after.evaluate(at([], [listed([])]), 1_000_000);
    expect(rows()).toEqual([]);
    for (let t = 1_005_000; t < 1_200_000; t += 5_000)
      expect(after.evaluate(at([], [listed([])]), t).raised).toEqual([]);
    // a volume removed takes its hosts with it
    after.evaluate(at([ESX]), 1_300_000);
    expect(rows()).toHaveLength(1);
    after.evaluate({ subsystems: [], connections: [] }, 1_305_000);
    expect(rows()).toEqual([]);
  });

  it('keeps last-seen times to the minute: a connected host costs one write a minute', () => {
    const e = started();
    for (let t = 0; t <= 55_000; t += 5_000) e.evaluate(at([ESX]), t);
    expect(rows()).toEqual([{ host: ESX, admitted: 'listed', lastSeen: 0 }]);
    e.evaluate(at([ESX]), 60_000);
    expect(rows()).toEqual([{ host: ESX, admitted: 'listed', lastSeen: 60_000 }]);
  });

  it('hosts only a volume allowing any admits: bounded, and an acknowledged one stays forgotten', () => {
    const any = [{ nqn: SUB, hosts: [] as string[], allowAnyHost: true }];
    const many = Array.from({ length: MAX_WATCHED_ANY + 50 }, (_, i) => `${ESX}-${i}`);
    const before = started(0);
    before.evaluate(at(many, any), 0);
    expect(rows()).toHaveLength(MAX_WATCHED_ANY);
    before.evaluate(at([], any), 5_000);
    const raised = before.evaluate(at([], any), 65_000).raised;
    expect(raised).toHaveLength(MAX_WATCHED_ANY);
    before.acknowledge(raised[0]!.id, 'cli', 70_000);
    expect(rows()).toHaveLength(MAX_WATCHED_ANY - 1);
    // a crash right after the acknowledgement: the acknowledged host is not watched again
    const after = started(0);
    for (let t = 1_000_000; t < 1_200_000; t += 5_000)
      expect(after.evaluate(at([], any), t)).toEqual({ raised: [], cleared: [] });
    expect(after.store.active()).toHaveLength(MAX_WATCHED_ANY - 1);
  });

  it('on a full data disk it keeps alerting and stores the list once there is room', () => {
    const e = started();
    e.evaluate(at([ESX]), 0);
    fillDatabase(db, ["INSERT INTO watched_hosts VALUES ('pad', hex(randomblob(16)), 'any', 0)"]);
    e.evaluate(at([ESX, ESX2]), 5_000); // esx-02's row is refused
    e.evaluate(at([]), 10_000);
    expect(e.evaluate(at([]), 70_000).raised.map((a) => a.subject)).toEqual([
      `${ESX} on ${SUB}`,
      `${ESX2} on ${SUB}`,
    ]);
    expect(rows()).toMatchObject([{ host: ESX }]);
    db.prepare("DELETE FROM watched_hosts WHERE subsystem_nqn = 'pad'").run();
    freeDatabase(db);
    e.evaluate(at([]), 75_000);
    expect(rows()).toMatchObject([{ host: ESX }, { host: ESX2, lastSeen: 5_000 }]);
  });
});
