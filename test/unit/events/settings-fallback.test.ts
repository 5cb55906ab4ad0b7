/**
 * A stored settings document holding values this version refuses (a downgrade after a
 * newer engine added a choice, or a bound tightened since): each refused field is
 * replaced alone, the others are kept, the replacement is reported at start, and a
 * later settings.set writes back what it did not change exactly as it was stored.
 * Real SQLite, real secret files, the real EventsService.
 */
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EventsService } from '../../../engine/src/events/service.js';
import { SettingsStore, type SecretFiles } from '../../../engine/src/events/settings.js';
import {
  getSetting,
  openDatabase,
  setSetting,
  type Db,
} from '../../../engine/src/persistence/db.js';
import { secretFiles } from '../../../engine/src/service/secrets.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';
import { fakeLogger } from '../../helpers/fake-logger.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup() {
  const dir = tempDir();
  const { db } = openDatabase(path.join(dir, 'branchsan.db'));
  cleanups.push(() => db.close());
  const secrets: SecretFiles = secretFiles(dir);
  const first = new SettingsStore(db, secrets);
  first.update({
    events: { retentionDays: 365 },
    alerts: { capacityWarningPct: 95, capacityCriticalPct: 98 },
    smtp: {
      enabled: true,
      host: 'mail.branch.example',
      port: 25,
      security: 'starttls',
      from: 'san@branch.example',
      to: ['ops@branch.example', 'it@branch.example'],
    },
    webhook: { enabled: true, url: 'https://hooks.example/T0/SECRETPATH' },
  });
  return { dir, db, secrets };
}

/** Changes the stored document as another engine version would have written it. */
function tamper(db: Db, f: (doc: Record<string, Record<string, unknown>>) => void): void {
  const doc = JSON.parse(getSetting(db, 'service.settings')!);
  f(doc);
  setSetting(db, 'service.settings', JSON.stringify(doc));
}

const storedDoc = (db: Db) => JSON.parse(getSetting(db, 'service.settings')!);

