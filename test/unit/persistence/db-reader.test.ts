/**
 * DbReader: long reads of the engine's database on a thread of their own, so that the
 * engine's thread (which serves NVMe/TCP) keeps turning while they run; and the
 * engine's own connection when no second connection can read the file.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EventStore } from '../../../engine/src/events/event-store.js';
import { openDatabase, recordEvent, type Db } from '../../../engine/src/persistence/db.js';
import { DbReader, ReaderUnavailable } from '../../../engine/src/persistence/db-reader.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';
import { heldExclusively } from '../../helpers/sqlite-full.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

function fileDb(): Db {
  const { db } = openDatabase(path.join(tempDir(), 'branchsan.db'));
  cleanups.push(() => db.close());
  return db;
}

function readerOf(db: Db, ...rest: [offThread?: boolean, idleMs?: number]) {
  const lines: { level: string; msg: string }[] = [];
  const log = createLogger({ sink: { write: (l) => lines.push(JSON.parse(l)) } });
  const reader = new DbReader(db, log, ...rest);
  cleanups.unshift(() => reader.close());
  return { reader, lines };
}

/** Fills the event log: n events, one in 1000 of type `rare`. */
function fill(db: Db, n: number): void {
  const ins = db.prepare(
    'INSERT INTO events (ts, severity, type, message, data) VALUES (?, ?, ?, ?, ?)',
  );
  db.transaction(() => {
    for (let i = 1; i <= n; i++)
      ins.run(
        i * 1000,
        i % 3 ? 'info' : 'warning',
        i % 1000 ? 'target.host.connected' : 'rare.kind',
        `host ${i} connected to controller ${i % 7}`,
        JSON.stringify({ i }),
      );
  })();
}

/** How many turns the event loop made while `work` was awaited. */
async function turnsDuring<T>(work: () => Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let spinning = true;
  const spin = () => {
    if (!spinning) return;
    turns++;
    setImmediate(spin);
  };
  setImmediate(spin);
  try {
    const value = await work();
    return { value, turns };
  } finally {
    spinning = false;
  }
}

const RARE = { limit: 100, type: 'rare.kind' } as const;

