/**
 * WAL checkpoints of the engine's database, on a thread of their own.
 *
 * SQLite checkpoints a WAL-mode database inside the commit that takes the WAL past
 * wal_autocheckpoint pages, on the thread that commits: the engine's, which also
 * serves NVMe/TCP. During mass deletes (event retention, the metric history's cap)
 * such checkpoints held that thread 60–500 ms on a 2-vCPU VM, a latency spike for
 * every host.
 *
 * A worker thread opens the file beside the engine's connection and, whenever DB-wal
 * passes THRESHOLD_BYTES (a stat every TICK_MS), runs a PASSIVE checkpoint: it copies
 * committed pages into the file without ever taking the write lock, so the engine
 * never waits for it. Once the worker runs, the engine's connection stops
 * checkpointing (wal_autocheckpoint = 0) and cuts DB-wal back to THRESHOLD_BYTES when
 * the log starts over (journal_size_limit), so the file grows past THRESHOLD_BYTES only
 * while the log holds more than that. Should the worker stop (a crash, a failed open),
 * the engine's connection checkpoints automatically again and the log says so; once a
 * worker has run, a new one is started after RESTART_MS, doubling with each failure.
 *
 * SQLite starts the log over only when a write transaction begins after a checkpoint
 * copied all of it. A writer that commits batch after batch (retention) begins the next
 * one before the worker's checkpoint ends, so the log would grow for the whole run; such
 * a writer awaits room() between batches, which waits for a checkpoint when DB-wal is
 * past the threshold. Never a RESTART or TRUNCATE checkpoint: they take the write lock,
 * and an engine transaction that has read and then writes meanwhile fails with
 * SQLITE_BUSY instead of waiting.
 *
 * No checkpoint can copy past the snapshot of a reader that keeps a transaction open
 * (sqlite3, a backup tool): DB-wal then grows with every change until it ends, whoever
 * checkpoints. Past STUCK_BYTES this is logged, with what to do.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../util/log.js';
import type { Db } from './db.js';

/** DB-wal's size that calls for a checkpoint: SQLite's own default, 1000 pages of 4 KiB. */
export const THRESHOLD_BYTES = 4 << 20;
/** How often the worker looks at DB-wal's size. */
export const TICK_MS = 1000;
/** DB-wal's size at which a checkpoint that cannot finish is logged. */
export const STUCK_BYTES = 64 << 20;
/** room() waits at most this long for the worker, so that a slow disk cannot hold up retention. */
const ROOM_WAIT_MS = 5000;
/**
 * After a worker that ran stops, a new one is started this long after, then twice as
 * long after each further failure, up to RESTART_MAX_MS: a crash once in a while
 * costs the engine's thread its checkpoints for half a minute, not until a restart.
 */
export const RESTART_MS = 30_000;
const RESTART_MAX_MS = 10 * 60_000;

/** A checkpoint's outcome: SQLite's frame counts, and DB-wal's size after it. */
export interface CheckpointResult {
  /** 1 when another checkpoint was running (nothing done). */
  busy: number;
  /** Frames in the log. */
  log: number;
  /** Frames of the log now in the database file. */
  checkpointed: number;
  walBytes: number;
}

export interface CheckpointerOptions {
  thresholdBytes?: number;
  tickMs?: number;
  stuckBytes?: number;
  /** The first delay before a stopped worker is started again (RESTART_MS); null: never. */
  restartMs?: number | null;
}

/** CommonJS, run with eval: no loader needed whether the engine runs compiled or from source. */
const CHECKPOINTER = `
const fs = require('node:fs');
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.sqlite);
const { file, thresholdBytes, tickMs } = workerData;
const walBytes = () => {
  try {
    return fs.statSync(file + '-wal').size;
  } catch {
    return 0;
  }
};
let db;
try {
  db = new Database(file, { fileMustExist: true, timeout: 0 });
  db.pragma('synchronous = FULL');
  const mode = db.pragma('journal_mode', { simple: true }); // a file held exclusively fails here
  if (mode !== 'wal') throw new Error('the database is not in WAL mode (' + mode + ')');
} catch (err) {
  if (db) db.close();
  parentPort.postMessage({ kind: 'failed', message: String((err && err.message) || err) });
  db = undefined;
}
function checkpoint(id) {
  try {
    const [r] = db.pragma('wal_checkpoint(PASSIVE)');
    parentPort.postMessage({ kind: 'checkpoint', id, ...r, walBytes: walBytes() });
  } catch (err) {
    parentPort.postMessage({ kind: 'error', id, message: String((err && err.message) || err) });
  }
}
if (db) {
  parentPort.on('message', (m) => checkpoint(m.id));
  setInterval(() => {
    if (walBytes() > thresholdBytes) checkpoint(0);
  }, tickMs);
  parentPort.postMessage({ kind: 'ready' });
}
`;

