/**
 * The node's SQLite database: WAL mode, foreign keys on, versioned migrations, an
 * integrity check at open. Everything the target is built from lives here.
 */
import Database from 'better-sqlite3';
import { randomUUID } from 'node:crypto';
import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { errorCode } from '../util/errors.js';
import { MIGRATIONS, type Migration } from './migrations.js';

export type Db = Database.Database;

export class DatabaseError extends Error {
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
    this.name = 'DatabaseError';
  }
}

export interface OpenedDb {
  db: Db;
  schemaVersion: number;
  /** Migrations applied by this open (empty when the schema was current). */
  applied: string[];
  /**
   * Opened with locking_mode EXCLUSIVE because the data directory's file system is
   * full: no other process can read the database while this connection is open, and
   * writes fail (SQLITE_FULL) until space is freed. The caller should say so.
   */
  exclusiveBecauseFull: boolean;
}

/**
 * Opens (creating if needed) and migrates the database at path.
 *
 * In WAL mode every connection shares the WAL index through DB-shm, a 32 KiB file that
 * SQLite creates on the first read and removes at a clean close. On a full disk it
 * cannot be created or sized (SQLITE_IOERR_SHMSIZE; SQLITE_FULL for a new database),
 * so a node stopped cleanly could not start again, and the NVMe/TCP target it serves
 * (whose storage may be on another disk) stayed down. Opened with locking_mode
 * EXCLUSIVE, SQLite keeps the WAL index in memory instead, needs no DB-shm, and reads
 * everything stored: so on a full disk it is opened that way, and reported to the caller.
 */
export function openDatabase(
  path: string,
  migrations: readonly Migration[] = MIGRATIONS,
): OpenedDb {
  try {
    return openWith(path, migrations, false);
  } catch (err) {
    if (!diskFull(err, path)) throw err;
  }
  try {
    return openWith(path, migrations, true);
  } catch (err) {
    if (!diskFull(err, path)) throw err;
    throw new DatabaseError(
      `Cannot open the database ${path}: the file system that holds it is full (${errorCode(err) || (err as Error).message}).`,
      `Free space in ${dirname(path)} (\`df -h ${dirname(path)}\` shows how much is left), then start the engine again.`,
    );
  }
}

function openWith(path: string, migrations: readonly Migration[], exclusive: boolean): OpenedDb {
  let db: Db;
  try {
    db = new Database(path);
  } catch (err) {
    if (diskFull(err, path)) throw err; // openDatabase says it
    throw new DatabaseError(
      `Cannot open the database ${path}: ${(err as Error).message}`,
      'Check that the data directory exists and is writable by the BranchSAN service.',
    );
  }
  try {
    // First: taking the exclusive lock waits for a reader (`branchsan diagnostics`) to finish.
    db.pragma('busy_timeout = 5000');
    // Before the first read, which is when SQLite decides where the WAL index lives.
    if (exclusive) db.pragma('locking_mode = EXCLUSIVE');
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL'); // configuration must survive a power cut once acknowledged
    db.pragma('foreign_keys = ON');
    checkIntegrity(db, path);
    const { version, applied } = migrate(db, migrations);
    return { db, schemaVersion: version, applied, exclusiveBecauseFull: exclusive };
  } catch (err) {
    db.close();
    const code = errorCode(err);
    if (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB') {
      throw new DatabaseError(
        `The database ${path} is damaged (${(err as Error).message}).`,
        'Restore it from a backup or the peer node; the engine will not start on a damaged database.',
      );
    }
    throw err;
  }
}

/**
 * Whether opening failed for want of space: SQLite's own codes for it, or (as it says
 * SQLITE_CANTOPEN or another I/O error when it cannot create DB-shm or DB-wal) a file
 * system with no free blocks or inodes left.
 */
function diskFull(err: unknown, path: string): boolean {
  const code = errorCode(err);
  if (code === 'SQLITE_IOERR_SHMSIZE' || code.startsWith('SQLITE_FULL')) return true;
  if (!code.startsWith('SQLITE_CANTOPEN') && !code.startsWith('SQLITE_IOERR')) return false;
  if (path === '' || path === ':memory:') return false;
  try {
    const st = statfsSync(dirname(path));
    // files is 0 where the file system has no inode limit (btrfs): never "out of inodes"
    return (st.blocks > 0 && st.bavail === 0) || (st.files > 0 && st.ffree === 0);
  } catch {
    return false;
  }
}

function checkIntegrity(db: Db, path: string): void {
  const rows = db.pragma('quick_check') as { quick_check: string }[];
  const bad = rows.map((r) => r.quick_check).filter((r) => r !== 'ok');
  if (bad.length > 0) {
    throw new DatabaseError(
      `The database ${path} failed its integrity check: ${bad.slice(0, 3).join('; ')}`,
      'Restore it from a backup or the peer node; the engine will not start on a damaged database.',
    );
  }
}

