/**
 * Queries and retention over the `events` table. Events are written by recordEvent
 * (persistence/db.ts) from anywhere in the engine; this reads them back in pages and
 * keeps the table bounded by age and by count, a batch at a time. A page is read
 * through a DbReader when one is given: a filter that matches few of a large log's rows
 * walks the table, which must not stop the engine's thread (see db-reader.ts).
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { SEVERITIES, type EventRecord, type Severity } from '../../../contract/events.js';
import { withoutSync, type Db } from '../persistence/db.js';
import type { DbReader } from '../persistence/db-reader.js';

export interface EventQuery {
  since?: number;
  until?: number;
  severity?: Severity;
  type?: string;
  limit: number;
  before?: number;
}

/** Rows one retention transaction deletes at most (a few ms of the engine's thread). */
export const PRUNE_BATCH_ROWS = 2000;

export interface PruneOptions {
  /** Rows deleted per transaction (default PRUNE_BATCH_ROWS). */
  batchRows?: number;
  /** Awaited between batches, the engine's thread free meanwhile (default: the loop's next turn). */
  pause?: () => Promise<void>;
  /** Asked between batches: true ends the prune there (the engine is stopping). */
  stopped?: () => boolean;
}

interface EventRow {
  id: number;
  ts: number;
  severity: Severity;
  type: string;
  message: string;
  data: string | null;
}

export class EventStore {
  constructor(
    private readonly db: Db,
    private readonly reader?: DbReader,
  ) {}

  /** Newest first; nextBefore pages to older events. */
  async list(q: EventQuery): Promise<{ events: EventRecord[]; nextBefore: number | null }> {
    const where: string[] = [];
    const args: (string | number)[] = [];
    const add = (cond: string, ...vals: (string | number)[]) => {
      where.push(cond);
      args.push(...vals);
    };
    if (q.since !== undefined) add('ts >= ?', q.since);
    if (q.until !== undefined) add('ts < ?', q.until);
    if (q.before !== undefined) add('id < ?', q.before);
    if (q.severity) {
      const allowed = SEVERITIES.slice(SEVERITIES.indexOf(q.severity));
      add(`severity IN (${allowed.map(() => '?').join(',')})`, ...allowed);
    }
    if (q.type?.endsWith('.*')) {
      // a prefix compare, so that '_' or '%' in a type cannot widen it the way LIKE would
      const prefix = q.type.slice(0, -1);
      add('substr(type, 1, ?) = ?', prefix.length, prefix);
    } else if (q.type) {
      add('type = ?', q.type);
    }
    const sql =
      'SELECT id, ts, severity, type, message, data FROM events' +
      (where.length ? ` WHERE ${where.join(' AND ')}` : '') +
      ' ORDER BY id DESC LIMIT ?';
    // one extra row tells whether an older page exists
    const rows = this.reader
      ? await this.reader.all<EventRow>(sql, [...args, q.limit + 1])
      : (this.db.prepare(sql).all(...args, q.limit + 1) as EventRow[]);
    const more = rows.length > q.limit;
    const page = rows.slice(0, q.limit).map(toRecord);
    return { events: page, nextBefore: more ? page[page.length - 1]!.id : null };
  }

  /** The newest events of one type since a moment, oldest first. */
  ofType(type: string, since: number): EventRecord[] {
    const rows = this.db
      .prepare(
        'SELECT id, ts, severity, type, message, data FROM events WHERE type = ? AND ts >= ? ORDER BY id',
      )
      .all(type, since) as EventRow[];
    return rows.map(toRecord);
  }

  /** Events after the one numbered `id` (0: all), oldest first. */
  after(id: number): EventRecord[] {
    const rows = this.db
      .prepare('SELECT id, ts, severity, type, message, data FROM events WHERE id > ? ORDER BY id')
      .all(id) as EventRow[];
    return rows.map(toRecord);
  }