/**
 * What a writer of many transactions awaits between two: the event loop's next turn (the
 * engine's thread free), then room() when there is a checkpointer, so that the next
 * transaction starts the WAL over instead of it growing for the whole run.
 */
export async function betweenBatches(cp?: Pick<WalCheckpointer, 'room'>): Promise<void> {
  await nextTurn();
  await cp?.room();
}

type Message =
  | { kind: 'ready' }
  | { kind: 'failed'; message: string }
  | ({ kind: 'checkpoint'; id: number } & CheckpointResult)
  | { kind: 'error'; id: number; message: string };

/** What the engine's connection does about checkpoints. */
export type CheckpointState =
  /** the worker is opening the file; the engine's connection checkpoints meanwhile */
  | 'starting'
  /** the worker checkpoints; the engine's connection does not */
  | 'worker'
  /** the worker stopped or could not start; the engine's connection checkpoints */
  | 'engine'
  /** closed: the engine's connection checkpoints, last of all when it closes */
  | 'closed';

export class WalCheckpointer {
  private worker: Worker | null = null;
  private stateNow: CheckpointState = 'starting';
  private readonly autocheckpoint: number;
  private readonly threshold: number;
  private readonly tick: number;
  private readonly stuckBytes: number;
  private started?: Promise<CheckpointState>;
  private markStarted?: (s: CheckpointState) => void;
  private waiting: Promise<void> | null = null;
  private roomDone?: () => void;
  private nextId = 1;
  private stuck = false;
  private lastError = '';
  private readonly restartMs: number | null;
  /** A worker has run (said it was ready) at least once: only then is one started again. */
  private ran = false;
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  /** Checkpoints the worker ran (for tests and measurements). */
  checkpoints = 0;
  /** The last one's outcome. */
  last: CheckpointResult | null = null;

  constructor(
    private readonly db: Db,
    private readonly log?: Logger,
    opts: CheckpointerOptions = {},
  ) {
    this.autocheckpoint = db.pragma('wal_autocheckpoint', { simple: true }) as number;
    this.threshold = opts.thresholdBytes ?? THRESHOLD_BYTES;
    this.tick = opts.tickMs ?? TICK_MS;
    this.stuckBytes = opts.stuckBytes ?? STUCK_BYTES;
    this.restartMs = opts.restartMs === undefined ? RESTART_MS : opts.restartMs;
  }

  get state(): CheckpointState {
    return this.stateNow;
  }

  /**
   * Starts the worker; resolves once it checkpoints for the engine ('worker') or could
   * not ('engine'). Until then the engine's connection checkpoints as before.
   */
  start(): Promise<CheckpointState> {
    const file = this.db.name;
    if (!file || file === ':memory:') {
      this.stateNow = 'engine'; // no other connection can see it, nor needs to
      return (this.started ??= Promise.resolve(this.stateNow));
    }
    this.started ??= new Promise<CheckpointState>((resolve) => {
      this.markStarted = resolve;
      try {
        this.spawn(file);
      } catch (err) {
        this.fallBack((err as Error).message); // say it, rather than reject a start nobody awaits
      }
    });
    return this.started;
  }

  private spawn(file: string): void {
    const sqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    const worker = new Worker(CHECKPOINTER, {
      eval: true,
      workerData: { file, sqlite, thresholdBytes: this.threshold, tickMs: this.tick },
    });
    worker.unref(); // its timer must not keep a command-line process alive
    worker.on('message', (m: Message) => this.hear(m));
    worker.on('error', (err) => (this.lastError = err.message));
    worker.on('exit', (code) => {
      if (this.worker !== worker) return;
      this.worker = null;
      this.fallBack(this.lastError || `it exited with code ${code}`);
    });
    this.worker = worker;
  }

