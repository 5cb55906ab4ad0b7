/**
 * The database on a data disk that is full, for real (root: a small tmpfs). SQLite in
 * WAL mode removes DB-wal and DB-shm at a clean close, and needs to create DB-shm
 * again at the next open: on a full disk it cannot (SQLITE_IOERR_SHMSIZE), so the
 * engine used to refuse to start, and the NVMe/TCP target it serves stayed down
 * although its storage may be on another disk. Now the database is opened in exclusive
 * mode, which keeps the WAL index in memory; nothing stored is lost or changed.
 *
 * The CLI case needs the built engine (npm test builds it; or npm run build:engine).
 */
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  DatabaseError,
  ensureNodeId,
  getSetting,
  openDatabase,
  recordEvent,
  setSetting,
} from '../../engine/src/persistence/db.js';
import { MIGRATIONS } from '../../engine/src/persistence/migrations.js';
import { apiError, connectSocket } from '../helpers/api.js';
import { killGroup, killStarted, start, type Started } from '../helpers/cli-process.js';
import { hasEngineLock, REPO_ROOT, tempDir } from '../helpers/engine.js';
import { canMountTmpfs, fillFs, smallFs, unmountSmallFs } from '../helpers/small-fs.js';
import { makeDamagedDatabase } from '../helpers/sqlite-damaged.js';

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

afterEach(() => killStarted());
afterAll(() => unmountSmallFs());

