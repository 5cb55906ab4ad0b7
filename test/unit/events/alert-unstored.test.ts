/**
 * Alerts while the database refuses writes (a real SQLITE_FULL: no page may be added
 * and the alerts and events tables are filled to the last byte). The alert about the
 * full data directory must still reach the listeners, syslog included, exactly once
 * over many rounds; it is stored when space comes back, without a second delivery.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Alert } from '../../../contract/events.js';
import { AlertEngine } from '../../../engine/src/events/alert-engine.js';
import { Notifier } from '../../../engine/src/events/notifier.js';
import { EventsService, type EventsServiceOptions } from '../../../engine/src/events/service.js';
import { SettingsStore } from '../../../engine/src/events/settings.js';
import {
  DEFAULT_THRESHOLDS,
  capacityRule,
  type AlertInputs,
  type Rule,
} from '../../../engine/src/events/rules.js';
import {
  onEventRecorded,
  openDatabase,
  type Db,
  type RecordedEvent,
} from '../../../engine/src/persistence/db.js';
import { secretFiles } from '../../../engine/src/service/secrets.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';
import { startSmtpServer } from '../../helpers/smtp-server.js';
import { fillDatabase, freeDatabase } from '../../helpers/sqlite-full.js';
import { fakeLogger } from '../../helpers/fake-logger.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const fsUse = (usedPct: number): AlertInputs => ({
  filesystems: [{ subject: '/data', label: 'the data directory /data', usedPct, availBytes: 0 }],
});

/** A second rule that holds whenever it is asked: it must run even when capacity cannot be stored. */
const always: Rule = {
  id: 'test.always',
  kind: 'condition',
  evaluate: () => [
    { subject: 'x', severity: 'warning', title: 'Always', message: 'Always holds. Nothing to do.' },
  ],
};

/** What a full disk does to the next raise: the events and alerts tables take no row. */
const fillUp = (db: Db) =>
  fillDatabase(db, [
    "INSERT INTO events (ts, severity, type, message) VALUES (0, 'info', '', '')",
    "INSERT INTO alerts (rule, subject, severity, title, message, raised_at, cleared_at) VALUES ('', '', 'info', '', '', 0, 0)",
  ]);
const freeUp = freeDatabase;

/** An events service with the capacity rule alone, its data directory `usedPct` full. */
function capacityService(
  db: Db,
  dir: string,
  usedPct: number,
  o: Partial<EventsServiceOptions> & Pick<EventsServiceOptions, 'publish'>,
): EventsService {
  const service = new EventsService({
    db,
    nodeId: 'node-1',
    version: '9.9.9',
    secrets: secretFiles(dir),
    collect: async () => fsUse(usedPct),
    log: createLogger({ sink: { write: () => undefined } }),
    rules: [capacityRule()],
    ...o,
  });
  cleanups.push(() => service.stop());
  return service;
}

const storedRaised = (db: Db) =>
  db.prepare("SELECT message, data FROM events WHERE type = 'alert.raised'").all() as {
    message: string;
    data: string;
  }[];

