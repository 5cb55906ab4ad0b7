/**
 * The `alerts` table: raise → (acknowledge) → clear. A partial unique index on
 * (rule, subject) WHERE cleared_at IS NULL makes "one active alert per rule and
 * subject" a property of the database, not only of the rule engine.
 */
import type { Alert, ClearedWhy, Severity } from '../../../contract/events.js';
import type { Db } from '../persistence/db.js';

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

  /** Deletes cleared alerts older than maxAgeMs (Infinity: none); active ones stay whatever their age. */
  prune(now: number, maxAgeMs: number): number {
    return this.db
      .prepare('DELETE FROM alerts WHERE cleared_at IS NOT NULL AND cleared_at < ?')
      .run(now - maxAgeMs).changes;
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
