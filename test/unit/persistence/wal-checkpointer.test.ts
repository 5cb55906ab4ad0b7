/**
 * WalCheckpointer: the WAL is checkpointed on a thread of its own, never by the
 * engine's connection while that thread runs; the log stays bounded through long runs
 * of commits, and when the thread is gone; and no committed row is lost at a close.
 * A kill -9 in the middle of writes: test/integration/wal-checkpoint-crash.test.ts.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Worker } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { quietEventsService } from '../events/quiet-service.js';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import {
  WalCheckpointer,
  type CheckpointerOptions,
} from '../../../engine/src/persistence/wal-checkpointer.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';
import { until } from '../../helpers/wait.js';
import { heldExclusively } from '../../helpers/sqlite-full.js';

const MiB = 1 << 20;
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function fileDb(): { db: Db; file: string } {
  const file = path.join(tempDir(), 'branchsan.db');
  const { db } = openDatabase(file);
  cleanups.push(() => db.open && db.close());
  db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)');
  return { db, file };
}

function checkpointerOf(db: Db, opts: CheckpointerOptions) {
  const lines: { level: string; msg: string }[] = [];
  const log = createLogger({ sink: { write: (l) => lines.push(JSON.parse(l)) } });
  const cp = new WalCheckpointer(db, log, opts);
  cleanups.unshift(() => cp.close());
  return { cp, lines };
}

/** One transaction of 64 rows of 4000 bytes: about 64 pages, 256 KiB of WAL. */
function writeBatch(db: Db, fill: number): void {
  const ins = db.prepare('INSERT INTO blobs (b) VALUES (?)');
  const row = Buffer.alloc(4000, fill);
  db.transaction(() => {
    for (let i = 0; i < 64; i++) ins.run(row);
  })();
}

const walBytes = (file: string) => fs.statSync(`${file}-wal`, { throwIfNoEntry: false })?.size ?? 0;

/**
 * The log's frame count and how many of them are in the database file, from the WAL
 * index's header in DB-shm (SQLite's wal.c: mxFrame at byte 16, nBackfill at byte 96,
 * in the machine's byte order), read without a checkpoint.
 */
function walIndex(file: string): { mxFrame: number; nBackfill: number } {
  const head = Buffer.alloc(100);
  const fd = fs.openSync(`${file}-shm`, 'r');
  try {
    fs.readSync(fd, head, 0, 100, 0);
  } finally {
    fs.closeSync(fd);
  }
  const u32 = (at: number) =>
    os.endianness() === 'LE' ? head.readUInt32LE(at) : head.readUInt32BE(at);
  return { mxFrame: u32(16), nBackfill: u32(96) };
}

