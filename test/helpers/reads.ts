/**
 * How many bytes a piece of work read from files, without timing it: Linux counts every
 * byte this process takes through read(2) and pread(2) (/proc/self/io `rchar`), page
 * cache hits included. A SQLite connection opened just before (its page cache empty)
 * reads each page it touches once, so a few index seeks read a few pages and a walk of
 * a table reads all of it.
 */
import fs from 'node:fs';
import Database from 'better-sqlite3';
import type { Db } from '../../engine/src/persistence/db.js';

/** Whether this system counts reads (/proc/self/io); tests that need it skip elsewhere. */
export const readsCounted = fs.existsSync('/proc/self/io');

/** Bytes read by fn (awaited), as the kernel counted them. */
export async function bytesReadBy(fn: () => unknown): Promise<number> {
  const before = rchar();
  await fn();
  return rchar() - before;
}

/**
 * A fresh connection to an existing database with nothing in its page cache, opened
 * without the integrity check at open (openDatabase's, which reads every page).
 */
export function coldConnection(file: string): Db {
  const db = new Database(file, { fileMustExist: true });
  db.pragma('journal_mode = WAL');
  return db;
}

function rchar(): number {
  const line = fs
    .readFileSync('/proc/self/io', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('rchar:'));
  return Number(line!.slice('rchar:'.length));
}
