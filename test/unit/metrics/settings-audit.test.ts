/**
 * metrics.settings.set is a configuration change like any other: it writes an audit
 * row (who, what, never the token) in the same transaction as its settings, and a
 * change the database refuses changes nothing: not the stored settings, not the
 * service's memory (cap, endpoint on/off, token), not the token file. Real SQLite
 * refusing the write (a trigger; a database at its page limit, as on a full disk) and a
 * real HTTP server scraping /metrics with the token.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { CallContext } from '../../../engine/src/control/rpc.js';
import { getSetting, openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { metricsHandlers } from '../../../engine/src/service/handlers/metrics.js';
import { MetricsService } from '../../../engine/src/service/metrics-service.js';
import { UserError } from '../../../engine/src/util/errors.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';
import { fillDatabase } from '../../helpers/sqlite-full.js';

const CONSOLE: CallContext = {
  transport: 'console',
  peer: '192.0.2.7:50123',
  actor: 'admin@192.0.2.7',
};
const MIB = 1 << 20;

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});

function service(db: Db, dataDir: string): MetricsService {
  return new MetricsService({
    db,
    dataDir,
    io: { namespaces: () => [], controllers: () => [] },
    hub: { broadcast: () => undefined },
    log: createLogger({ sink: { write: () => undefined } }),
    node: { readText: async () => '', statfs: async () => ({ bsize: 4096, blocks: 1, bfree: 1 }) },
  });
}

function setup() {
  const dataDir = tempDir();
  const db = openDatabase(path.join(dataDir, 'branchsan.db')).db;
  cleanup.push(() => db.close());
  const m = service(db, dataDir);
  const set = metricsHandlers(m)['metrics.settings.set'];
  const tokenFile = path.join(dataDir, 'secrets', 'metrics-token');
  return { dataDir, db, m, set: (p: Parameters<typeof set>[0]) => set(p, CONSOLE), tokenFile };
}

type Setup = ReturnType<typeof setup>;

const audit = (db: Db) =>
  db.prepare('SELECT actor, action, details FROM audit ORDER BY id').all() as {
    actor: string;
    action: string;
    details: string;
  }[];

/** GET /metrics through the service's route on a real HTTP server; the status. */
async function scrape(m: MetricsService, token: string): Promise<number> {
  const route = m.route();
  const server = http.createServer((req, res) => route.handle(req, res));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/metrics`, {
      headers: { Authorization: `Bearer ${token}` },
    });
    await res.arrayBuffer();
    return res.status;
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
}

/** Ways the database refuses the write, each a real SQLite failure. */
const refusals: [string, (db: Db) => void, RegExp][] = [
  [
    'the audit insert fails',
    (db) =>
      db.exec(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
      ),
    /Retry; if it fails again/,
  ],
  [
    'the settings write fails',
    (db) =>
      db.exec(`
        CREATE TRIGGER no_setting_insert BEFORE INSERT ON settings WHEN NEW.key LIKE 'metrics.%'
          BEGIN SELECT RAISE(ABORT, 'settings refused'); END;
        CREATE TRIGGER no_setting_update BEFORE UPDATE ON settings WHEN NEW.key LIKE 'metrics.%'
          BEGIN SELECT RAISE(ABORT, 'settings refused'); END;`),
    /Retry; if it fails again/,
  ],
  [
    'the database is full (SQLITE_FULL)',
    (db) => {
      // what a full disk does to the next write
      fillDatabase(db, ["INSERT INTO audit (ts, actor, action, details) VALUES (0, '', '', '')"]);
    },
    /Check free space on the data directory/,
  ],
];

describe('metrics.settings.set and the audit log', () => {
  it('records who changed what, never the token', async () => {
    const s = setup();
    const on = await s.set({ prometheusEnabled: true, maxBytes: 4 * MIB });
    const rotated = await s.set({ rotateToken: true });
    await s.set({ prometheusEnabled: false });
    await s.set({}); // nothing asked: nothing to record
    expect(audit(s.db)).toEqual([
      {
        actor: 'admin@192.0.2.7',
        action: 'metrics.settings.set',
        details: JSON.stringify({ prometheusEnabled: true, maxBytes: 4 * MIB, tokenCreated: true }),
      },
      {
        actor: 'admin@192.0.2.7',
        action: 'metrics.settings.set',
        details: JSON.stringify({ rotateToken: true }),
      },
      {
        actor: 'admin@192.0.2.7',
        action: 'metrics.settings.set',
        details: JSON.stringify({ prometheusEnabled: false }),
      },
    ]);
    const all = JSON.stringify(audit(s.db));
    expect(all).not.toContain(on.token!);
    expect(all).not.toContain(rotated.token!);
  });

  it('checks the request before writing anything', () => {
    const s = setup();
    expect(() => s.m.setSettings({ maxBytes: 5 }, 'cli')).toThrow(
      /The metrics setting maxBytes is not valid: at least 1 MiB/,
    );
    expect(audit(s.db)).toEqual([]);
    expect(getSetting(s.db, 'metrics.maxBytes')).toBeUndefined();
  });

  it('a token recorded but not put in place leaves the old one working, and says so', async () => {
    const s = setup();
    const { token } = await s.set({ prometheusEnabled: true });
    // the rename after the commit fails as a failing disk makes it (fs is outside the unit)
    const rename = vi.spyOn(fs, 'renameSync').mockImplementationOnce(() => {
      throw Object.assign(new Error('EIO: i/o error, rename'), { code: 'EIO' });
    });
    cleanup.push(() => rename.mockRestore());
    expect(() => s.m.setSettings({ rotateToken: true }, 'cli')).toThrow(
      /^The metrics settings were saved, but the new scrape token could not be put in place \(EIO: .+\); the previous token still works\.$/,
    );
    expect(audit(s.db).map((a) => a.details)).toEqual([
      JSON.stringify({ prometheusEnabled: true, tokenCreated: true }),
      JSON.stringify({ rotateToken: true }), // recorded before it could take effect
      JSON.stringify({ tokenNotInPlace: 'rotated', error: 'EIO' }), // and then that it did not
    ]);
    expect(await scrape(s.m, token!)).toBe(200);
    expect(fs.readdirSync(path.dirname(s.tokenFile))).toEqual(['metrics-token']); // no tmp left
  });

  // Before, the rotation failed with EISDIR once its audit row was committed (it said the
  // token was rotated), with 'Free space on the data directory', which would not help.
  it('a directory where the token file goes refuses a rotation before anything is written or recorded, saying to rm -r it', async () => {
    const s = setup();
    const { token } = await s.set({ prometheusEnabled: true, maxBytes: 4 * MIB });
    fs.rmSync(s.tokenFile);
    fs.mkdirSync(path.join(s.tokenFile, 'x'), { recursive: true });
    let err: UserError | undefined;
    try {
      s.m.setSettings({ rotateToken: true, maxBytes: 8 * MIB }, 'cli');
    } catch (e) {
      err = e as UserError;
    }
    expect(err?.message).toBe(`The secret ${s.tokenFile} is a directory, not a regular file.`);
    expect(err?.hint).toBe(
      `Run: rm -r ${s.tokenFile}, then call metrics.settings.set with rotateToken: true again; nothing was changed, and scrapers then need the new token.`,
    );
    expect(audit(s.db).map((a) => a.details)).toEqual([
      JSON.stringify({ prometheusEnabled: true, maxBytes: 4 * MIB, tokenCreated: true }),
    ]);
    expect(getSetting(s.db, 'metrics.maxBytes')).toBe(String(4 * MIB));
    expect(await scrape(s.m, token!)).toBe(200); // the token in memory still works
    expect(fs.readdirSync(path.dirname(s.tokenFile))).toEqual(['metrics-token']); // no tmp left
    // what the hint says to run works
    fs.rmSync(s.tokenFile, { recursive: true });
    const rotated = await s.set({ rotateToken: true });
    expect(await scrape(s.m, rotated.token!)).toBe(200);
    expect(fs.readFileSync(s.tokenFile, 'utf8')).toBe(`${rotated.token}\n`);
  });

  // The check before the change cannot see what appears after it. Before, the audit
  // then said the token was rotated, and nothing said it was not.
  it('a directory put where the token goes after the check, as the audit row is written: the audit says the new token is not in place', async () => {
    const s = setup();
    const { token } = await s.set({ prometheusEnabled: true });
    // a real trigger runs this on the engine's connection as the audit row is written
    s.db.function('swap_in_dir', () => {
      if (fs.statSync(s.tokenFile).isDirectory()) return 0; // swapped already
      fs.rmSync(s.tokenFile);
      fs.mkdirSync(path.join(s.tokenFile, 'x'), { recursive: true });
      return 0;
    });
    s.db.exec('CREATE TRIGGER swap AFTER INSERT ON audit BEGIN SELECT swap_in_dir(); END; ');
    expect(() => s.m.setSettings({ rotateToken: true }, 'cli')).toThrow(
      /^The metrics settings were saved, but the new scrape token could not be put in place \(EISDIR: .+\); the previous token still works\.$/,
    );
    s.db.exec('DROP TRIGGER swap');
    expect(audit(s.db).map((a) => [a.actor, a.details])).toEqual([
      ['admin@192.0.2.7', JSON.stringify({ prometheusEnabled: true, tokenCreated: true })],
      ['cli', JSON.stringify({ rotateToken: true })],
      ['cli', JSON.stringify({ tokenNotInPlace: 'rotated', error: 'EISDIR' })],
    ]);
    expect(await scrape(s.m, token!)).toBe(200);
  });

  // Before, the engine refused to start with 'chmod 600 FILE (or delete it to have a new
  // one generated)': deleted, none was made, and every scrape was refused (401) for good.
  // Then the start itself was refused, storage included.
  it('a token file others can read leaves the endpoint refusing scrapes, with a hint that holds: chmod 600 and turn it on, or delete it and rotate', async () => {
    const s = setup();
    const { token } = await s.set({ prometheusEnabled: true });
    fs.chmodSync(s.tokenFile, 0o644);
    const started = service(s.db, s.dataDir);
    expect(started.endpointDown().map((d) => d.problem)).toEqual([
      `The secret ${s.tokenFile} is readable by other users (mode 644). ` +
        `Run: chmod 600 ${s.tokenFile}  (or delete it and, once the engine runs, call metrics.settings.set with rotateToken: true for a new one, which scrapers then need).`,
    ]);
    expect(await scrape(started, token!)).toBe(401);
    // chmod 600 and turned on again: it is read, and scrapers keep theirs
    fs.chmodSync(s.tokenFile, 0o600);
    started.setSettings({ prometheusEnabled: true }, 'cli');
    expect(started.endpointDown()).toEqual([]);
    expect(await scrape(started, token!)).toBe(200);
    // chmod 600: the next start takes it
    expect(await scrape(service(s.db, s.dataDir), token!)).toBe(200);
    // deleted: the next start makes none (the endpoint refuses every scrape) until a rotation
    fs.rmSync(s.tokenFile);
    const restarted = service(s.db, s.dataDir);
    expect(fs.existsSync(s.tokenFile)).toBe(false);
    expect(await scrape(restarted, token!)).toBe(401);
    const rotated = restarted.setSettings({ rotateToken: true }, 'cli');
    expect(await scrape(restarted, rotated.token!)).toBe(200);
    expect(fs.readFileSync(s.tokenFile, 'utf8')).toBe(`${rotated.token}\n`);
  });

  it('a token file is not read while the endpoint is off; turned off, its problem is gone', async () => {
    const s = setup();
    await s.set({ prometheusEnabled: true });
    fs.chmodSync(s.tokenFile, 0o644);
    const started = service(s.db, s.dataDir);
    expect(started.endpointDown()).toHaveLength(1);
    started.setSettings({ prometheusEnabled: false }, 'cli');
    expect(started.endpointDown()).toEqual([]);
    fs.rmSync(s.tokenFile);
    fs.mkdirSync(s.tokenFile); // a directory in its place
    expect(service(s.db, s.dataDir).endpointDown()).toEqual([]);
  });

  // Before, the file system's error went out raw: 'metrics.settings.set failed inside
  // the engine: ELOOP: too many symbolic links encountered', with 'collect a
  // diagnostics bundle' for a hint. A symbolic link to itself is a real ELOOP; a failing
  // disk's EIO takes the same path.
  it('a token file the file system cannot read refuses turning the endpoint on, or a rotation, saying what to check; nothing is recorded', async () => {
    const s = setup();
    fs.mkdirSync(path.dirname(s.tokenFile), { recursive: true });
    fs.symlinkSync('metrics-token', s.tokenFile);
    const renew =
      'or delete it and, once the engine runs, call metrics.settings.set with rotateToken: true for a new one, which scrapers then need';
    for (const p of [{ prometheusEnabled: true }, { rotateToken: true }]) {
      let err: UserError | undefined;
      try {
        s.m.setSettings(p, 'cli');
      } catch (e) {
        err = e as UserError;
      }
      expect(err).toBeInstanceOf(UserError);
      expect([err!.message, err!.hint]).toEqual([
        `The secret ${s.tokenFile} could not be read (ELOOP).`,
        `Check what is at ${s.tokenFile} (ls -l it) and the disk that holds it (dmesg for I/O errors), then try again (${renew}).`,
      ]);
    }
    expect(audit(s.db)).toEqual([]);
    expect(getSetting(s.db, 'metrics.prometheus')).toBeUndefined();
    // what the hint says to do works
    fs.rmSync(s.tokenFile);
    expect(await scrape(s.m, (await s.set({ prometheusEnabled: true })).token!)).toBe(200);
  });

  describe.each(refusals)('when %s', (_, refuse, hint) => {
    const refused = (s: Setup, p: Parameters<MetricsService['setSettings']>[0]) => {
      try {
        s.m.setSettings(p, 'cli');
      } catch (err) {
        return err as UserError;
      }
      throw new Error('the change was not refused');
    };

    it('changes nothing: settings, memory, token file, the token scrapers use', async () => {
      const s = setup();
      const { token } = await s.set({ prometheusEnabled: true, maxBytes: 8 * MIB });
      refuse(s.db);
      const before = { settings: s.m.settings(), rows: audit(s.db).length };

      const err = refused(s, { prometheusEnabled: false, maxBytes: 2 * MIB, rotateToken: true });
      expect(err).toBeInstanceOf(UserError);
      expect(err.code).toBe('unavailable');
      expect(err.message).toMatch(
        /^The metrics settings were not saved \(.+\); nothing was changed, and the current scrape token still works\.$/,
      );
      expect(err.hint).toMatch(hint);

      // memory: the cap, the endpoint, the token it accepts
      expect(s.m.settings()).toEqual(before.settings);
      expect(s.m.settings().maxBytes).toBe(8 * MIB);
      expect(await scrape(s.m, token!)).toBe(200);
      // the database and the token file, as a restarted engine reads them
      expect(getSetting(s.db, 'metrics.prometheus')).toBe('1');
      expect(getSetting(s.db, 'metrics.maxBytes')).toBe(String(8 * MIB));
      expect(audit(s.db)).toHaveLength(before.rows);
      expect(fs.readFileSync(s.tokenFile, 'utf8')).toBe(`${token}\n`);
      expect(fs.readdirSync(path.dirname(s.tokenFile))).toEqual(['metrics-token']);
      const restarted = service(s.db, s.dataDir);
      expect(restarted.settings()).toMatchObject({
        prometheus: { enabled: true },
        maxBytes: 8 * MIB,
      });
      expect(await scrape(restarted, token!)).toBe(200);
    });

    it('turning the endpoint on makes no token when it cannot be recorded', async () => {
      const s = setup();
      refuse(s.db);
      const err = refused(s, { prometheusEnabled: true });
      expect(err.message).toMatch(
        /^The metrics settings were not saved \(.+\); nothing was changed\.$/,
      );
      expect(s.m.settings().prometheus.enabled).toBe(false);
      expect(fs.existsSync(s.tokenFile)).toBe(false);
      expect(fs.readdirSync(path.dirname(s.tokenFile))).toEqual([]);
      expect(await scrape(s.m, 'anything')).toBe(404);
    });
  });
});