describe('DbReader', () => {
  it('lists events on its own connection, not the engine’s, with the same answer', async () => {
    const db = fileDb();
    fill(db, 60_000);
    const { reader } = readerOf(db);
    const onEngine: string[] = [];
    const prepare = db.prepare.bind(db);
    vi.spyOn(db, 'prepare').mockImplementation(((sql: string) => {
      if (/FROM events/.test(sql)) onEngine.push(sql);
      return prepare(sql);
    }) as typeof db.prepare);
    const threaded = await new EventStore(db, reader).list(RARE);
    const again = await new EventStore(db, reader).list(RARE); // the thread stays for it
    expect(onEngine).toEqual([]);
    const inline = await new EventStore(db).list(RARE);
    expect(onEngine).toHaveLength(1);
    expect(threaded).toEqual(inline);
    expect(again).toEqual(inline);
    expect(threaded.events).toHaveLength(60);
  });

  it('the event loop turns while a long query runs', async () => {
    const db = fileDb();
    const { reader } = readerOf(db);
    const SLOW =
      'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT count(*) AS n FROM c';
    const threaded = await turnsDuring(() => reader.all(SLOW));
    expect(threaded.value).toEqual([{ n: 3_000_000 }]);
    expect(threaded.turns).toBeGreaterThan(0);
    const inline = await turnsDuring(async () => db.prepare(SLOW).all());
    expect(inline.turns).toBe(0); // on the engine's connection nothing else runs meanwhile
  });

  it('sees every event the engine committed before the query', async () => {
    const db = fileDb();
    const { reader } = readerOf(db);
    const store = new EventStore(db, reader);
    expect((await store.list({ limit: 10 })).events).toEqual([]);
    for (let i = 0; i < 5; i++) {
      const id = recordEvent(db, { type: 'a.b', severity: 'info', message: `m${i}` });
      const page = await store.list({ limit: 10 });
      expect(page.events[0]!.id).toBe(id);
      expect(page.events).toHaveLength(i + 1);
    }
  });

  it('in memory, or held exclusively: reads on the engine connection; no measuring', async () => {
    const { db: mem } = openDatabase(':memory:');
    cleanups.push(() => mem.close());
    recordEvent(mem, { type: 'a.b', severity: 'info', message: 'm' });
    const onMem = readerOf(mem).reader;
    expect(await onMem.all('SELECT type FROM events')).toEqual([{ type: 'a.b' }]);
    await expect(onMem.measure(['events'])).rejects.toThrow(/in memory/);

    const db = fileDb();
    recordEvent(db, { type: 'c.d', severity: 'info', message: 'm' });
    const held = readerOf(db, false).reader;
    const r = await turnsDuring(() => held.all('SELECT type FROM events'));
    expect(r.value).toEqual([{ type: 'c.d' }]);
    expect(r.turns).toBe(0); // no thread was asked
    await expect(held.measure(['events'])).rejects.toThrow(ReaderUnavailable);
    await expect(held.measure(['events'])).rejects.toThrow(/exclusively/);
  });

  it('a file a second connection cannot read: says so once, then reads on the engine connection', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'branchsan.db');
    const db = heldExclusively(file);
    cleanups.push(() => db.close());
    recordEvent(db, { type: 'e.f', severity: 'info', message: 'm' });
    const { reader, lines } = readerOf(db); // told it may use a thread: it cannot
    expect(await reader.all('SELECT type FROM events')).toEqual([{ type: 'e.f' }]);
    expect(await reader.all('SELECT count(*) AS n FROM events')).toEqual([{ n: 1 }]);
    const told = lines.filter((l) => /cannot be read beside the engine/.test(l.msg));
    expect(told).toHaveLength(1);
    await expect(reader.measure(['events'])).rejects.toThrow(/could not open it/);
  });

  it('a thread that dies fails its query with a clear error; the next query gets a new thread', async () => {
    const db = fileDb();
    fill(db, 2000);
    const { reader } = readerOf(db);
    expect(await reader.all('SELECT count(*) AS n FROM events')).toEqual([{ n: 2000 }]);
    const thread = (reader as unknown as { worker: Worker }).worker;
    const pending = reader.all('SELECT * FROM events');
    void thread.terminate();
    await expect(pending).rejects.toThrow(/reader thread stopped .* Try again/);
    expect(await reader.all('SELECT count(*) AS n FROM events')).toEqual([{ n: 2000 }]);
  });

  it('an SQL error is the query’s own: it rejects and the thread serves on', async () => {
    const db = fileDb();
    const { reader } = readerOf(db);
    await expect(reader.all('SELECT nope FROM events')).rejects.toThrow(/no such column/);
    expect(await reader.all('SELECT count(*) AS n FROM events')).toEqual([{ n: 0 }]);
  });

  it('stops its thread when idle and starts one again for the next query', async () => {
    const db = fileDb();
    const { reader } = readerOf(db, true, 20);
    const threadOf = () => (reader as unknown as { worker: Worker | null }).worker;
    await reader.all('SELECT 1 AS one');
    const first = threadOf();
    expect(first).not.toBeNull();
    await new Promise<void>((resolve) => first!.once('exit', () => resolve()));
    expect(threadOf()).toBeNull();
    expect(await reader.all('SELECT 2 AS two')).toEqual([{ two: 2 }]);
    expect(threadOf()).not.toBe(first);
  });

  it('measures tables and the whole file from one snapshot', async () => {
    const db = fileDb();
    fill(db, 5000);
    const { reader } = readerOf(db);
    const m = await reader.measure(['events']);
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    const pages = db.pragma('page_count', { simple: true }) as number;
    expect(m.used).toBeLessThanOrEqual(pages * pageSize);
    expect(m.tables).toBeGreaterThan(5000 * 40); // every row is at least that long
    expect(m.tables).toBeLessThan(m.used);
  });

  it('has closed its connection when close resolves: the last close checkpoints the WAL away', async () => {
    const file = path.join(tempDir(), 'branchsan.db');
    const { db } = openDatabase(file);
    fill(db, 2000);
    const reader = new DbReader(db);
    expect(await reader.all('SELECT count(*) AS n FROM events')).toEqual([{ n: 2000 }]);
    fill(db, 2000); // committed while the thread's connection is open: it reads the WAL too
    expect(await reader.all('SELECT count(*) AS n FROM events')).toEqual([{ n: 4000 }]);
    await reader.close();
    db.close();
    // before: the thread's connection outlived the engine's, which left both behind
    expect(fs.existsSync(`${file}-wal`)).toBe(false);
    expect(fs.existsSync(`${file}-shm`)).toBe(false);
  });

  it('close fails what is waiting, with a reason a client can show', async () => {
    const db = fileDb();
    fill(db, 2000);
    const { reader } = readerOf(db);
    const pending = reader.all('SELECT * FROM events');
    const closing = reader.close();
    await expect(pending).rejects.toThrow(/engine is stopping/);
    await closing;
  });
});
