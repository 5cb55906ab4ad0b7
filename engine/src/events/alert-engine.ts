/**
 * Turns what the rules say holds now into the alert lifecycle: a new condition is
 * raised once, a condition that ended is cleared, a change of severity clears the
 * old alert and raises the new one (the dashboard and mail show the escalation).
 * Every raise and clear is also recorded as an event, so it reaches the event log,
 * syslog, mail and webhooks through the one path every event takes.
 */
import type { Alert } from '../../../contract/events.js';
import { recordEvent, type Db } from '../persistence/db.js';
import type { Logger } from '../util/log.js';
import { AlertStore } from './alert-store.js';
import type { AlertInputs, AlertThresholds, Condition, Rule } from './rules.js';

export interface AlertListener {
  raised(a: Alert): void;
  cleared(a: Alert): void;
  acknowledged(a: Alert): void;
}

export class AlertEngine {
  readonly store: AlertStore;

  constructor(
    private readonly db: Db,
    private readonly rules: readonly Rule[],
    private readonly thresholds: () => AlertThresholds,
    private readonly listener: AlertListener,
    private readonly log?: Logger,
  ) {
    this.store = new AlertStore(db);
  }

  /** One pass of every rule over one snapshot. A rule that throws is skipped, not fatal. */
  evaluate(inputs: AlertInputs, now: number): { raised: Alert[]; cleared: Alert[] } {
    const raised: Alert[] = [];
    const cleared: Alert[] = [];
    const thresholds = this.thresholds();
    for (const rule of this.rules) {
      const activeList = this.store.active(rule.id);
      const active = new Map(activeList.map((a) => [a.subject, a]));
      let conditions: Condition[];
      try {
        conditions = rule.evaluate(inputs, { now, thresholds, active });
      } catch (err) {
        this.log?.warn('alert rule failed; skipped this round', { rule: rule.id, err });
        continue;
      }
      const holding = new Map(conditions.map((c) => [c.subject, c]));
      for (const a of activeList) {
        const c = holding.get(a.subject);
        // an incident ends by acknowledgement only
        if (rule.kind === 'incident' && !c) continue;
        if (!c || c.severity !== a.severity) {
          const done = this.clear(a, now, c ? 'superseded' : 'resolved');
          if (done) cleared.push(done);
        }
      }
      for (const c of holding.values()) {
        const was = active.get(c.subject);
        if (was && was.severity === c.severity) continue;
        if (rule.kind === 'incident' && this.store.everRaised(rule.id, c.subject)) continue;
        raised.push(this.raise(rule, c, now));
      }
    }
    return { raised, cleared };
  }

  /**
   * Acknowledges an alert; an incident, or a condition its rule closes on
   * acknowledgement, is cleared by it. Undefined: no such alert.
   */
  acknowledge(id: number, by: string, now: number): Alert | undefined {
    const before = this.store.get(id);
    if (!before) return undefined;
    const acked = this.store.ack(id, by, now)!;
    if (before.ackedAt === null) {
      recordEvent(this.db, {
        type: 'alert.acknowledged',
        severity: 'info',
        message: `Alert acknowledged by ${by}: ${acked.title}.`,
        data: { alertId: id, rule: acked.rule, subject: acked.subject, by },
      });
      this.listener.acknowledged(acked);
    }
    const rule = this.rules.find((r) => r.id === acked.rule);
    if (
      acked.clearedAt === null &&
      (rule?.kind === 'incident' || rule?.closesOnAck?.(acked) === true)
    ) {
      return this.clear(acked, now, 'acknowledged') ?? acked;
    }
    return acked;
  }

  private raise(rule: Rule, c: Condition, now: number): Alert {
    const a = this.store.raise({ rule: rule.id, ...c }, now);
    recordEvent(this.db, {
      type: 'alert.raised',
      severity: a.severity,
      message: a.message,
      data: { alertId: a.id, rule: a.rule, subject: a.subject, title: a.title, ...c.data },
    });
    this.listener.raised(a);
    return a;
  }

  private clear(
    a: Alert,
    now: number,
    why: 'resolved' | 'superseded' | 'acknowledged',
  ): Alert | undefined {
    const done = this.store.clear(a.id, now);
    if (!done) return undefined;
    recordEvent(this.db, {
      type: 'alert.cleared',
      severity: 'info',
      message:
        why === 'superseded'
          ? `Alert replaced by a new one of another severity: ${a.title}.`
          : why === 'acknowledged'
            ? `Alert acknowledged and closed: ${a.title}.`
            : `Resolved: ${a.title}.`,
      data: { alertId: a.id, rule: a.rule, subject: a.subject, alertSeverity: a.severity, why },
    });
    this.listener.cleared(done);
    return done;
  }
}