describe('stored settings this version refuses', () => {
  it('a choice from a newer version falls back alone; an unrelated change keeps the stored document', () => {
    const { db, secrets } = setup();
    tamper(db, (d) => (d.performance!.cpuLatency = 'powersave'));
    // the engine restarts as the older version
    const s = new SettingsStore(db, secrets);
    const v = s.stored();
    // Before the fix the whole document fell back to the defaults: mail and webhook
    // off, retention 90 days (the next prune deleted older events).
    expect(v.performance.cpuLatency).toBe('when-busy');
    expect(v.events.retentionDays).toBe(365);
    expect(v.alerts).toMatchObject({ capacityWarningPct: 95, capacityCriticalPct: 98 });
    expect(v.smtp).toMatchObject({ enabled: true, host: 'mail.branch.example', port: 25 });
    expect(v.webhook).toEqual({
      enabled: true,
      url: 'https://hooks.example/T0/SECRETPATH',
      minSeverity: 'warning',
    });
    expect(s.resets()).toEqual([
      {
        field: 'performance.cpuLatency',
        message:
          'the stored value "powersave" is not valid in this version, so the default "when-busy" is used',
      },
    ]);

    s.update({ syslog: { minSeverity: 'warning' } });
    const doc = storedDoc(db);
    expect(doc.syslog.minSeverity).toBe('warning');
    expect(doc.smtp).toMatchObject({ enabled: true, host: 'mail.branch.example' });
    expect(doc.events.retentionDays).toBe(365);
    // kept as stored, for the newer version to find again
    expect(doc.performance.cpuLatency).toBe('powersave');
    expect(new SettingsStore(db, secrets).stored().smtp.enabled).toBe(true);

    // changing that very field replaces it, and then nothing is refused any more
    s.update({ performance: { cpuLatency: 'always' } });
    expect(storedDoc(db).performance.cpuLatency).toBe('always');
    expect(new SettingsStore(db, secrets).resets()).toEqual([]);
  });

  it('a tightened bound takes the nearest allowed value, a list keeps its valid items, a channel missing a refused field is off until it is fixed', () => {
    const { db, secrets } = setup();
    tamper(db, (d) => {
      d.events!.retentionDays = 5000; // allowed by an older version
      d.alerts!.capacityCriticalPct = 'high';
      d.smtp!.to = ['ops@branch.example', 'not an address'];
      d.webhook!.url = 'ftp://hooks.example/T0/SECRETPATH';
    });
    const s = new SettingsStore(db, secrets);
    const v = s.stored();
    expect(v.events.retentionDays).toBe(3650);
    // the replaced critical level follows the kept warning level
    expect(v.alerts).toMatchObject({ capacityWarningPct: 95, capacityCriticalPct: 95 });
    expect(v.smtp).toMatchObject({ enabled: true, to: ['ops@branch.example'] });
    expect(v.webhook).toMatchObject({ enabled: false, url: '' });
    const byField = Object.fromEntries(s.resets().map((r) => [r.field, r.message]));
    expect(Object.keys(byField)).toEqual([
      'events.retentionDays',
      'alerts.capacityCriticalPct',
      'smtp.to',
      'webhook.url',
      'webhook.enabled',
    ]);
    expect(byField['alerts.capacityCriticalPct']).toBe(
      'the stored value "high" is not valid in this version, so 95 is used, the warning level (the critical level may not be below the warning level)',
    );
    expect(byField['events.retentionDays']).toBe(
      'the stored value 5000 is not valid in this version, so the nearest allowed value 3650 is used',
    );
    expect(byField['webhook.enabled']).toBe(
      'webhook alerts are off until this is fixed: The webhook is enabled but has no URL',
    );
    // the webhook URL may carry a token: never repeated in the report
    expect(JSON.stringify(s.resets())).not.toContain('SECRETPATH');

    // an unrelated change neither fails on the replaced fields nor stores them
    s.update({ events: { maxEvents: 50_000 } });
    expect(storedDoc(db)).toMatchObject({
      events: { retentionDays: 5000, maxEvents: 50_000 },
      alerts: { capacityCriticalPct: 'high' },
      webhook: { enabled: true, url: 'ftp://hooks.example/T0/SECRETPATH' },
    });
    // fixing the URL is all it takes to have the webhook back on
    const after = s.update({ webhook: { url: 'https://hooks.example/T0/NEW' } });
    expect(after.webhook).toMatchObject({ enabled: true, url: 'https://hooks.example/T0/NEW' });
    expect(s.resets().map((r) => r.field)).not.toContain('webhook.enabled');
  });

  it('the engine reports at start which settings it replaced and what to do', async () => {
    const { dir, db, secrets } = setup();
    tamper(db, (d) => (d.performance!.cpuLatency = 'powersave'));
    const lines: string[] = [];
    const { command: fake } = fakeLogger(dir);
    const service = new EventsService({
      db,
      nodeId: 'node-1',
      version: '9.9.9',
      publish: () => undefined,
      secrets,
      collect: async () => ({}),
      log: createLogger({ sink: { write: (l) => lines.push(l) } }),
      intervalMs: 3_600_000,
      syslogCommand: [fake],
    });
    cleanups.push(() => service.stop());
    service.start();
    const { events } = await service.listEvents({ type: 'settings.*', limit: 10 });
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ type: 'settings.replaced', severity: 'warning' });
    expect(events[0]!.message).toBe(
      'Some stored settings cannot be used by this engine version (a newer or older version may have written them): ' +
        'performance.cpuLatency: the stored value "powersave" is not valid in this version, so the default "when-busy" is used. ' +
        'All other settings are kept, and the stored values stay as they are until you change them. ' +
        'Check these settings in the console and save them, or go back to the engine version that wrote them.',
    );
    expect(lines.join('')).toContain('"fields":["performance.cpuLatency"]');
  });
});
