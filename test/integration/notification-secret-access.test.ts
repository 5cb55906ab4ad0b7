/**
 * A mail password file the engine may not read (another owner, mode 600), on a real
 * engine process run as an unprivileged user, as a service would be: the channel pauses
 * with an alert that says what happened and what to run, the settings stay readable,
 * and a save once the file is the engine's again sends what waited. Needs root (to run
 * the engine as nobody and chown its file away); a directory in the file's place is
 * tested without root in test/unit/events/delivery.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Alert, EventRecord } from '../../contract/api.js';
import { connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, type RunningEngine } from '../helpers/engine.js';
import { startSmtpServer, type TestSmtpServer } from '../helpers/smtp-server.js';
import { until } from '../helpers/wait.js';

const NOBODY = { uid: 65534, gid: 65534 };
const root = process.getuid?.() === 0;

let base: string;
let engine: RunningEngine | undefined;
let api: SocketClient | undefined;
let mail: TestSmtpServer | undefined;

beforeAll(async () => {
  if (!root) return;
  // not under the run's TMPDIR, which only root may enter
  base = fs.mkdtempSync('/dev/shm/branchsan-secret-access-');
  fs.chmodSync(base, 0o755);
  const data = path.join(base, 'data');
  fs.mkdirSync(data);
  fs.chownSync(data, NOBODY.uid, NOBODY.gid);
  mail = await startSmtpServer({ starttls: true, users: { alerts: 'right-password' } });
  engine = await startEngine({ dataDir: data, user: NOBODY });
  api = await connectSocket(engine.socketPath);
});

afterAll(async () => {
  api?.close();
  await engine?.stop();
  await mail?.close();
  if (base) fs.rmSync(base, { recursive: true, force: true });
});

const pausedAlerts = async () =>
  (await api!.call('alerts.list', { active: true })).alerts.filter(
    (a: Alert) => a.rule === 'delivery.paused',
  );
const events = async (type: string) =>
  (await api!.call('events.list', { type, limit: 50 })).events as EventRecord[];

describe('a notification secret the engine may not read', () => {
  // Before: each message failed on EACCES as a delivery failure ('keeps retrying'), 8
  // times, and settings.get failed 'inside the engine'.
  it.skipIf(!root)(
    'pauses mail with what to run; settings stay readable; a save once it is readable sends what waited',
    async () => {
      await api!.call('settings.set', {
        smtp: {
          enabled: true,
          host: '127.0.0.1',
          port: mail!.port,
          from: 'san@branch.example',
          to: ['it@example.com'],
          username: 'alerts',
          password: 'right-password',
          allowInvalidCertificate: true,
        },
      });
      const file = path.join(engine!.dataDir, 'secrets', 'smtp-password');
      fs.chownSync(file, 0, 0);
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      expect((await api!.call('settings.get', {})).smtp.passwordSet).toBe(true);

      expect((await api!.call('notifications.test', {})).channels).toContain('smtp');
      const [alert] = await until(async () => {
        const a = await pausedAlerts();
        return a.length > 0 ? a : undefined;
      }, 15_000);
      expect(alert!.title).toBe('Alert e-mail is paused: its password file cannot be used');
      expect(alert!.message).toContain(
        `The secret ${file} cannot be read by the engine (EACCES: it belongs to uid 0 with mode 600, and the engine runs as nobody, uid 65534)`,
      );
      expect(alert!.message).toContain(
        `To resume: run as root: chown nobody ${file} && chmod 600 ${file}  (or enter it again in Settings > Notifications, which stores it readable by this server only); then save the settings in Settings > Notifications.`,
      );
      expect(await events('delivery.failing')).toEqual([]);
      expect(mail!.sessions).toBe(0);

      fs.chownSync(file, NOBODY.uid, NOBODY.gid);
      await api!.call('settings.set', { smtp: { enabled: true } });
      const [got] = await mail!.waitFor(1);
      expect(got!.data).toContain('Test notification');
      await until(async () => ((await pausedAlerts()).length === 0 ? true : undefined), 15_000);
    },
  );
});
