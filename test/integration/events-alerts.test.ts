/**
 * Events, alerts and notifications on a real engine process: pushed events on the
 * API socket, paged queries, a host that connects over NVMe/TCP and goes away,
 * the unexpected-restart alert and its acknowledgement, syslog through a fake
 * logger, webhook and SMTP delivery to local servers (including failures),
 * a graceful SIGTERM, and the `branchsan service` command without systemd.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, type Alert, type EventRecord } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { openDatabaseReadOnly } from '../../engine/src/persistence/db.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import {
  LOCAL_ACTOR,
  runCli,
  startEngine,
  tempDir,
  type RunningEngine,
} from '../helpers/engine.js';
import { until } from '../helpers/wait.js';
import { freePort } from '../helpers/linux-host.js';
import { startSmtpServer, type TestSmtpServer } from '../helpers/smtp-server.js';
import { fakeLogger } from '../helpers/fake-logger.js';

const NQN = 'nqn.2026-11.io.branchsan.test:vol1';
const HOST = 'nqn.2026-11.io.branchsan.test:esx-01';

let dir: string;
let syslogFile: string;
let engine: RunningEngine;
let api: SocketClient;
const pushed: { name: string; data: unknown }[] = [];

async function connect(): Promise<SocketClient> {
  const c = await connectSocket(engine.socketPath);
  for (const name of ['event.recorded', 'alert.raised', 'alert.cleared', 'alert.acknowledged']) {
    c.session.on(name, (data) => pushed.push({ name, data }));
  }
  return c;
}

const pushedEvent = (type: string) =>
  until(
    () =>
      pushed.find((p) => p.name === 'event.recorded' && (p.data as EventRecord).type === type)
        ?.data as EventRecord,
  );

beforeAll(async () => {
  dir = tempDir();
  const fake = fakeLogger(dir);
  syslogFile = fake.file;
  engine = await startEngine({
    dataDir: path.join(dir, 'data'),
    env: { BRANCHSAN_SYSLOG_COMMAND: fake.command },
  });
  api = await connect();
});

afterAll(async () => {
  api?.close();
  await engine?.stop();
});

describe('events', () => {
  it('pushes each recorded event to API clients and writes it to syslog', async () => {
    const r = await api.call('notifications.test', {});
    expect(r.channels).toEqual(['ui', 'syslog']);
    const ev = await pushedEvent('notifications.test');
    expect(ev).toMatchObject({ id: r.eventId, severity: 'warning' });
    expect(ev.message).toMatch(new RegExp(`^Test notification requested by ${LOCAL_ACTOR}\\.`));
    const log = await until(() => {
      const t = fs.existsSync(syslogFile) && fs.readFileSync(syslogFile, 'utf8');
      return t && t.includes('notifications.test') && t;
    });
    expect(log).toMatch(/^<30>\[engine\.started\] Engine started\.$/m); // daemon.info
    expect(log).toMatch(/^<28>\[notifications\.test\] Test notification requested by/m); // daemon.warning
  });

  it('lists events newest first, filtered and paged', async () => {
    for (let i = 0; i < 4; i++) await api.call('notifications.test', {});
    const all = await api.call('events.list', { type: 'notifications.test', limit: 1000 });
    expect(all.events.length).toBeGreaterThanOrEqual(5);
    const ids: number[] = [];
    let before: number | undefined;
    do {
      const page = await api.call('events.list', {
        type: 'notifications.*',
        limit: 2,
        ...(before ? { before } : {}),
      });
      expect(page.events.length).toBeLessThanOrEqual(2);
      ids.push(...page.events.map((e) => e.id));
      before = page.nextBefore ?? undefined;
    } while (before);
    expect(ids).toEqual(all.events.map((e) => e.id));
    const warn = await api.call('events.list', { severity: 'warning', limit: 1000 });
    expect(warn.events.every((e) => e.severity !== 'info')).toBe(true);
    const bad = await apiError(api.call('events.list', { limit: 5000 }));
    expect(bad.code).toBe(ErrorCode.InvalidParams);
    expect(bad.data?.field).toBe('limit');
  });
});

describe('alerts', () => {
  it('raises host.disconnected when a connected host is gone for the grace time, and clears it on reconnect', async () => {
    await api.call('settings.set', { alerts: { hostDisconnectedSec: 5 } });
    const nvmePort = await freePort();
    await api.call('target.subsystem.create', { nqn: NQN, hosts: [HOST] });
    await api.call('target.port.add', { host: '127.0.0.1', port: nvmePort });
    await api.call('target.namespace.add', {
      nqn: NQN,
      backend: { kind: 'memory', sizeBytes: 8 << 20 },
    });
    const opts = { host: '127.0.0.1', port: nvmePort, subnqn: NQN, hostnqn: HOST, ioQueues: 1 };
    const ctrl = await NvmeController.connect(opts);
    await new Promise((r) => setTimeout(r, 5_500)); // one rule pass (every 5 s) sees it connected
    await ctrl.close();
    const raised = await until(
      () =>
        pushed.find(
          (p) => p.name === 'alert.raised' && (p.data as Alert).rule === 'host.disconnected',
        )?.data as Alert,
      30_000,
    );
    expect(raised.message).toMatch(
      new RegExp(
        `^Host esx-01 \\(${HOST.replace(/\./g, '\\.')}\\) has been disconnected from volume vol1 for \\d+ seconds\\. Check the host's network link`,
      ),
    );
    const active = await api.call('alerts.list', { active: true });
    expect(active.alerts.filter((a) => a.rule === 'host.disconnected')).toHaveLength(1);
    const again = await NvmeController.connect(opts);
    try {
      const cleared = await until(
        () =>
          pushed.find((p) => p.name === 'alert.cleared' && (p.data as Alert).id === raised.id)
            ?.data as Alert,
        15_000,
      );
      expect(cleared.clearedAt).not.toBeNull();
      const ev = await api.call('events.list', { type: 'alert.*', limit: 10 });
      expect(ev.events.map((e) => e.type)).toEqual(
        expect.arrayContaining(['alert.raised', 'alert.cleared']),
      );
    } finally {
      await again.close();
    }
  }, 90_000);

  it('a host connected when the engine was killed and not back after its restart raises host.disconnected', async () => {
    const d = tempDir();
    const nqn = 'nqn.2026-11.io.branchsan.test:vol2';
    const first = await startEngine({ dataDir: d });
    const c1 = await connectSocket(first.socketPath);
    const nvmePort = await freePort();
    let ctrl: NvmeController | undefined;
    try {
      await c1.call('settings.set', { alerts: { hostDisconnectedSec: 5 } });
      await c1.call('target.subsystem.create', { nqn, hosts: [HOST] });
      await c1.call('target.port.add', { host: '127.0.0.1', port: nvmePort });
      await c1.call('target.namespace.add', {
        nqn,
        backend: { kind: 'memory', sizeBytes: 8 << 20 },
      });
      ctrl = await NvmeController.connect({
        host: '127.0.0.1',
        port: nvmePort,
        subnqn: nqn,
        hostnqn: HOST,
        ioQueues: 1,
      });
      // a rule pass (every 5 s) saw it connected and stored it
      await until(() => {
        const db = openDatabaseReadOnly(path.join(d, 'branchsan.db'));
        try {
          return db.prepare('SELECT 1 FROM watched_hosts WHERE host_nqn = ?').get(HOST);
        } finally {
          db.close();
        }
      }, 15_000);
    } finally {
      c1.close();
      await first.stop('SIGKILL'); // a crash or power cut while the host is connected
      await ctrl?.close().catch(() => undefined);
    }
    // Before the fix the new process had forgotten the host: no alert, ever.
    const second = await startEngine({ dataDir: d });
    const c2 = await connectSocket(second.socketPath);
    try {
      const alert = await until(
        async () =>
          (await c2.call('alerts.list', { active: true })).alerts.find(
            (a) => a.rule === 'host.disconnected',
          ),
        30_000,
      );
      expect(alert.subject).toBe(`${HOST} on ${nqn}`);
      expect(alert.message).toMatch(
        /^Host esx-01 \(.*\) has not reconnected to volume vol2 in the \d+ seconds since the engine started; it was last connected at \d{4}-\d\d-\d\dT[\d:.]+Z, before the engine stopped\. Check the host's network link/,
      );
    } finally {
      c2.close();
      await second.stop();
    }
  }, 90_000);

  it('raises a critical alert when a served backing file is moved or deleted; its data can be copied back', async () => {
    const nqn = 'nqn.2026-11.io.branchsan.test:backing';
    const file = path.join(dir, 'backing.img');
    const content = Buffer.alloc(8 << 20, 0x5a);
    fs.writeFileSync(file, content);
    await api.call('target.subsystem.create', { nqn, allowAnyHost: true });
    const ns = await api.call('target.namespace.add', {
      nqn,
      backend: { kind: 'file', path: file },
    });
    const raisedFor = (exclude: number[] = []) =>
      until(
        () =>
          pushed.find(
            (p) =>
              p.name === 'alert.raised' &&
              (p.data as Alert).rule === 'volume.backing-file' &&
              !exclude.includes((p.data as Alert).id),
          )?.data as Alert,
        20_000,
      );
    try {
      fs.renameSync(file, `${file}.moved`);
      const moved = await raisedFor();
      expect(moved.severity).toBe('critical');
      expect(moved.title).toBe(
        'The backing file of volume backing (namespace 1) was moved or replaced',
      );
      expect(moved.message).toContain(`Move the file back to ${file}`);
      fs.renameSync(`${file}.moved`, file);
      await until(
        () => pushed.find((p) => p.name === 'alert.cleared' && (p.data as Alert).id === moved.id),
        20_000,
      );
      fs.rmSync(file);
      const deleted = await raisedFor([moved.id]);
      expect(deleted.title).toBe('The backing file of volume backing (namespace 1) was deleted');
      const copy = /cp --sparse=always (\/proc\/(\d+)\/fd\/\d+) /.exec(deleted.message);
      expect(Number(copy?.[2])).toBe(engine.pid);
      // the advice works: the engine's open file still holds every byte
      fs.copyFileSync(copy![1]!, `${file}.recovered`);
      expect(fs.readFileSync(`${file}.recovered`).equals(content)).toBe(true);
    } finally {
      await api.call('target.namespace.remove', { nqn, nsid: ns.nsid });
      await api.call('target.subsystem.delete', { nqn });
    }
  }, 60_000);

  it('raises an alert after an unexpected restart; acknowledging it closes it', async () => {
    const d = tempDir();
    const first = await startEngine({ dataDir: d });
    await first.stop('SIGKILL');
    const second = await startEngine({ dataDir: d });
    const c = await connectSocket(second.socketPath);
    const got: { name: string; data: Alert }[] = [];
    for (const name of ['alert.acknowledged', 'alert.cleared'])
      c.session.on(name, (a) => got.push({ name, data: a as Alert }));
    try {
      const alert = await until(async () =>
        (await c.call('alerts.list', { active: true })).alerts.find(
          (a) => a.rule === 'engine.unclean-restart',
        ),
      );
      expect(alert).toMatchObject({ severity: 'warning', ackedAt: null, clearedAt: null });
      expect(alert.message).toMatch(
        /restarted at .* after an unexpected stop \(crash, kill or power loss\)\. Hosts reconnect/,
      );
      const acked = await c.call('alerts.ack', { id: alert.id });
      expect(acked.ackedBy).toMatch(new RegExp(`^${LOCAL_ACTOR}$`));
      expect(acked.clearedAt).not.toBeNull();
      await until(() => got.length === 2);
      expect(got.map((g) => g.name)).toEqual(['alert.acknowledged', 'alert.cleared']);
      expect((await c.call('alerts.list', { active: true })).alerts).toEqual([]);
      const missing = await apiError(c.call('alerts.ack', { id: 99999 }));
      expect(missing.code).toBe(ErrorCode.NotFound);
      expect(missing.message).toBe('There is no alert 99999.');
    } finally {
      c.close();
      expect(await second.stop()).toBe(0);
    }
    // a graceful stop was recorded as one: no unclean restart next time
    const db = openDatabaseReadOnly(path.join(d, 'branchsan.db'));
    const types = (
      db.prepare('SELECT type FROM events ORDER BY id').all() as { type: string }[]
    ).map((r) => r.type);
    db.close();
    expect(types.at(-1)).toBe('engine.stopped');
    expect(fs.readFileSync(path.join(d, 'logs', 'engine.log'), 'utf8')).toMatch(
      /"msg":"engine stopped"/,
    );
  }, 60_000);
});

describe('notification settings and delivery', () => {
  let smtp: TestSmtpServer;
  let hook: http.Server;
  const posts: { body: string; signature?: string }[] = [];
  let failHook = 0;

  beforeAll(async () => {
    smtp = await startSmtpServer({ starttls: true, users: { alerts: 'Sm7p-Pa55word' } });
    hook = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        posts.push({ body, signature: req.headers['x-branchsan-signature'] as string | undefined });
        res.statusCode = failHook-- > 0 ? 500 : 204;
        res.end();
      });
    });
    await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  });
  afterAll(async () => {
    await smtp?.close();
    await new Promise((r) => hook?.close(r));
  });

  it('validates settings and stores the SMTP password as a 0600 secret, never returned', async () => {
    const bad = await apiError(api.call('settings.set', { smtp: { enabled: true } }));
    expect(bad.code).toBe(ErrorCode.InvalidParams);
    expect(bad.message).toBe('E-mail is enabled but no mail server is set.');
    expect(bad.data).toMatchObject({
      field: 'smtp.host',
      hint: 'Enter the host name of your mail relay.',
    });
    const wrong = await apiError(api.call('settings.set', { smtp: { port: 0 } }));
    expect(wrong.data?.field).toBe('smtp.port');
    const s = await api.call('settings.set', {
      smtp: {
        enabled: true,
        host: '127.0.0.1',
        port: smtp.port,
        security: 'starttls',
        username: 'alerts',
        password: 'Sm7p-Pa55word',
        from: 'san@branch.example',
        to: ['it@example.com'],
        allowInvalidCertificate: true,
      },
    });
    expect(s.smtp).toMatchObject({ enabled: true, passwordSet: true, username: 'alerts' });
    expect(JSON.stringify(await api.call('settings.get', {}))).not.toContain('Sm7p');
    const file = path.join(engine.dataDir, 'secrets', 'smtp-password');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
  });

  it('a change whose audit row cannot be written changes nothing, secrets included', async () => {
    const before = await api.call('settings.get', {});
    const secretFile = path.join(engine.dataDir, 'secrets', 'smtp-password');
    const secretBefore = fs.readFileSync(secretFile, 'utf8');
    // A real SQLite failure at the audit insert (as a full disk would give one).
    const db = new Database(path.join(engine.dataDir, 'branchsan.db'));
    db.exec(
      "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
    );
    try {
      await apiError(
        api.call('settings.set', {
          events: { retentionDays: before.events.retentionDays + 1 },
          smtp: { username: 'someone-else', password: 'Other-Pa55word' },
          webhook: { secret: null },
        }),
      );
      // Before the fix: the settings row, the cached view and the secret files had
      // changed, with no audit row saying so.
      expect(await api.call('settings.get', {})).toEqual(before);
      expect(fs.readFileSync(secretFile, 'utf8')).toBe(secretBefore);
      const rows = db.prepare("SELECT COUNT(*) AS n FROM settings WHERE key = 'service.settings'");
      expect(rows.get()).toEqual({ n: 1 });
      const stored = db
        .prepare("SELECT value FROM settings WHERE key = 'service.settings'")
        .get() as {
        value: string;
      };
      expect(JSON.parse(stored.value).smtp.username).toBe(before.smtp.username);
    } finally {
      db.exec('DROP TRIGGER no_audit');
      db.close();
    }
    const after = await api.call('settings.set', {
      events: { retentionDays: before.events.retentionDays + 1 },
    });
    expect(after.events.retentionDays).toBe(before.events.retentionDays + 1);
    await api.call('settings.set', { events: { retentionDays: before.events.retentionDays } });
  });

  it('mails and posts a test notification', async () => {
    const port = (hook.address() as AddressInfo).port;
    await api.call('settings.set', {
      webhook: {
        enabled: true,
        url: `http://127.0.0.1:${port}/hook/T123/abcdef`,
        secret: 'whsec-1234567890',
      },
    });
    const before = smtp.received.length;
    const r = await api.call('notifications.test', {});
    expect(r.channels).toEqual(['ui', 'syslog', 'smtp', 'webhook']);
    const mails = await smtp.waitFor(before + 1);
    expect(mails.at(-1)!.auth).toEqual({ user: 'alerts', pass: 'Sm7p-Pa55word' });
    expect(mails.at(-1)!.data).toMatch(/Subject: \[BranchSAN warning\] Test notification \(/);
    const post = await until(() => posts.find((p) => JSON.parse(p.body).event.id === r.eventId));
    expect(JSON.parse(post.body)).toMatchObject({
      source: 'branchsan',
      event: { type: 'notifications.test' },
    });
    expect(post.signature).toMatch(/^sha256=[0-9a-f]{64}$/);
  });

  it('records a failing webhook as an event, retries it, and records the recovery', async () => {
    failHook = 1;
    await api.call('notifications.test', {});
    const failing = await pushedEvent('delivery.failing');
    expect(failing.severity).toBe('warning');
    expect(failing.message).toMatch(
      /^Webhook cannot be delivered: POST http:\/\/127\.0\.0\.1:\d+\/… answered HTTP 500/,
    );
    expect(failing.message).not.toContain('T123');
    const recovered = await pushedEvent('delivery.recovered'); // first retry after 2 s
    expect(recovered.message).toBe('Webhook works again.');
    await api.call('settings.set', { webhook: { enabled: false }, smtp: { enabled: false } });
  }, 30_000);
});

describe('lifecycle from the CLI', () => {
  it('says how to run without systemd', async () => {
    const r = await runCli(['service', 'status']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      'systemd not available: run `branchsan serve --data DIR` in the foreground instead.',
    );
  });

  it('checks its arguments', async () => {
    const none = await runCli(['service']);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('say what to do: start, stop, restart, status or install');
    const unknown = await runCli(['service', 'reboot']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown action "reboot"');
    const unit = await runCli(['service', 'start', '--unit', '/x']);
    expect(unit.code).toBe(2);
  });

  it('prints the install plan with --dry-run', async () => {
    const r = await runCli(['service', 'install', '--dry-run']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^write \/etc\/systemd\/system\/branchsan\.service \(mode 644\)/m);
    expect(r.stdout).toMatch(/^systemctl daemon-reload/m);
    expect(r.stdout).toMatch(/^systemctl enable --now branchsan\.service/m);
    const start = await runCli(['service', 'start', '--dry-run']);
    expect(start.stdout).toMatch(/^systemctl start branchsan\.service/);
  });
});
