/**
 * A real "disk full" for one SQLite connection: no page may be added to the database,
 * and the last pages of the given tables are filled until a row no longer fits, so the
 * next write to them fails with SQLITE_FULL as it would on a full disk.
 */
import { expect } from 'vitest';
import Database from 'better-sqlite3';
import { openDatabase, type Db } from '../../engine/src/persistence/db.js';

/** Fills `db` up; `pads` are inserts of one small row each into the tables to fill. */
export function fillDatabase(db: Db, pads: string[]): void {
  db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
  for (const sql of pads) {
    const pad = db.prepare(sql);
    for (;;) {
      try {
        pad.run();
      } catch (err) {
        expect((err as { code?: string }).code).toBe('SQLITE_FULL');
        break;
      }
    }
  }
}

/** Room again (SQLite's default page limit). */
export function freeDatabase(db: Db): void {
  db.pragma('max_page_count = 1073741823');
}

/**
 * A database at `file` (made with the engine's schema) held as the engine holds it after
 * a start on a full disk (openDatabase): one connection, exclusively locked, WAL. Its
 * first write takes the exclusive lock.
 */
export function heldExclusively(file: string): Db {
  openDatabase(file).db.close();
  const db = new Database(file);
  db.pragma('locking_mode = EXCLUSIVE');
  db.pragma('journal_mode = WAL');
  return db;
}
