/**
 * Queries and retention over the `events` table. Events are written by recordEvent
 * (persistence/db.ts) from anywhere in the engine; this reads them back in pages and
 * keeps the table bounded by age and by count. A page is read through a DbReader when
 * one is given: a filter that matches few of a large log's rows walks the table, which
 * must not stop the engine's thread (see db-reader.ts).
 */
import { SEVERITIES, type EventRecord, type Severity } from '../../../contract/events.js';
import type { Db } from '../persistence/db.js';
import type { DbReader } from '../persistence/db-reader.js';

export interface EventQuery {
  since?: number;
  until?: number;
  severity?: Severity;
  type?: string;
  limit: number;
  before?: number;
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

  /** Deletes events older than maxAgeMs and beyond the newest maxCount; returns how many. */
  prune(now: number, maxAgeMs: number, maxCount: number): number {
    let n = this.db.prepare('DELETE FROM events WHERE ts < ?').run(now - maxAgeMs).changes;
    const edge = this.db
      .prepare('SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?')
      .get(maxCount) as { id: number } | undefined;
    if (edge) n += this.db.prepare('DELETE FROM events WHERE id <= ?').run(edge.id).changes;
    return n;
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