  /** The newest event's number, or 0 when the log is empty: one index seek. */
  newestId(): number {
    return (this.db.prepare('SELECT MAX(id) FROM events').pluck().get() as number | null) ?? 0;
  }

  /** The newest event's stamp (ms since epoch), or null when the log is empty: one index seek. */
  newestTs(): number | null {
    return this.db.prepare('SELECT MAX(ts) FROM events').pluck().get() as number | null;
  }

  /**
   * Deletes events older than maxAgeMs (Infinity: none by age) and beyond the newest
   * maxCount; resolves to how many. A batch of at most batchRows rows at a time, each its
   * own transaction, with the engine's thread free between them: lowering maxEvents from
   * two million to a thousand once deleted everything in one statement that held the
   * thread 2.5 s (hosts' NVMe/TCP keep-alive is 5 s).
   *
   * The count rule never walks the newest maxCount rows to find where they end (that
   * took 130 ms at two million events, even when nothing was to go). Ids only grow (a new
   * row's id is one above the largest), so the ids span MAX(id) − MIN(id) + 1 rows at
   * most: within maxCount, nothing is beyond it (two index seeks, the usual case). Past
   * it, the ids are not enough: an event deleted by age out of order (a clock stepped
   * back) leaves a gap, and a cut at MAX(id) − maxCount would then take events within
   * the limit. So the rows are counted, on the reader's thread when there is one, and
   * the surplus goes from the oldest end. Counted after the age rule's deletes, and
   * nothing but new (newer) events arrives meanwhile, so what goes was beyond the limit.
   */
  async prune(
    now: number,
    maxAgeMs: number,
    maxCount: number,
    opts: PruneOptions = {},
  ): Promise<number> {
    const batch = opts.batchRows ?? PRUNE_BATCH_ROWS;
    const pause = opts.pause ?? (() => nextTurn());
    const stopped = opts.stopped ?? (() => false);
    let deleted = 0;
    const step = (sql: string, ...args: number[]): number => {
      const n = withoutSync(this.db, () => this.db.prepare(sql).run(...args).changes);
      deleted += n;
      return n;
    };
    // by age: the oldest stamps first, through the ts index
    while (
      step(
        'DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? ORDER BY ts LIMIT ?)',
        now - maxAgeMs,
        batch,
      ) === batch
    ) {
      await pause();
      if (stopped()) return deleted;
    }
    // by count
    let surplus = await this.beyond(maxCount);
    while (surplus > 0 && !stopped()) {
      await pause();
      if (stopped()) break;
      const edge = this.db
        .prepare('SELECT id FROM events ORDER BY id LIMIT 1 OFFSET ?')
        .pluck()
        .get(Math.min(surplus, batch) - 1) as number | undefined;
      if (edge === undefined) break;
      surplus -= step('DELETE FROM events WHERE id <= ?', edge);
    }
    return deleted;
  }

  /** How many events are beyond the newest maxCount (0 without counting when the ids say so). */
  private async beyond(maxCount: number): Promise<number> {
    const edge = (dir: 'ASC' | 'DESC') =>
      this.db.prepare(`SELECT id FROM events ORDER BY id ${dir} LIMIT 1`).pluck().get() as
        number | undefined;
    const oldest = edge('ASC');
    const newest = edge('DESC');
    if (oldest === undefined || newest === undefined || newest - oldest + 1 <= maxCount) return 0;
    const sql = 'SELECT COUNT(*) AS n FROM events';
    const [row] = this.reader
      ? await this.reader.all<{ n: number }>(sql)
      : (this.db.prepare(sql).all() as { n: number }[]);
    return Math.max(0, row!.n - maxCount);
  }
}

function toRecord(r: EventRow): EventRecord {
  const rec: EventRecord = {
    id: r.id,
    ts: r.ts,
    severity: r.severity,
    type: r.type,
    message: r.message,
  };
  if (r.data !== null) {
    try {
      rec.data = JSON.parse(r.data);
    } catch {
      rec.data = r.data; // written by an older engine as plain text
    }
  }
  return rec;
}