  /**
   * For a writer that commits many transactions in a row: resolves at once while DB-wal
   * is within the threshold, else after the worker's next checkpoint, so that the next
   * transaction starts the log over (see the top of this file).
   */
  room(): Promise<void> {
    const worker = this.worker;
    if (this.stateNow !== 'worker' || !worker) return Promise.resolve();
    if (this.waiting) return this.waiting;
    if (walSize(this.db.name) <= this.threshold) return Promise.resolve();
    this.waiting = new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.roomDone?.(), ROOM_WAIT_MS);
      timer.unref();
      this.roomDone = () => {
        clearTimeout(timer);
        this.waiting = null;
        this.roomDone = undefined;
        resolve();
      };
      worker.postMessage({ id: this.nextId++ });
    });
    return this.waiting;
  }

  /**
   * Stops the worker and hands checkpoints back to the engine's connection. Resolves
   * once the worker's connection is closed: only the last connection to close
   * checkpoints the whole WAL into the file and removes DB-wal, so the engine's must
   * close after this one.
   */
  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    this.handBack();
    this.stateNow = 'closed';
    this.markStarted?.('closed');
    this.roomDone?.();
    if (worker) await worker.terminate(); // its connection closes as the thread ends
  }

  private hear(m: Message): void {
    switch (m.kind) {
      case 'ready':
        if (this.stateNow !== 'starting' || !this.db.open) return;
        this.db.pragma('wal_autocheckpoint = 0');
        this.db.pragma(`journal_size_limit = ${this.threshold}`);
        this.stateNow = 'worker';
        this.markStarted?.('worker');
        if (this.ran) this.log?.info('The WAL checkpoint thread runs again.');
        this.ran = true;
        return;
      case 'failed':
        this.lastError = `it could not open the database: ${m.message}`;
        return; // the thread ends; its exit falls back
      case 'error':
        if (m.message !== this.lastError)
          this.log?.warn('A WAL checkpoint of the database failed; the next one retries.', {
            reason: m.message,
          });
        this.lastError = m.message;
        break;
      case 'checkpoint':
        this.checkpoints++;
        this.last = {
          busy: m.busy,
          log: m.log,
          checkpointed: m.checkpointed,
          walBytes: m.walBytes,
        };
        this.lastError = '';
        this.watchStuck(this.last);
        break;
    }
    if (m.id !== 0) this.roomDone?.();
  }

  /** A log that checkpoints cannot empty: said once when it passes stuckBytes, and when it is over. */
  private watchStuck(r: CheckpointResult): void {
    const held = r.checkpointed < r.log;
    if (!this.stuck && held && r.walBytes > this.stuckBytes) {
      this.stuck = true;
      this.log?.warn(
        `The database's write-ahead log (${this.db.name}-wal) has grown to ${Math.round(r.walBytes / 2 ** 20)} MiB: ` +
          'another connection keeps a read transaction open, and no checkpoint can copy changes made since ' +
          'into the database file. It grows with every change until that transaction ends: close the program ' +
          'that reads the database (sqlite3, a backup tool, `branchsan diagnostics --offline`).',
        { walBytes: r.walBytes, frames: r.log, checkpointed: r.checkpointed },
      );
    } else if (this.stuck && !held) {
      this.stuck = false;
      this.log?.info('The database write-ahead log is checkpointed again.', {
        walBytes: r.walBytes,
      });
    }
  }

  /**
   * The worker is gone while the engine runs on: its connection checkpoints again, and
   * once a worker has run, a new one is started after a delay (restartMs, doubling).
   */
  private fallBack(why: string): void {
    const was = this.stateNow;
    if (was === 'closed') return;
    this.handBack();
    this.stateNow = 'engine';
    this.markStarted?.('engine');
    this.roomDone?.();
    const retryMs =
      this.ran && this.restartMs !== null
        ? Math.min(this.restartMs * 2 ** this.restarts, RESTART_MAX_MS)
        : null;
    const pause =
      'the engine checkpoints the database itself, which can pause NVMe/TCP I/O for tens ' +
      'to hundreds of ms while many events or metrics are deleted';
    this.log?.warn(
      (was === 'worker'
        ? `The WAL checkpoint thread stopped: ${pause}`
        : `The WAL checkpoint thread could not start: ${pause}`) +
        (retryMs === null
          ? this.ran
            ? '. Restart the engine to move checkpoints off its thread again.'
            : '.'
          : `. A new thread is started in ${Math.round(retryMs / 1000)} s.`),
      { reason: why },
    );
    if (retryMs === null) return;
    this.restarts++;
    this.restartTimer = setTimeout(() => this.respawn(), retryMs);
    this.restartTimer.unref();
  }

  private respawn(): void {
    this.restartTimer = null;
    if (this.stateNow !== 'engine' || !this.db.open) return;
    this.stateNow = 'starting';
    this.lastError = '';
    try {
      this.spawn(this.db.name);
    } catch (err) {
      this.fallBack((err as Error).message);
    }
  }

  private handBack(): void {
    if (this.stateNow === 'worker' && this.db.open)
      this.db.pragma(`wal_autocheckpoint = ${this.autocheckpoint}`);
  }
}

function walSize(file: string): number {
  try {
    return fs.statSync(`${file}-wal`).size;
  } catch {
    return 0;
  }
}