describe('alerts on a full database', () => {
  let db: Db;
  let pushed: { kind: string; alert: Alert }[];
  let recorded: RecordedEvent[];
  let e: AlertEngine;

  beforeEach(() => {
    db = openDatabase(':memory:').db;
    pushed = [];
    recorded = [];
    cleanups.push(onEventRecorded(db, (ev) => recorded.push(ev)));
    e = new AlertEngine(db, [capacityRule(), always], () => DEFAULT_THRESHOLDS, {
      raised: (alert) => pushed.push({ kind: 'raised', alert }),
      cleared: (alert) => pushed.push({ kind: 'cleared', alert }),
      acknowledged: (alert) => pushed.push({ kind: 'acked', alert }),
      stored: (alert) => pushed.push({ kind: 'stored', alert }),
    });
    fillUp(db);
  });

  it('delivers each raise once, unstored, and stores it without redelivery when space returns', () => {
    const message =
      'The filesystem holding the data directory /data is 100 % full (0 bytes free). ' +
      'Free space on it or grow it: when it is full, writes to volumes fail and the engine cannot record events.';
    let t = 1_000;
    const first = e.evaluate(fsUse(100), t);
    expect(first.raised.map((a) => [a.rule, a.id])).toEqual([
      ['capacity', 0],
      ['test.always', 0],
    ]);
    for (let i = 0; i < 5; i++) expect(e.evaluate(fsUse(100), (t += 5_000)).raised).toEqual([]);

    expect(pushed.map((p) => [p.kind, p.alert.rule])).toEqual([
      ['raised', 'capacity'],
      ['raised', 'test.always'],
    ]);
    expect(pushed[0]!.alert).toMatchObject({ id: 0, severity: 'critical', message });
    expect(recorded.map((r) => [r.type, r.id])).toEqual([
      ['alert.raised', 0],
      ['alert.raised', 0],
    ]);
    expect(recorded[0]).toMatchObject({ severity: 'critical', message });
    expect(recorded[0]!.data).toMatchObject({ unstored: true, rule: 'capacity', subject: '/data' });
    expect(e.store.active().filter((a) => a.rule !== '')).toEqual([]);

    freeUp(db);
    expect(e.evaluate(fsUse(100), (t += 5_000)).raised).toEqual([]);
    const active = e.store.active();
    expect(active.map((a) => [a.rule, a.severity, a.raisedAt])).toEqual([
      ['capacity', 'critical', 1_000],
      ['test.always', 'warning', 1_000],
    ]);
    // the event log catches up, but nobody is told a second time
    expect(storedRaised(db).map((r) => r.message)).toEqual([
      message,
      'Always holds. Nothing to do.',
    ]);
    for (let i = 0; i < 3; i++) e.evaluate(fsUse(100), (t += 5_000));
    // consoles are told the id their id-0 copy now has; no raise is pushed again
    expect(pushed.slice(2).map((p) => [p.kind, p.alert.rule, p.alert.id])).toEqual([
      ['stored', 'capacity', active[0]!.id],
      ['stored', 'test.always', active[1]!.id],
    ]);
    expect(recorded).toHaveLength(2);

    // from here it is an ordinary stored alert
    const { cleared } = e.evaluate(fsUse(50), (t += 5_000));
    expect(cleared.map((a) => a.id)).toEqual([active[0]!.id]);
  });

  it('a stored alert that ends while its event cannot be written is still told cleared', () => {
    const { db } = openDatabase(':memory:');
    const told: string[] = [];
    const rec: RecordedEvent[] = [];
    const off = onEventRecorded(db, (ev) => rec.push(ev));
    try {
      const capacity = new AlertEngine(db, [capacityRule()], () => DEFAULT_THRESHOLDS, {
        raised: (a) => told.push(`raised ${a.id}`),
        cleared: (a) => told.push(`cleared ${a.id}`),
        acknowledged: () => undefined,
      });
      capacity.evaluate(fsUse(85), 1_000);
      const [raised] = capacity.store.active();
      // room for closing the alert's row, none for a new event
      fillDatabase(db, [
        "INSERT INTO events (ts, severity, type, message) VALUES (0, 'info', '', '')",
      ]);
      const { cleared } = capacity.evaluate(fsUse(10), 2_000);
      // Before: the alert was closed in the database but nobody was told, and the next
      // round no longer saw it: a console showed it until it reloaded.
      expect(cleared.map((a) => a.id)).toEqual([raised!.id]);
      expect(told).toEqual([`raised ${raised!.id}`, `cleared ${raised!.id}`]);
      expect(capacity.store.active()).toEqual([]);
      expect(rec.at(-1)).toMatchObject({ type: 'alert.cleared', id: 0 }); // delivered unstored
    } finally {
      off();
      db.close();
    }
  });

  it('drops a raise whose condition ended before it could be stored, telling it resolved', () => {
    e.evaluate(fsUse(100), 1_000);
    e.evaluate(fsUse(100), 6_000);
    const { cleared } = e.evaluate(fsUse(50), 11_000);
    expect(cleared).toMatchObject([{ id: 0, rule: 'capacity', clearedAt: 11_000 }]);
    expect(recorded.map((r) => [r.type, r.id, r.message])).toEqual([
      ['alert.raised', 0, expect.stringContaining('100 % full')],
      ['alert.raised', 0, 'Always holds. Nothing to do.'],
      ['alert.cleared', 0, 'Resolved: Filesystem of the data directory /data 100 % full.'],
    ]);
    freeUp(db);
    e.evaluate(fsUse(50), 16_000);
    expect(e.store.active().map((a) => a.rule)).toEqual(['test.always']);
    expect(storedRaised(db).map((r) => JSON.parse(r.data).rule)).toEqual(['test.always']);
    expect(pushed.map((p) => `${p.kind} ${p.alert.rule}`)).toEqual([
      'raised capacity',
      'raised test.always',
      'cleared capacity',
      'stored test.always',
    ]);
  });
});

