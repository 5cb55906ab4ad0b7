/**
 * How many bytes some tables of a database file take, measured off the event loop.
 * SQLite's dbstat reads every page of the file to say (about 50 ms per 45 MB here),
 * too long for the engine's own thread, which serves NVMe/TCP. So a worker thread
 * opens the file read-only and measures in one read transaction: the named tables
 * with their indexes, and the whole file's pages in use, from the same snapshot.
 *
 * The file must be one another connection can read beside the engine's (WAL mode);
 * a database opened exclusively (a full data disk), or in memory, cannot be measured,
 * and the promise rejects.
 */
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

export interface TableBytes {
  /** Bytes of the named tables' b-trees and their indexes' (pages × page size). */
  tables: number;
  /** Bytes of the whole file in use (pages not on the free list × page size). */
  used: number;
}

/** CommonJS, run with eval: no loader needed whether the engine runs compiled or from source. */
const MEASURE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.sqlite);
let db;
try {
  db = new Database(workerData.file, { readonly: true, fileMustExist: true, timeout: 1000 });
  const measure = db.transaction(() => {
    const p = (name) => db.pragma(name, { simple: true });
    const used = (p('page_count') - p('freelist_count')) * p('page_size');
    const marks = workerData.tables.map(() => '?').join(',');
    const tables = db
      .prepare('SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN ' +
        '(SELECT name FROM sqlite_schema WHERE tbl_name IN (' + marks + '))')
      .pluck()
      .get(...workerData.tables);
    return { ok: true, tables, used };
  });
  parentPort.postMessage(measure());
} catch (err) {
  parentPort.postMessage({ ok: false, message: String((err && err.message) || err) });
} finally {
  if (db) db.close();
}
`;

export interface Measurement {
  result: Promise<TableBytes>;
  /** Stops the worker (engine shutdown); the result then rejects. */
  cancel(): void;
}

export function measureTableBytes(file: string, tables: readonly string[]): Measurement {
  const sqlite = createRequire(import.meta.url).resolve('better-sqlite3');
  const worker = new Worker(MEASURE, { eval: true, workerData: { file, tables, sqlite } });
  const result = (async () => {
    const [reply] = (await Promise.race([
      once(worker, 'message'),
      once(worker, 'exit').then(([code]) => {
        throw new Error(`the measuring thread exited (code ${String(code)}) without an answer`);
      }),
    ])) as [{ ok: true; tables: number; used: number } | { ok: false; message: string }];
    if (!reply.ok) throw new Error(reply.message);
    return { tables: reply.tables, used: reply.used };
  })();
  result.catch(() => undefined).finally(() => void worker.terminate());
  return { result, cancel: () => void worker.terminate() };
}