describe.skipIf(!canMountTmpfs)('openDatabase on a full file system', () => {
  it('opens a database stopped cleanly, exclusively, reading everything and writing nothing', () => {
    const dir = smallFs('branchsan-dbfull-');
    const file = path.join(dir, 'branchsan.db');
    const first = openDatabase(file);
    const nodeId = ensureNodeId(first.db);
    setSetting(first.db, 'test.kept', 'yes');
    recordEvent(first.db, {
      type: 'test.before',
      severity: 'info',
      message: 'before the disk filled',
    });
    first.db.close();
    // a clean close leaves neither DB-wal nor DB-shm, which the next open must create
    expect(fs.readdirSync(dir).sort()).toEqual(['branchsan.db']);
    const filler = fillFs(dir);
    const stored = sha256(file);

    // Before the fix: SqliteError SQLITE_IOERR_SHMSIZE ("disk I/O error").
    const full = openDatabase(file);
    try {
      expect(full.exclusiveBecauseFull).toBe(true);
      expect(full.applied).toEqual([]);
      expect(full.schemaVersion).toBe(MIGRATIONS.length);
      expect(full.db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(full.db.pragma('locking_mode', { simple: true })).toBe('exclusive');
      expect(full.db.pragma('foreign_keys', { simple: true })).toBe(1);
      expect(ensureNodeId(full.db)).toBe(nodeId);
      expect(getSetting(full.db, 'test.kept')).toBe('yes');
      // the integrity check and the migrations (schema current) wrote nothing
      expect(fs.statSync(`${file}-wal`).size).toBe(0);
      expect(sha256(file)).toBe(stored);
      // exclusive: another process's reader is refused while it is open
      const other = new Database(file, { readonly: true, timeout: 0 });
      expect(() => other.prepare('SELECT 1 FROM settings').get()).toThrow(
        expect.objectContaining({ code: 'SQLITE_BUSY' }),
      );
      other.close();
      // a change fails as on any full disk, and leaves the connection usable
      expect(() => setSetting(full.db, 'test.new', 'x')).toThrow(
        expect.objectContaining({ code: 'SQLITE_FULL' }),
      );
      expect(getSetting(full.db, 'test.new')).toBeUndefined();
      expect(getSetting(full.db, 'test.kept')).toBe('yes');
    } finally {
      full.db.close();
    }
    expect(sha256(file)).toBe(stored);

    // space freed: a normal (shared) open, with everything as it was
    fs.rmSync(filler);
    const again = openDatabase(file);
    try {
      expect(again.exclusiveBecauseFull).toBe(false);
      expect(again.applied).toEqual([]);
      expect(again.db.pragma('locking_mode', { simple: true })).toBe('normal');
      expect(again.db.pragma('integrity_check')).toEqual([{ integrity_check: 'ok' }]);
      expect(ensureNodeId(again.db)).toBe(nodeId);
      expect(getSetting(again.db, 'test.kept')).toBe('yes');
      expect(
        again.db.prepare("SELECT message FROM events WHERE type = 'test.before'").all(),
      ).toEqual([{ message: 'before the disk filled' }]);
    } finally {
      again.db.close();
    }
  });

  it('says the disk is full, and what to do, when even an exclusive open cannot work', () => {
    const dir = smallFs('branchsan-dbfull-');
    fillFs(dir);
    const file = path.join(dir, 'new.db'); // a new database needs room for its schema
    const err = openError(file);
    // Before: a bare SqliteError SQLITE_FULL, "database or disk is full".
    expect(err).toBeInstanceOf(DatabaseError);
    expect((err as DatabaseError).message).toBe(
      `Cannot open the database ${file}: the file system that holds it is full (SQLITE_FULL).`,
    );
    expect((err as DatabaseError).hint).toMatch(/^Free space in .* then start the engine again\.$/);
  });

  it('keeps the damaged-database answer on a full disk', () => {
    // damaged elsewhere, then moved to the full disk
    const made = path.join(tempDir(), 'b.db');
    makeDamagedDatabase(made);
    const dir = smallFs('branchsan-dbfull-');
    const file = path.join(dir, 'b.db');
    fs.copyFileSync(made, file);
    fillFs(dir);
    const err = openError(file);
    expect(err).toBeInstanceOf(DatabaseError);
    expect((err as DatabaseError).message).toMatch(/is damaged|failed its integrity check/);
    expect((err as DatabaseError).hint).toMatch(/backup|peer/);
  });
});

/** Stops the engine `p` (SIGTERM: exit 0) and checks the integrity of its database. */
async function stopAndCheck(p: Started, data: string): Promise<void> {
  killGroup(p.proc, 'SIGTERM');
  const r = await p.exited;
  expect(r.code, `${r.signal} ${r.timedOut}\n${r.stdout.slice(-3000)}\n${r.stderr}`).toBe(0);
  const check = new Database(path.join(data, 'branchsan.db'), { readonly: true });
  expect(check.pragma('integrity_check')).toEqual([{ integrity_check: 'ok' }]);
  check.close();
}

/** What opening `file` threw (nothing: undefined). */
function openError(file: string): unknown {
  try {
    openDatabase(file).db.close();
  } catch (e) {
    return e;
  }
  return undefined;
}

async function until(what: string, ok: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Starts `branchsan serve` on `data` without the console; resolves once it is ready. */
async function serve(data: string): Promise<Started> {
  const p = start(['serve', '--data', data, '--no-console'], 60_000);
  await until(`"engine ready"\n${p.stdout()}\n${p.stderr()}`, () => {
    if (p.stdout().includes('"msg":"engine ready"')) return true;
    if (p.proc.exitCode !== null || p.proc.signalCode !== null) {
      throw new Error(`branchsan serve exited before it was ready\n${p.stdout()}\n${p.stderr()}`);
    }
    return false;
  });
  return p;
}

function logLines(p: Started): { level?: string; msg?: string; nodeId?: string }[] {
  return p
    .stdout()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { level?: string; msg?: string });
}

describe.skipIf(!canMountTmpfs)('branchsan serve on a full data disk', () => {
  it('starts, answers status, stops on SIGTERM; after freeing space it restarts normally with everything', async () => {
    if (!fs.existsSync(path.join(REPO_ROOT, 'dist/engine/src/cli/main.js'))) {
      throw new Error('the engine is not built: run `npm run build:engine` first');
    }
    const dir = smallFs('branchsan-dbfull-');
    const data = path.join(dir, 'data');
    const nqn = 'nqn.2026-11.io.branchsan.test:db-full';

    const first = await serve(data);
    const nodeId = logLines(first).find((l) => l.msg === 'engine ready')!.nodeId!;
    const api = await connectSocket(path.join(data, 'engine.sock'));
    await api.call('target.subsystem.create', { nqn, allowAnyHost: true });
    api.close();
    killGroup(first.proc, 'SIGTERM');
    expect((await first.exited).code).toBe(0);
    expect(fs.readdirSync(data).filter((f) => f.startsWith('branchsan.db'))).toEqual([
      'branchsan.db',
    ]);

    // Not a byte free: no room for the 32 KiB DB-shm, nor for a lock file's 2 lines.
    const filler = fillFs(dir);
    const stored = sha256(path.join(data, 'branchsan.db'));
    // Before the fix: exit 1, "disk I/O error", "A disk is full or failing".
    const full = await serve(data);
    const warning = logLines(full).find((l) => /opened exclusively/.test(l.msg ?? ''));
    expect(warning?.level).toBe('warn');
    expect(warning?.msg).toContain(`The disk that holds the data directory ${data} is full`);
    expect(warning?.msg).toContain('`branchsan diagnostics --offline`, sqlite3) cannot read it');
    expect(warning?.msg).toContain(`Free space in ${data}`);
    expect(warning?.msg).toContain('then restart the engine');

    // The lock took no data block: a link to "PID SOCKET".
    const lock = fs.readlinkSync(path.join(data, 'engine.lock'));
    expect(lock.split(' ')).toEqual([
      expect.stringMatching(/^\d+$/),
      path.join(data, 'engine.sock'),
    ]);
    const status = await start(['status', '--data', data], 20_000).exited;
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain('1 subsystem, 0 namespaces');
    // a bundle read from the directory says why it has no database, without waiting on it
    const out = path.join(tempDir(), 'diag.tar.gz');
    const diag = await start(['diagnostics', '--data', data, '--offline', '--out', out], 30_000)
      .exited;
    expect(diag.code, diag.stderr).toBe(0);
    const problems = execFileSync('tar', ['-xzOf', out, '--wildcards', '*/problems.txt'], {
      encoding: 'utf8',
    });
    expect(problems).toContain('is held exclusively by the running engine');
    const c = await connectSocket(path.join(data, 'engine.sock'));
    expect((await c.call('system.status', {})).nodeId).toBe(nodeId);
    expect((await c.call('target.config', {})).subsystems.map((s) => s.nqn)).toEqual([nqn]);
    c.close();

    killGroup(full.proc, 'SIGTERM');
    const stopped = await full.exited;
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stdout).toContain('"msg":"engine stopped"');
    expect(stopped.stdout).not.toContain('stop failed');
    expect(hasEngineLock(data)).toBe(false);
    expect(sha256(path.join(data, 'branchsan.db'))).toBe(stored);

    // Space freed: an ordinary start, no warning, everything there.
    fs.rmSync(filler);
    const again = await serve(data);
    expect(logLines(again).some((l) => /opened exclusively/.test(l.msg ?? ''))).toBe(false);
    expect(again.stdout()).not.toContain('previous run did not stop cleanly');
    const a = await connectSocket(path.join(data, 'engine.sock'));
    expect((await a.call('system.status', {})).nodeId).toBe(nodeId);
    expect((await a.call('target.config', {})).subsystems.map((s) => s.nqn)).toEqual([nqn]);
    a.close();
    await stopAndCheck(again, data);
  }, 90_000);

  it('a change the full disk refuses is undone; one whose undo fails says what is served', async () => {
    const dir = smallFs('branchsan-dbfull-');
    const data = path.join(dir, 'data');
    const vol = path.join(tempDir(), 'vol.img'); // the volume lives on another disk
    const nqn = 'nqn.2026-11.io.branchsan.test:undo';
    const p = await serve(data);
    const api = await connectSocket(path.join(data, 'engine.sock'));
    try {
      await api.call('target.subsystem.create', { nqn, allowAnyHost: true });
      await api.call('target.namespace.add', {
        nqn,
        backend: { kind: 'file', path: vol, createSizeBytes: 1 << 20 },
      });
      fillFs(dir);

      // undone: the live target is as stored
      const refused = await apiError(
        api.call('target.subsystem.create', { nqn: `${nqn}-2`, allowAnyHost: true }),
      );
      expect(refused.message).toMatch(/^The change was not saved \(.*\); nothing was changed\.$/);
      expect(refused.data?.hint).toBe(
        "Check free space on the data directory's filesystem, then retry.",
      );

      // The undo of a removal reopens the volume's file, which was deleted meanwhile (the
      // engine held it open): the namespace is gone from the live target, not from the
      // stored configuration. Before: "nothing was changed".
      fs.rmSync(vol);
      const split = await apiError(api.call('target.namespace.remove', { nqn, nsid: 1 }));
      expect(split.message).toMatch(
        /^The change was not saved \(.*\), and undoing it on the live target failed \(.*\): the target may serve something other than the stored configuration until the engine restarts, which serves the stored one\.$/,
      );
      expect(split.data?.hint).toBe(
        "Free space on the data directory's filesystem, then restart the engine service, check the configuration (target.config), and make the change again.",
      );
      const cfg = await api.call('target.config', {});
      expect(cfg.subsystems.map((s) => s.nqn)).toEqual([nqn]);
      expect(cfg.subsystems[0]!.namespaces.map((n) => n.nsid)).toEqual([1]);
    } finally {
      api.close();
    }
    killGroup(p.proc, 'SIGTERM');
    expect((await p.exited).code).toBe(0);
  }, 90_000);

  it('keeps changes made once space is freed, even when the engine is then killed', async () => {
    const dir = smallFs('branchsan-dbfull-');
    const data = path.join(dir, 'data');
    const first = await serve(data);
    killGroup(first.proc, 'SIGTERM');
    expect((await first.exited).code).toBe(0);
    const filler = fillFs(dir);
    const full = await serve(data);
    expect(logLines(full).some((l) => /opened exclusively/.test(l.msg ?? ''))).toBe(true);
    // Space freed while it runs: changes work again (their WAL index is in its memory)...
    fs.rmSync(filler);
    const nqn = 'nqn.2026-11.io.branchsan.test:db-full-later';
    const c = await connectSocket(path.join(data, 'engine.sock'));
    await c.call('target.subsystem.create', { nqn });
    c.close();
    // ...and survive a crash: the next open rebuilds the index from DB-wal.
    killGroup(full.proc, 'SIGKILL');
    await full.exited;
    expect(fs.statSync(path.join(data, 'branchsan.db-wal')).size).toBeGreaterThan(0);
    const again = await serve(data);
    expect(logLines(again).some((l) => /opened exclusively/.test(l.msg ?? ''))).toBe(false);
    const a = await connectSocket(path.join(data, 'engine.sock'));
    expect((await a.call('target.config', {})).subsystems.map((s) => s.nqn)).toEqual([nqn]);
    a.close();
    await stopAndCheck(again, data);
  }, 90_000);
});