describe('the events service on a full database', () => {
  it('writes the capacity alert to syslog once over many rounds', async () => {
    const published: [string, Alert][] = [];
    const dir = tempDir();
    const { db } = openDatabase(path.join(dir, 'branchsan.db'));
    cleanups.push(() => db.close());
    const { command: fake, file: syslogOut } = fakeLogger(dir);
    const service = capacityService(db, dir, 100, {
      publish: (name, data) => {
        if (name.startsWith('alert.')) published.push([name, data as Alert]);
      },
      intervalMs: 3_600_000,
      syslogCommand: [fake],
    });
    service.start();
    await service.prune(); // the start's retention pass, which would delete the padding
    fillUp(db);

    for (let i = 0; i < 5; i++) await service.evaluate();
    const read = () => (fs.existsSync(syslogOut) ? fs.readFileSync(syslogOut, 'utf8') : '');
    for (let i = 0; i < 100 && !read().includes('100 % full'); i++)
      await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 200)); // a second delivery would be written by now
    const lines = read()
      .split('\n')
      .filter((l) => l.includes('[alert.raised]'));
    expect(lines).toEqual([
      expect.stringMatching(
        /^<\d+>\[alert\.raised\] The filesystem holding the data directory \/data is 100 % full/,
      ),
    ]);
    // listed all the same, so a console that reads the list now still shows it
    expect(service.listAlerts(true, 10).filter((a) => a.rule !== '')).toMatchObject([
      { id: 0, rule: 'capacity', severity: 'critical' },
    ]);
    expect(service.listAlerts(false, 10).filter((a) => a.rule !== '')).toEqual([]);
    freeUp(db);
    await service.evaluate();
    expect(published.map(([name, a]) => [name, a.id])).toEqual([
      ['alert.raised', 0],
      ['alert.stored', service.listAlerts(true, 10)[0]!.id],
    ]);
    expect(service.listAlerts(true, 10).filter((a) => a.rule !== '')).toMatchObject([
      { rule: 'capacity', severity: 'critical' },
    ]);
    await new Promise((r) => setTimeout(r, 200));
    expect(
      read()
        .split('\n')
        .filter((l) => l.includes('[alert.raised]')),
    ).toHaveLength(1);
  });
});

/** A service with one stored capacity alert, and the names of what it pushes. */
function alerted() {
  const dir = tempDir();
  const { db } = openDatabase(path.join(dir, 'branchsan.db'));
  cleanups.push(() => db.close());
  const pushed: string[] = [];
  const service = capacityService(db, dir, 85, { publish: (name) => void pushed.push(name) });
  service.alerts.evaluate(fsUse(85), 1_000);
  const [a] = service.listAlerts(true, 10);
  return { db, service, pushed, a };
}

