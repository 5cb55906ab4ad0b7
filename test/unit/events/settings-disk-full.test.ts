/**
 * settings.set on a data disk that is full, for real (root: a small tmpfs holding the
 * database and the secret files): a change the database cannot store leaves the old
 * secrets in use, as it leaves the old settings. Before, a new SMTP password was put in
 * place first, and putting the old one back after the database refused the change
 * failed on the same full disk: the new password stayed in use although the API said
 * the change was not saved, and no audit row recorded it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  SettingsStore,
  SMTP_PASSWORD,
  WEBHOOK_SECRET,
} from '../../../engine/src/events/settings.js';
import { openDatabase } from '../../../engine/src/persistence/db.js';
import { secretFiles } from '../../../engine/src/service/secrets.js';
import { canMountTmpfs, fillFs, smallFs, unmountSmallFs } from '../../helpers/small-fs.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
afterAll(() => unmountSmallFs());

describe.skipIf(!canMountTmpfs)('settings.set on a full disk', () => {
  it('keeps the old secrets in use when the database cannot store the change', () => {
    const dir = smallFs('branchsan-settings-full-');
    const { db } = openDatabase(path.join(dir, 'branchsan.db'));
    cleanups.push(() => db.close());
    const store = new SettingsStore(db, secretFiles(dir));
    const audit = () =>
      db
        .prepare('INSERT INTO audit (ts, actor, action, details) VALUES (?, ?, ?, ?)')
        .run(Date.now(), 'admin', 'settings.set', '{"smtp":{"password":"set"}}');
    const audits = () => db.prepare('SELECT COUNT(*) FROM audit').pluck().get();
    store.update(
      {
        smtp: {
          enabled: true,
          host: 'mail.branch.example',
          from: 'san@branch.example',
          to: ['it@branch.example'],
          username: 'alerts',
          password: 'old-password',
        },
        webhook: { secret: 'old-webhook-secret' },
      },
      audit,
    );
    db.pragma('wal_checkpoint(TRUNCATE)'); // the change's write must grow the WAL
    // room for a secret file, not for the database's change as well
    const filler = fillFs(dir, 4);

    expect(() => store.update({ smtp: { password: 'new-password' } }, audit)).toThrow(
      expect.objectContaining({ code: 'SQLITE_FULL' }),
    );
    expect(store.secret(SMTP_PASSWORD)).toBe('old-password');
    expect(store.secret(WEBHOOK_SECRET)).toBe('old-webhook-secret');
    expect(audits()).toBe(1);
    // a removal too waits for the database: the password stays
    expect(() => store.update({ smtp: { username: '', password: null } }, audit)).toThrow(
      expect.objectContaining({ code: 'SQLITE_FULL' }),
    );
    expect(store.secret(SMTP_PASSWORD)).toBe('old-password');
    expect(store.view().smtp.username).toBe('alerts');
    // nothing written aside is left behind
    expect(fs.readdirSync(path.join(dir, 'secrets')).sort()).toEqual([
      SMTP_PASSWORD,
      WEBHOOK_SECRET,
    ]);

    // with room again the same change is stored, and takes effect
    fs.rmSync(filler);
    store.update({ smtp: { password: 'new-password' } }, audit);
    expect(store.secret(SMTP_PASSWORD)).toBe('new-password');
    expect(store.secret(WEBHOOK_SECRET)).toBe('old-webhook-secret');
    expect(audits()).toBe(2);
  });
});
