/**
 * A settings change whose new secret cannot be put in place after the change was
 * stored, for real (root: the secret file bind-mounted onto itself, so the rename over
 * it, or its deletion, fails with EBUSY, as such a step fails on a failing disk). Before, settings.set threw
 * the bare EBUSY although the change and its audit row were stored; the engine went on
 * with the old settings while the database held the new ones, and the new password was
 * deleted: at the next start the new user name was used with the old password.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SMTP_PASSWORD, WEBHOOK_SECRET } from '../../../engine/src/events/settings.js';
import { openDatabase, setSetting, type Db } from '../../../engine/src/persistence/db.js';
import { secretFiles } from '../../../engine/src/service/secrets.js';
import { tempDir } from '../../helpers/engine.js';
import { canMountTmpfs } from '../../helpers/small-fs.js';
import { quietEventsService } from './quiet-service.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** An engine's events service on `dir`, started; stopped at the end of the test. */
function service(db: Db, dir: string) {
  const s = quietEventsService(db, { secrets: secretFiles(dir) });
  s.start();
  cleanups.push(() => s.stop());
  return s;
}

/** Holds `file` busy: bind-mounted onto itself, so renaming over it or deleting it fails. */
function holdBusy(file: string): () => void {
  execFileSync('mount', ['--bind', file, file]);
  const release = () => void spawnSync('umount', [file]);
  cleanups.push(release);
  return release;
}

const events = (db: Db) =>
  db
    .prepare("SELECT message FROM events WHERE type = 'settings.secret-not-in-place' ORDER BY id")
    .pluck()
    .all() as string[];
const audits = (db: Db) => db.prepare('SELECT COUNT(*) FROM audit').pluck().get();

