/**
 * The `alerts` table: raise → (acknowledge) → clear. A partial unique index on
 * (rule, subject) WHERE cleared_at IS NULL makes "one active alert per rule and
 * subject" a property of the database, not only of the rule engine.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import type { Alert, ClearedWhy, Severity } from '../../../contract/events.js';
import { withoutSync, type Db } from '../persistence/db.js';
import type { DbReader } from '../persistence/db-reader.js';
import { PRUNE_BATCH_ROWS, type PruneOptions } from './event-store.js';

interface AlertRow {
  id: number;
  rule: string;
  subject: string;
  severity: Severity;
  title: string;
  message: string;
  raised_at: number;
  cleared_at: number | null;
  acked_at: number | null;
  acked_by: string | null;
  cleared_why: ClearedWhy | null;
}

const COLUMNS =
  'id, rule, subject, severity, title, message, raised_at, cleared_at, acked_at, acked_by, cleared_why';

export interface NewAlert {
  rule: string;
  subject: string;
  severity: Severity;
  title: string;
  message: string;
  data?: unknown;
}

export class AlertStore {
  constructor(private readonly db: Db) {}

  active(rule?: string): Alert[] {
    const rows = (
      rule === undefined
        ? this.db
            .prepare(`SELECT ${COLUMNS} FROM alerts WHERE cleared_at IS NULL ORDER BY id`)
            .all()
        : this.db
            .prepare(
              `SELECT ${COLUMNS} FROM alerts WHERE cleared_at IS NULL AND rule = ? ORDER BY id`,
            )
            .all(rule)
    ) as AlertRow[];
    return rows.map(toAlert);
  }

  /** Newest raised first; closed ones only (`active` false): the last closed first. */
  list(active: boolean | undefined, limit: number): Alert[] {
    const filter =
      active === undefined
        ? 'ORDER BY id DESC'
        : active
          ? 'WHERE cleared_at IS NULL ORDER BY id DESC'
          : 'WHERE cleared_at IS NOT NULL ORDER BY cleared_at DESC, id DESC';
    const rows = this.db
      .prepare(`SELECT ${COLUMNS} FROM alerts ${filter} LIMIT ?`)
      .all(limit) as AlertRow[];
    return rows.map(toAlert);
  }

  get(id: number): Alert | undefined {
    const row = this.db.prepare(`SELECT ${COLUMNS} FROM alerts WHERE id = ?`).get(id) as
      AlertRow | undefined;
    return row && toAlert(row);
  }

  /** Whether this rule ever raised an alert for this subject (incidents are raised once). */
  everRaised(rule: string, subject: string): boolean {
    return (
      this.db
        .prepare('SELECT 1 FROM alerts WHERE rule = ? AND subject = ? LIMIT 1')
        .get(rule, subject) !== undefined
    );
  }

  raise(a: NewAlert, now: number): Alert {
    const r = this.db
      .prepare(
        'INSERT INTO alerts (rule, subject, severity, title, message, data, raised_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
      )
      .run(
        a.rule,
        a.subject,
        a.severity,
        a.title,
        a.message,
        a.data === undefined ? null : JSON.stringify(a.data),
        now,
      );
    return this.get(Number(r.lastInsertRowid))!;
  }

  /** Clears an active alert, saying why; returns it, or undefined when it was not active. */
  clear(id: number, now: number, why: ClearedWhy): Alert | undefined {
    const r = this.db
      .prepare(
        'UPDATE alerts SET cleared_at = ?, cleared_why = ? WHERE id = ? AND cleared_at IS NULL',
      )
      .run(now, why, id);
    return r.changes ? this.get(id) : undefined;
  }

  /**
   * Records who acknowledged it; a second acknowledgement keeps the first. `alongside`
   * (the audit row) is written in the same transaction: both are stored, or neither.
   */
  ack(id: number, by: string, now: number, alongside?: () => void): Alert | undefined {
    this.db.transaction(() => {
      alongside?.();
      this.db
        .prepare('UPDATE alerts SET acked_at = ?, acked_by = ? WHERE id = ? AND acked_at IS NULL')
        .run(now, by, id);
    })();
    return this.get(id);
  }

  /**
   * Deletes closed alerts cleared before now − maxAgeMs (Infinity: none by age), then
   * those beyond the newest maxClosed closed ones, the longest closed first; active ones
   * stay whatever their age. Resolves to how many. Without the count limit, a flapping
   * condition (a host reconnecting every minute) stored an alert per flap for the whole
   * retention time, years of them, while its events were held to events.maxEvents. A
   * batch of at most batchRows rows at a time, each its own transaction, with the
   * engine's thread free between them (as EventStore.prune); the rows are counted through
   * the reader when there is one, and not at all when the ids say they are few.
   */
  async prune(
    now: number,
    maxAgeMs: number,
    maxClosed: number,
    opts: PruneOptions & { reader?: DbReader } = {},
  ): Promise<number> {
    const batch = opts.batchRows ?? PRUNE_BATCH_ROWS;
    const pause = opts.pause ?? (() => nextTurn());
    const stopped = opts.stopped ?? (() => false);
    let deleted = 0;
    const step = (limit: number, before: number): number => {
      const n = withoutSync(
        this.db,
        () =>
          this.db
            .prepare(
              `DELETE FROM alerts WHERE id IN (SELECT id FROM alerts
               WHERE cleared_at IS NOT NULL AND cleared_at < ? ORDER BY cleared_at, id LIMIT ?)`,
            )
            .run(before, limit).changes,
      );
      deleted += n;
      return n;
    };
    // by age, through the cleared_at index
    while (step(batch, now - maxAgeMs) === batch) {
      await pause();
      if (stopped()) return deleted;
    }
    // by count: ids only grow, so they span at least as many rows as there are
    const span = this.db.prepare('SELECT MAX(id) - MIN(id) + 1 FROM alerts').pluck().get() as
      number | null;
    if (span === null || span <= maxClosed) return deleted;
    const sql = 'SELECT COUNT(*) AS n FROM alerts WHERE cleared_at IS NOT NULL';
    const [row] = opts.reader
      ? await opts.reader.all<{ n: number }>(sql)
      : (this.db.prepare(sql).all() as { n: number }[]);
    let surplus = Math.max(0, row!.n - maxClosed);
    while (surplus > 0 && !stopped()) {
      await pause();
      if (stopped()) break;
      const n = step(Math.min(surplus, batch), Infinity);
      if (n === 0) break;
      surplus -= n;
    }
    return deleted;
  }
}

function toAlert(r: AlertRow): Alert {
  return {
    id: r.id,
    rule: r.rule,
    subject: r.subject,
    severity: r.severity,
    title: r.title,
    message: r.message,
    raisedAt: r.raised_at,
    clearedAt: r.cleared_at,
    ackedAt: r.acked_at,
    ackedBy: r.acked_by,
    ...(r.cleared_why !== null ? { clearedWhy: r.cleared_why } : {}),
  };
}