function migrate(db: Db, migrations: readonly Migration[]): { version: number; applied: string[] } {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`);
  const row = db.prepare('SELECT MAX(version) AS v FROM schema_migrations').get() as {
    v: number | null;
  };
  const current = row.v ?? 0;
  if (current > migrations.length) {
    throw new DatabaseError(
      `The database schema is version ${current}, newer than this engine understands (${migrations.length}).`,
      'Install the BranchSAN version that wrote this database, or a newer one.',
    );
  }
  const applied: string[] = [];
  const record = db.prepare(
    'INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)',
  );
  for (let v = current + 1; v <= migrations.length; v++) {
    const m = migrations[v - 1]!;
    db.transaction(() => {
      db.exec(m.sql);
      record.run(v, m.name, Date.now());
    })();
    applied.push(m.name);
  }
  return { version: migrations.length, applied };
}

export function getSetting(db: Db, key: string): string | undefined {
  const row = db.prepare('SELECT value FROM settings WHERE key = ?').get(key) as
    { value: string } | undefined;
  return row?.value;
}

export function setSetting(db: Db, key: string, value: string): void {
  db.prepare(
    'INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
  ).run(key, value);
}

/** The node's stable identity, created at first start. */
export function ensureNodeId(db: Db): string {
  const existing = getSetting(db, 'node.id');
  if (existing) return existing;
  const id = randomUUID();
  setSetting(db, 'node.id', id);
  return id;
}

/**
 * Runs fn with commits that skip the fsync (synchronous NORMAL; in WAL mode a power cut
 * may undo them, never corrupt the file): for writes worth no disk flush each, such as
 * metric samples and retention's deletes, which the next round does again. The next
 * commit with synchronous FULL (every configuration change) syncs the log anyway.
 */
export function withoutSync<T>(db: Db, fn: () => T): T {
  const sync = db.pragma('synchronous', { simple: true }) as number;
  db.pragma('synchronous = NORMAL');
  try {
    return fn();
  } finally {
    db.pragma(`synchronous = ${sync}`);
  }
}

export type Severity = 'info' | 'warning' | 'error' | 'critical';

export function recordEvent(
  db: Db,
  ev: { type: string; severity: Severity; message: string; data?: unknown },
  opts: { notify?: boolean } = {},
): number {
  const ts = Date.now();
  const r = db
    .prepare('INSERT INTO events (ts, severity, type, message, data) VALUES (?, ?, ?, ?, ?)')
    .run(
      ts,
      ev.severity,
      ev.type,
      ev.message,
      ev.data === undefined ? null : JSON.stringify(ev.data),
    );
  const id = Number(r.lastInsertRowid);
  // notify: false stores an event already delivered while the database refused it
  if (opts.notify !== false)
    notifyListeners(db, {
      id,
      ts,
      severity: ev.severity,
      type: ev.type,
      message: ev.message,
      data: ev.data,
    });
  return id;
}

/**
 * Hands an event the database refused to store (a full disk) to the listeners all
 * the same, so the alert about that very disk still reaches syslog, mail and webhook.
 * It carries id 0 and data.unstored = true: it is not in the event log and has no
 * number to look up.
 */
export function announceUnstoredEvent(
  db: Db,
  ev: { type: string; severity: Severity; message: string; data?: Record<string, unknown> },
): RecordedEvent {
  const rec: RecordedEvent = {
    id: 0,
    ts: Date.now(),
    severity: ev.severity,
    type: ev.type,
    message: ev.message,
    data: { ...ev.data, unstored: true },
  };
  notifyListeners(db, rec);
  return rec;
}

function notifyListeners(db: Db, rec: RecordedEvent): void {
  for (const fn of eventListeners.get(db) ?? []) {
    try {
      fn(rec);
    } catch {
      // a listener (UI push, syslog, mail) must never fail the change that recorded the event
    }
  }
}

export interface RecordedEvent {
  id: number;
  ts: number;
  severity: Severity;
  type: string;
  message: string;
  data?: unknown;
}

const eventListeners = new WeakMap<Db, Set<(ev: RecordedEvent) => void>>();

/** Calls fn after every recordEvent on db (events/ pushes and delivers them); returns the unsubscribe. */
export function onEventRecorded(db: Db, fn: (ev: RecordedEvent) => void): () => void {
  let set = eventListeners.get(db);
  if (!set) eventListeners.set(db, (set = new Set()));
  set.add(fn);
  return () => set.delete(fn);
}

/**
 * Opens an existing database for reading only, without migrating (diagnostics of a
 * stopped or running engine). In WAL mode a reader never waits for the engine, except
 * when the engine holds the database exclusively (opened on a full disk, see
 * openDatabase): then this says so at once, rather than every later read waiting out
 * the busy timeout and failing with "database is locked".
 */
export function openDatabaseReadOnly(path: string): Db {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    db.pragma('busy_timeout = 500'); // a WAL recovery in progress is brief
    db.prepare('SELECT count(*) FROM sqlite_master').get();
    db.pragma('busy_timeout = 5000');
    return db;
  } catch (err) {
    db.close();
    if (!errorCode(err).startsWith('SQLITE_BUSY')) throw err;
    throw new DatabaseError(
      `The database ${path} is held exclusively by the running engine: its disk was full when the engine started.`,
      `Ask the running engine instead (\`branchsan diagnostics\` without --offline), or free space in ${dirname(path)} and restart the engine.`,
    );
  }
}