describe.skipIf(!canMountTmpfs)(
  'a secret that cannot be put in place after its change is stored',
  () => {
    it('says so, keeps the old password in use with the stored settings, and puts the new one in place at the next start', async () => {
      const dir = tempDir();
      const { db } = openDatabase(path.join(dir, 'branchsan.db'));
      cleanups.push(() => db.close());
      let s = service(db, dir);
      s.setSettings(
        {
          smtp: {
            enabled: true,
            host: 'mail.branch.example',
            from: 'san@branch.example',
            to: ['it@branch.example'],
            username: 'old-user',
            password: 'old-password',
          },
        },
        'admin',
      );
      const secrets = path.join(dir, 'secrets');
      const release = holdBusy(path.join(secrets, SMTP_PASSWORD));

      let err: unknown;
      try {
        s.setSettings({ smtp: { username: 'new-user', password: 'new-password' } }, 'admin');
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({
        name: 'UserError',
        code: 'unavailable',
        message: expect.stringMatching(
          /^The settings were saved, but the new mail password could not be put in place \(EBUSY: .*\): the old one stays in use\.$/,
        ),
        hint: expect.stringContaining(
          'BranchSAN tries again at every settings change and at its next start.',
        ),
      });
      // the change is stored and used as stored; the old password stays in use until then
      expect(audits(db)).toBe(2);
      expect(s.getSettings().smtp.username).toBe('new-user');
      expect(s.settings.secret(SMTP_PASSWORD)).toBe('old-password');
      expect(events(db)).toEqual([
        expect.stringMatching(
          /^The settings were saved, but the new mail password could not be put in place \(EBUSY/,
        ),
      ]);

      // a staged value of a change the database refused is never put in place
      fs.writeFileSync(path.join(secrets, `${SMTP_PASSWORD}.refusedchange.staged`), 'nope\n', {
        mode: 0o600,
      });
      // the cause fixed, the next start puts the new password in place
      release();
      await s.stop();
      s = service(db, dir);
      expect(s.settings.secret(SMTP_PASSWORD)).toBe('new-password');
      expect(fs.readdirSync(secrets)).toEqual([SMTP_PASSWORD]);
      expect(events(db)).toHaveLength(1);
      expect(s.getSettings().smtp).toMatchObject({ username: 'new-user', passwordSet: true });
    });

    it('a removal that fails stays in use, says so, and is done at the next start', async () => {
      const dir = tempDir();
      const { db } = openDatabase(path.join(dir, 'branchsan.db'));
      cleanups.push(() => db.close());
      let s = service(db, dir);
      s.setSettings({ webhook: { secret: 'old-secret' } }, 'admin');
      const release = holdBusy(path.join(dir, 'secrets', WEBHOOK_SECRET));
      expect(() => s.setSettings({ webhook: { secret: null } }, 'admin')).toThrow(
        /^The settings were saved, but the webhook signing secret could not be deleted \(EBUSY: .*\): it stays in use\.$/,
      );
      expect(s.settings.secret(WEBHOOK_SECRET)).toBe('old-secret');
      // still busy at the next start: said again, with what to do
      await s.stop();
      s = service(db, dir);
      expect(events(db)).toHaveLength(2);
      expect(events(db)[1]).toMatch(
        /^Saved settings are not fully in effect, but the webhook signing secret could not be deleted \(EBUSY: .*\): it stays in use\. BranchSAN tries again/,
      );
      release();
      await s.stop();
      s = service(db, dir);
      expect(s.settings.secret(WEBHOOK_SECRET)).toBeUndefined();
      expect(events(db)).toHaveLength(2);
    });
  },
);

// Before: the change was stored (with its audit row), then its rename met the directory:
// 'The settings were saved, but the new mail password could not be put in place
// (EISDIR ...)', with a hint about full or read-only disks, tried again at every start.
describe('a directory where a new secret goes', () => {
  it('refuses the change before anything is stored, saying what is there and what to run', async () => {
    const dir = tempDir();
    const { db } = openDatabase(path.join(dir, 'branchsan.db'));
    cleanups.push(() => db.close());
    const s = service(db, dir);
    const file = path.join(dir, 'secrets', SMTP_PASSWORD);
    fs.mkdirSync(file, { mode: 0o700 });
    const change = { smtp: { username: 'new-user', password: 'new-password' } };
    expect(() => s.setSettings(change, 'admin')).toThrow(
      expect.objectContaining({
        message: `The secret ${file} is a directory, not a regular file.`,
        hint: `Run: rm -r ${file}, then enter it again in Settings > Notifications.`,
      }),
    );
    expect(audits(db)).toBe(0);
    expect(s.getSettings().smtp.username).toBe('');
    expect(fs.readdirSync(path.join(dir, 'secrets'))).toEqual([SMTP_PASSWORD]); // nothing staged

    fs.rmdirSync(file); // as the hint says
    s.setSettings(change, 'admin');
    expect(s.settings.secret(SMTP_PASSWORD)).toBe('new-password');
    expect(events(db)).toEqual([]);
  });
});

// Before: the removal was stored (with its audit row), then rm met the directory: 'The
// settings were saved, but the webhook signing secret could not be deleted (Path is a
// directory: rm returned EISDIR ...)', with a hint about full or read-only disks.
describe('a directory where a secret to delete is', () => {
  it('refuses the change before anything is stored, saying what is there and what to run', async () => {
    const dir = tempDir();
    const { db } = openDatabase(path.join(dir, 'branchsan.db'));
    cleanups.push(() => db.close());
    const s = service(db, dir);
    s.setSettings({ webhook: { secret: 'old-secret' } }, 'admin');
    const file = path.join(dir, 'secrets', WEBHOOK_SECRET);
    fs.rmSync(file);
    fs.mkdirSync(file, { mode: 0o700 });
    fs.writeFileSync(path.join(file, 'notes'), 'an administrator put this here\n');
    const change = { webhook: { url: 'https://hooks.example/new', secret: null } };
    expect(() => s.setSettings(change, 'admin')).toThrow(
      expect.objectContaining({
        message: `The secret ${file} is a directory, not a regular file.`,
        hint: `Run: rm -r ${file}, then save the settings again.`,
      }),
    );
    expect(audits(db)).toBe(1); // the first change's only
    expect(s.getSettings().webhook.url).toBe('');
    expect(fs.readFileSync(path.join(file, 'notes'), 'utf8')).toContain('administrator');

    fs.rmSync(file, { recursive: true }); // as the hint says
    s.setSettings(change, 'admin');
    expect(s.getSettings().webhook).toMatchObject({
      url: 'https://hooks.example/new',
      secretSet: false,
    });
    expect(events(db)).toEqual([]);
  });

  it('one that appears after the change is stored: the hint says to rm -r it', async () => {
    const dir = tempDir();
    const { db } = openDatabase(path.join(dir, 'branchsan.db'));
    cleanups.push(() => db.close());
    const s = service(db, dir);
    s.setSettings({ webhook: { secret: 'old-secret' } }, 'admin');
    const file = path.join(dir, 'secrets', WEBHOOK_SECRET);
    // stored as a pending removal (as by a run that stopped before the rm), the
    // directory made since: the next start's rm meets it
    setSetting(db, 'service.settings.secrets', JSON.stringify({ [WEBHOOK_SECRET]: null }));
    fs.rmSync(file);
    fs.mkdirSync(file, { mode: 0o700 });
    await s.stop();
    service(db, dir);
    expect(events(db)).toEqual([
      `Saved settings are not fully in effect, but the webhook signing secret could not be deleted: the secret ${file} is a directory, not a regular file. ` +
        `Run: rm -r ${file}, then save the settings again. BranchSAN tries again at every settings change and at its next start.`,
    ]);
  });
});