describe('acknowledging on a full database', () => {
  it('refuses with what to do and changes nothing; once there is room it acknowledges', () => {
    const { db, service, pushed, a } = alerted();
    fillDatabase(db, [
      "INSERT INTO events (ts, severity, type, message) VALUES (0, 'info', '', '')",
      "INSERT INTO audit (ts, actor, action, details) VALUES (0, '', '', '')",
    ]);
    pushed.length = 0;
    // Before: the alert was acknowledged, the call failed all the same, and nobody was told.
    expect(() => service.acknowledge(a!.id, 'admin')).toThrow(
      'The alert was not acknowledged: the data directory is full, so the engine cannot record who acknowledged it.',
    );
    expect(service.listAlerts(true, 10)[0]!.ackedAt).toBeNull();
    expect(pushed).toEqual([]);
    freeDatabase(db);
    expect(service.acknowledge(a!.id, 'admin').ackedBy).toBe('admin');
    expect(pushed).toContain('alert.acknowledged');
  });
});

describe('an acknowledgement and its audit row', () => {
  it('are stored together or not at all', () => {
    const { db, service, pushed, a } = alerted();
    const ackAudits = () =>
      db.prepare("SELECT count(*) AS n FROM audit WHERE action = 'alerts.ack'").get() as {
        n: number;
      };
    // The audit row goes in, then the acknowledgement itself fails.
    db.exec(`CREATE TRIGGER refuse_ack BEFORE UPDATE OF acked_at ON alerts
             BEGIN SELECT RAISE(ABORT, 'acknowledgement refused'); END`);
    pushed.length = 0;
    expect(() => service.acknowledge(a!.id, 'admin')).toThrow('acknowledgement refused');
    // Before: an audit row said admin acknowledged an alert that stayed unacknowledged.
    expect(ackAudits().n).toBe(0);
    expect(service.listAlerts(true, 10)[0]!.ackedAt).toBeNull();
    expect(pushed).toEqual([]);
    db.exec('DROP TRIGGER refuse_ack');
    expect(service.acknowledge(a!.id, 'admin').ackedBy).toBe('admin');
    expect(ackAudits().n).toBe(1);
  });
});

describe('mail for an unstored alert', () => {
  it('says it is not in the event log instead of naming event #0', async () => {
    const dir = tempDir();
    const { db } = openDatabase(':memory:');
    cleanups.push(() => db.close());
    const server = await startSmtpServer({});
    cleanups.push(() => server.close());
    const settings = new SettingsStore(db, secretFiles(dir));
    settings.update({
      syslog: { enabled: false },
      smtp: {
        enabled: true,
        host: '127.0.0.1',
        port: server.port,
        security: 'none',
        from: 'san@branch.example',
        to: ['it@example.com'],
        minSeverity: 'warning',
      },
    });
    const n = new Notifier({
      settings,
      nodeId: 'node-1',
      version: '9.9.9',
      report: () => undefined,
    });
    cleanups.push(() => n.close());
    const recorded: RecordedEvent[] = [];
    cleanups.push(onEventRecorded(db, (ev) => recorded.push(ev)));
    fillUp(db);
    new AlertEngine(db, [capacityRule()], () => DEFAULT_THRESHOLDS, {
      raised: () => undefined,
      cleared: () => undefined,
      acknowledged: () => undefined,
    }).evaluate(fsUse(100), 1_000);
    expect(recorded).toHaveLength(1);
    expect(n.deliver(recorded[0]!)).toEqual(['smtp']);
    await server.waitFor(1);
    const mail = server.received[0]!.data;
    expect(mail).toMatch(
      /Subject: \[BranchSAN critical\] Filesystem of the data directory \/data 100 % full \(/,
    );
    expect(mail).toContain('is 100 % full (0 bytes free)');
    expect(mail).toContain(
      'Event: alert.raised (not in the event log: the data directory could not be written when it happened)',
    );
    expect(mail).not.toContain('#0');
  });
});
