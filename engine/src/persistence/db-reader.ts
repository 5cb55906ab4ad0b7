/**
 * Reads of the engine's database that can take long, run on a thread of their own.
 *
 * The engine's one thread also serves NVMe/TCP, so a query that walks a large table
 * stops every host's I/O while it runs: listing events of a rare type on an event log
 * of a million rows took 100–330 ms here (a full scan, or a sort of one type's rows),
 * ten times that at the ten million `events.maxEvents` allows; measuring the history's
 * share of the file (SQLite's dbstat) reads every page, about 50 ms per 45 MB.
 *
 * One worker thread opens the file read-only beside the engine's connection (WAL mode:
 * it sees every transaction the engine committed before the query was sent) and runs
 * the queries in turn, each in a snapshot of its own. It starts with the first query
 * and stops after IDLE_MS without one, so an idle engine holds no second connection.
 *
 * A database another connection cannot read (in memory, or opened exclusively because
 * its disk was full at start, see db.ts) has no reader thread: `all` then runs on the
 * engine's connection, as before, and `measure` rejects. So does a file the thread
 * could not open: the first such failure is logged and the engine's connection serves
 * from then on.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../util/log.js';
import type { Db } from './db.js';

export interface TableBytes {
  /** Bytes of the named tables' b-trees and their indexes' (pages × page size). */
  tables: number;
  /** Bytes of the whole file in use (pages not on the free list × page size). */
  used: number;
}

export type SqlArg = string | number | bigint | null;

/** The reader thread stops after this long without a query. */
export const IDLE_MS = 60_000;

/** CommonJS, run with eval: no loader needed whether the engine runs compiled or from source. */
const READER = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.sqlite);
let db;
function open() {
  if (!db) {
    const d = new Database(workerData.file, { readonly: true, fileMustExist: true, timeout: 1000 });
    try {
      d.prepare('SELECT count(*) FROM sqlite_schema').get(); // a file held exclusively fails here
    } catch (err) {
      d.close();
      throw err;
    }
    db = d;
  }
  return db;
}
function measure(tables) {
  return open().transaction(() => {
    const p = (name) => db.pragma(name, { simple: true });
    const used = (p('page_count') - p('freelist_count')) * p('page_size');
    const marks = tables.map(() => '?').join(',');
    const bytes = db
      .prepare('SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN ' +
        '(SELECT name FROM sqlite_schema WHERE tbl_name IN (' + marks + '))')
      .pluck()
      .get(...tables);
    return { tables: bytes, used };
  })();
}
parentPort.on('message', (m) => {
  let opened = Boolean(db);
  try {
    open();
    opened = true;
    const value = m.op === 'measure' ? measure(m.tables) : db.prepare(m.sql).all(...m.args);
    parentPort.postMessage({ id: m.id, ok: true, value });
  } catch (err) {
    parentPort.postMessage({ id: m.id, ok: false, cannotOpen: !opened,
      message: String((err && err.message) || err) });
  }
});
`;

type Request = { op: 'all'; sql: string; args: SqlArg[] } | { op: 'measure'; tables: string[] };
type Reply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; cannotOpen: boolean; message: string };

interface Pending {
  request: Request;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

/** The database file cannot be read beside the engine's connection. */
export class ReaderUnavailable extends Error {}

export class DbReader {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private idleTimer?: NodeJS.Timeout;
  private unavailable: string | null;
  private closed = false;

  /**
   * @param offThread false for a database the engine holds exclusively (a full disk at start).
   */
  constructor(
    private readonly db: Db,
    private readonly log?: Logger,
    offThread = true,
    private readonly idleMs = IDLE_MS,
  ) {
    const file = db.name;
    this.unavailable =
      !file || file === ':memory:'
        ? 'the database is in memory'
        : offThread
          ? null
          : 'the engine holds the database exclusively (its disk was full at start)';
  }

  /** Every row of a read-only query; on the engine's connection when no thread can read. */
  async all<T>(sql: string, args: readonly SqlArg[] = []): Promise<T[]> {
    if (this.unavailable === null && !this.closed) {
      try {
        return (await this.send({ op: 'all', sql, args: [...args] })) as T[];
      } catch (err) {
        if (!(err instanceof ReaderUnavailable)) throw err;
      }
    }
    return this.db.prepare(sql).all(...args) as T[];
  }

  /**
   * How many bytes the named tables (with their indexes) and the whole file take, from
   * one snapshot. Never on the engine's connection: rejects when no thread can read.
   */
  measure(tables: readonly string[]): Promise<TableBytes> {
    if (this.unavailable !== null) return Promise.reject(new ReaderUnavailable(this.unavailable));
    return this.send({ op: 'measure', tables: [...tables] }) as Promise<TableBytes>;
  }

  /**
   * Stops the thread; queries still waiting reject. Resolves once its connection is
   * closed: only the last connection to close checkpoints the WAL into the file and
   * removes DB-wal and DB-shm, so the engine's must close after this one.
   */
  async close(): Promise<void> {
    this.closed = true;
    await this.stop(new Error('The engine is stopping: the database read was not finished.'));
  }

  private send(request: Request): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('The database reader is closed.'));
    const worker = this.worker ?? this.start();
    clearTimeout(this.idleTimer);
    const id = this.nextId++;
    worker.ref(); // a query in flight keeps a command-line process alive
    return new Promise((resolve, reject) => {
      this.pending.set(id, { request, resolve, reject });
      worker.postMessage({ id, ...request });
    });
  }

  private start(): Worker {
    const sqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    const worker = new Worker(READER, { eval: true, workerData: { file: this.db.name, sqlite } });
    worker.on('message', (reply: Reply) => this.answer(reply));
    // An uncaught error ends the thread; its exit rejects what was waiting.
    worker.on('error', (err) => this.log?.warn('the database reader thread failed', { err }));
    worker.on('exit', (code) => {
      if (this.worker !== worker) return;
      this.worker = null;
      this.failAll(new Error(`The database reader thread stopped (code ${code}). Try again.`));
    });
    this.worker = worker;
    return worker;
  }

  private answer(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    if (reply.ok) p.resolve(reply.value);
    else if (reply.cannotOpen) {
      if (this.unavailable === null) {
        this.unavailable = `a second connection could not open it: ${reply.message}`;
        this.log?.warn(
          'The database cannot be read beside the engine: long reads (event lists) run on the ' +
            'engine thread and the metrics history is not measured until the engine restarts.',
          { reason: reply.message },
        );
      }
      p.reject(new ReaderUnavailable(this.unavailable));
      // the thread is of no use: those behind this one go the same way
      void this.stop(new ReaderUnavailable(this.unavailable));
    } else p.reject(new Error(reply.message));
    if (this.pending.size === 0 && this.worker) {
      this.worker.unref();
      this.idleTimer = setTimeout(() => void this.stop(new Error('idle')), this.idleMs);
      this.idleTimer.unref();
    }
  }

  private async stop(why: Error): Promise<void> {
    clearTimeout(this.idleTimer);
    const worker = this.worker;
    this.worker = null;
    this.failAll(why);
    if (worker) await worker.terminate(); // its connection closes as the thread ends
  }

  private failAll(err: Error): void {
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) p.reject(err);
  }
}