describe('WalCheckpointer', () => {
  it('the engine’s connection does not checkpoint: the worker does, and the log starts over', async () => {
    const { db, file } = fileDb();
    // no checkpoint on a timer: only those asked for by room()
    const { cp } = checkpointerOf(db, { thresholdBytes: MiB, tickMs: 3_600_000 });
    expect(await cp.start()).toBe('worker');
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
    for (let i = 0; i < 48; i++) writeBatch(db, i); // ~12 MiB, three times SQLite's 1000 pages
    const before = walIndex(file);
    expect(before.mxFrame).toBeGreaterThan(3000);
    expect(before.nBackfill).toBe(0); // SQLite's own checkpoint would have run at 1000 frames
    expect(walBytes(file)).toBeGreaterThan(12 * MiB);

    await cp.room(); // past the threshold: waits for the worker's checkpoint
    expect(cp.checkpoints).toBe(1);
    expect(cp.last).toMatchObject({ busy: 0, log: before.mxFrame, checkpointed: before.mxFrame });
    expect(walIndex(file).nBackfill).toBe(before.mxFrame);

    writeBatch(db, 99); // starts the log over, and cuts DB-wal to the threshold
    expect(walIndex(file).mxFrame).toBeLessThan(100);
    expect(walBytes(file)).toBe(MiB);
    await cp.room(); // within the threshold: no checkpoint
    expect(cp.checkpoints).toBe(1);
    expect(db.prepare('SELECT count(*) FROM blobs').pluck().get()).toBe(49 * 64);
  });

  it('50 MiB in 200 commits, room() between them: DB-wal stays within a few times the threshold', async () => {
    const { db, file } = fileDb();
    const { cp } = checkpointerOf(db, { thresholdBytes: MiB, tickMs: 50 });
    expect(await cp.start()).toBe('worker');
    let most = 0;
    for (let i = 0; i < 200; i++) {
      writeBatch(db, i);
      most = Math.max(most, walBytes(file));
      await nextTurn();
      await cp.room();
    }
    expect(most).toBeLessThan(3 * MiB);
    expect(cp.checkpoints).toBeGreaterThanOrEqual(40);
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
    expect(db.prepare('SELECT count(*) FROM blobs').pluck().get()).toBe(200 * 64);
  });

  it('event retention of 100k events in the events service: DB-wal stays bounded', async () => {
    const { db, file } = fileDb();
    const ins = db.prepare(
      'INSERT INTO events (ts, severity, type, message, data) VALUES (?, ?, ?, ?, ?)',
    );
    db.transaction(() => {
      for (let i = 1; i <= 100_000; i++)
        // stamped in 1970: past any retention
        ins.run(i, 'info', 'target.host.connected', `host ${i} connected`, `{"i":${i}}`);
    })();
    db.pragma('wal_checkpoint(TRUNCATE)');
    const { cp } = checkpointerOf(db, { thresholdBytes: MiB, tickMs: 3_600_000 });
    expect(await cp.start()).toBe('worker');
    let most = 0;
    let asked = 0;
    const room = cp.room.bind(cp);
    cp.room = () => {
      asked++;
      most = Math.max(most, walBytes(file));
      return room();
    };
    const service = quietEventsService(db, { checkpointer: cp });
    cleanups.unshift(() => service.stop());
    await service.prune();
    expect(db.prepare('SELECT count(*) FROM events').pluck().get()).toBe(0);
    expect(asked).toBeGreaterThanOrEqual(49); // between every two of its 50 batches
    expect(most).toBeLessThan(3 * MiB);
    expect(cp.checkpoints).toBeGreaterThan(0);
  });

  it('the worker killed: the engine’s connection checkpoints again, says so, and DB-wal stays bounded', async () => {
    const { db, file } = fileDb();
    const { cp, lines } = checkpointerOf(db, { thresholdBytes: MiB, tickMs: 50, restartMs: null });
    expect(await cp.start()).toBe('worker');
    await (cp as unknown as { worker: Worker }).worker.terminate();
    await until(() => cp.state === 'engine');
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(1000);
    expect(lines.find((l) => /checkpoint thread stopped/.test(l.msg))?.level).toBe('warn');
    let most = 0;
    for (let i = 0; i < 80; i++) {
      writeBatch(db, i); // 20 MiB
      most = Math.max(most, walBytes(file));
      await cp.room(); // nothing to wait for
    }
    expect(most).toBeLessThan(2 * 4 * MiB); // SQLite's 1000 pages, and a commit's worth
    expect(db.prepare('SELECT count(*) FROM blobs').pluck().get()).toBe(80 * 64);
  });

  it('a new worker takes over after one was killed, and after its own failure later again', async () => {
    const { db } = fileDb();
    const { cp, lines } = checkpointerOf(db, { thresholdBytes: MiB, tickMs: 50, restartMs: 100 });
    expect(await cp.start()).toBe('worker');
    for (let round = 1; round <= 2; round++) {
      await (cp as unknown as { worker: Worker }).worker.terminate();
      await until(() => cp.state === 'engine');
      expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(1000);
      await until(() => cp.state === 'worker'); // 100 ms, then 200 ms later
      expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
      expect(lines.filter((l) => /runs again/.test(l.msg))).toHaveLength(round);
    }
    const warned = lines.filter((l) => /checkpoint thread stopped/.test(l.msg)).map((l) => l.msg);
    expect(warned[0]).toMatch(/new thread is started in 0 s/);
  });

  it('a worker that cannot open the file: the engine’s connection keeps checkpointing', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'branchsan.db');
    const db = heldExclusively(file);
    cleanups.push(() => db.close());
    db.prepare("INSERT INTO settings (key, value) VALUES ('k', 'v')").run();
    const { cp, lines } = checkpointerOf(db, {});
    expect(await cp.start()).toBe('engine');
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(1000);
    expect(lines.find((l) => /could not start/.test(l.msg))?.level).toBe('warn');
    await cp.room(); // resolves: nothing to wait for
  });

  it('a reader holding an old snapshot: said once the log passes the limit, and when it is over', async () => {
    const { db, file } = fileDb();
    const { cp, lines } = checkpointerOf(db, {
      thresholdBytes: MiB,
      tickMs: 20,
      stuckBytes: 4 * MiB,
    });
    expect(await cp.start()).toBe('worker');
    writeBatch(db, 0);
    const reader = new Database(file, { readonly: true });
    cleanups.push(() => reader.close());
    reader.exec('BEGIN');
    reader.prepare('SELECT count(*) FROM blobs').get(); // its snapshot, held until COMMIT
    for (let i = 1; i <= 24; i++) writeBatch(db, i); // ~6 MiB that no checkpoint can copy
    await until(() => lines.some((l) => /keeps a read transaction open/.test(l.msg)));
    expect(cp.last!.checkpointed).toBeLessThan(cp.last!.log);
    reader.exec('COMMIT');
    await until(() => lines.some((l) => /checkpointed again/.test(l.msg)));
    writeBatch(db, 25); // starts the log over
    expect(walBytes(file)).toBe(MiB);
    expect(lines.filter((l) => /keeps a read transaction open/.test(l.msg))).toHaveLength(1);
  });

  it('closed, then the engine’s connection: DB-wal is gone and the file alone holds every row', async () => {
    const { db, file } = fileDb();
    const { cp } = checkpointerOf(db, { thresholdBytes: MiB, tickMs: 20 });
    expect(await cp.start()).toBe('worker');
    for (let i = 0; i < 40; i++) {
      writeBatch(db, i);
      if (i % 8 === 0) await cp.room();
    }
    const last = db.prepare('SELECT max(id) FROM blobs').pluck().get();
    expect(cp.checkpoints).toBeGreaterThan(0);
    await cp.close();
    expect(cp.state).toBe('closed');
    expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(1000);
    db.close();
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    expect(fs.existsSync(`${file}-shm`)).toBe(false);
    // the database file by itself, without any log beside it
    const copy = path.join(tempDir(), 'copy.db');
    fs.copyFileSync(file, copy);
    const again = new Database(copy, { readonly: true });
    cleanups.push(() => again.close());
    expect(again.prepare('SELECT count(*), max(id) FROM blobs').raw().get()).toEqual([
      40 * 64,
      last,
    ]);
    expect(again.pragma('quick_check', { simple: true })).toBe('ok');
  });
});
