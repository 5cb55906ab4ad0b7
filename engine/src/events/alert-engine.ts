/**
 * Turns what the rules say holds now into the alert lifecycle: a new condition is
 * raised once, a condition that ended is cleared, a change of severity clears the
 * old alert and raises the new one (the dashboard and mail show the escalation).
 * Every raise and clear is also recorded as an event, so it reaches the event log,
 * syslog, mail and webhooks through the one path every event takes.
 *
 * A raise the database refuses (a full disk: the capacity alert about the data
 * directory itself) is delivered all the same, once, marked unstored, and stored as
 * soon as the database takes writes again. What was delivered unstored is kept in
 * memory only: an engine restart while the disk stays full delivers it once more.
 */
import type { Alert, ClearedWhy, Severity } from '../../../contract/events.js';
import { announceUnstoredEvent, recordEvent, type Db } from '../persistence/db.js';
import { storageProblem, whereStorageAllows } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { AlertStore } from './alert-store.js';
import type { AlertInputs, AlertThresholds, Condition, Rule } from './rules.js';

export interface AlertListener {
  raised(a: Alert): void;
  cleared(a: Alert): void;
  acknowledged(a: Alert): void;
  /** An alert delivered unstored (id 0) is now stored as `a`; it is not delivered again. */
  stored?(a: Alert): void;
}

/** A raise delivered while the database refused it, waiting to be stored. */
interface Unstored {
  condition: Condition;
  /** What the listener got: id 0, raisedAt the first attempt. */
  alert: Alert;
}

const unstoredKey = (rule: string, subject: string, severity: Severity) =>
  JSON.stringify([rule, subject, severity]);

export class AlertEngine {
  readonly store: AlertStore;
  private readonly unstored = new Map<string, Unstored>();

  constructor(
    private readonly db: Db,
    private readonly rules: readonly Rule[],
    private readonly thresholds: () => AlertThresholds,
    private readonly listener: AlertListener,
    private readonly log?: Logger,
  ) {
    this.store = new AlertStore(db);
  }

  /**
   * One pass of every rule over one snapshot. A rule that throws, or whose alerts
   * cannot be stored, is skipped or retried next round; the other rules still run.
   */
  evaluate(inputs: AlertInputs, now: number): { raised: Alert[]; cleared: Alert[] } {
    const raised: Alert[] = [];
    const cleared: Alert[] = [];
    const thresholds = this.thresholds();
    for (const rule of this.rules) {
      try {
        this.evaluateRule(rule, inputs, now, thresholds, raised, cleared);
      } catch (err) {
        this.log?.warn(
          'alert rule could not be applied; the other rules ran, this one is retried next round',
          {
            rule: rule.id,
            err,
          },
        );
      }
    }
    return { raised, cleared };
  }

  private evaluateRule(
    rule: Rule,
    inputs: AlertInputs,
    now: number,
    thresholds: AlertThresholds,
    raised: Alert[],
    cleared: Alert[],
  ): void {
    const activeList = this.store.active(rule.id);
    const active = new Map(activeList.map((a) => [a.subject, a]));
    const pending = [...this.unstored].filter(([, p]) => p.alert.rule === rule.id);
    // the rule sees a delivered but unstored raise as active, so its hysteresis holds
    const seen = new Map(active);
    for (const [, p] of pending) if (!seen.has(p.alert.subject)) seen.set(p.alert.subject, p.alert);
    let conditions: Condition[];
    try {
      conditions = rule.evaluate(inputs, { now, thresholds, active: seen });
    } catch (err) {
      this.log?.warn('alert rule failed; skipped this round', { rule: rule.id, err });
      return;
    }
    const holding = new Map(conditions.map((c) => [c.subject, c]));
    // subjects whose old alert could not be closed: the new one cannot be stored beside it
    const stuck = new Map<string, unknown>();
    for (const a of activeList) {
      const c = holding.get(a.subject);
      // an incident ends by acknowledgement only
      if (rule.kind === 'incident' && !c) continue;
      if (!c || c.severity !== a.severity) {
        try {
          const done = this.clear(a, now, c ? 'superseded' : 'resolved');
          if (done) cleared.push(done);
        } catch (err) {
          if (!storageProblem(err)) throw err;
          stuck.set(a.subject, err);
          this.log?.warn('cannot store that an alert ended; retrying next round', {
            rule: rule.id,
            subject: a.subject,
            err,
          });
        }
      }
    }
    for (const [key, p] of pending) {
      if (holding.get(p.alert.subject)?.severity === p.alert.severity) continue;
      // an incident happened even if it no longer shows: it stays until stored
      if (rule.kind === 'incident') {
        this.raise(rule, p.condition, now, stuck.get(p.alert.subject));
        continue;
      }
      // it ended before it could be stored: its "resolved" is delivered the same way, then it is forgotten
      this.unstored.delete(key);
      cleared.push(
        this.announceCleared(
          p.alert,
          now,
          holding.has(p.alert.subject) ? 'superseded' : 'resolved',
        ),
      );
    }
    for (const c of holding.values()) {
      const was = active.get(c.subject);
      if (was && was.severity === c.severity) continue;
      if (rule.kind === 'incident' && this.store.everRaised(rule.id, c.subject)) continue;
      const a = this.raise(rule, c, now, stuck.get(c.subject));
      if (a) raised.push(a);
    }
  }

  /**
   * Acknowledges an alert; an incident, or a condition its rule closes on
   * acknowledgement, is cleared by it. Undefined: no such alert. `alongside` is written
   * in the acknowledgement's transaction (see AlertStore.ack); when either throws,
   * nothing changed and nobody is told.
   */
  acknowledge(id: number, by: string, now: number, alongside?: () => void): Alert | undefined {
    const before = this.store.get(id);
    if (!before) return undefined;
    let acked: Alert;
    try {
      acked = this.store.ack(id, by, now, alongside)!;
    } catch (err) {
      throw new AckNotStored(err);
    }
    if (before.ackedAt === null) {
      const ev = {
        type: 'alert.acknowledged',
        severity: 'info' as const,
        message: `Alert acknowledged by ${by}: ${acked.title}.`,
        data: { alertId: id, rule: acked.rule, subject: acked.subject, by },
      };
      this.recordOrAnnounce(ev, 'an acknowledgement', id); // acknowledged now: told all the same
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

  /** Alerts delivered while the database refused them (id 0), not yet stored: active ones. */
  unstoredAlerts(): Alert[] {
    return [...this.unstored.values()].map((p) => p.alert);
  }

  /**
   * Stores and delivers a raise. When the database refuses it for want of space (or
   * `blocked`, the old alert of the subject could not be closed), it is delivered
   * unstored the first time and only retried after that; once stored it is not
   * delivered again. Returns the alert when it was delivered now.
   */
  private raise(rule: Rule, c: Condition, now: number, blocked?: unknown): Alert | undefined {
    const key = unstoredKey(rule.id, c.subject, c.severity);
    const pending = this.unstored.get(key);
    let a: Alert;
    try {
      if (blocked) throw blocked;
      a = this.store.raise({ rule: rule.id, ...c }, pending?.alert.raisedAt ?? now);
    } catch (err) {
      const why = storageProblem(err);
      if (!why) throw err;
      if (pending) return undefined; // delivered when first refused
      const alert: Alert = {
        id: 0,
        rule: rule.id,
        subject: c.subject,
        severity: c.severity,
        title: c.title,
        message: c.message,
        raisedAt: now,
        clearedAt: null,
        ackedAt: null,
        ackedBy: null,
      };
      this.unstored.set(key, { condition: c, alert });
      this.log?.warn(
        'alert could not be stored; delivered anyway and stored once the data directory has free space again',
        { rule: rule.id, subject: c.subject, why },
      );
      announceUnstoredEvent(this.db, raisedEvent(alert, c));
      this.listener.raised(alert);
      return alert;
    }
    this.unstored.delete(key);
    const ev = raisedEvent(a, c);
    if (pending) {
      // delivered while the database refused it: only the event log catches up now
      const what = 'add the event of a stored alert to the event log';
      whereStorageAllows(this.log, what, () => recordEvent(this.db, ev, { notify: false }), {
        alertId: a.id,
      });
      this.listener.stored?.(a); // consoles swap their id-0 copy for it
      return undefined;
    }
    this.recordOrAnnounce(ev, 'a stored alert', a.id); // stored: delivered all the same
    this.listener.raised(a);
    return a;
  }

  /**
   * Records the event of something already stored (`of`: what, for the log line); when
   * the data directory refuses the event, it is announced unstored instead (delivered,
   * marked as not in the event log), so the change still reaches people and consoles.
   */
  private recordOrAnnounce(
    ev: Parameters<typeof announceUnstoredEvent>[1],
    of: string,
    alertId: number,
  ) {
    const what = `add the event of ${of} to the event log`;
    if (!whereStorageAllows(this.log, what, () => recordEvent(this.db, ev), { alertId }))
      announceUnstoredEvent(this.db, ev);
  }

  private clear(a: Alert, now: number, why: ClearedWhy): Alert | undefined {
    const done = this.store.clear(a.id, now, why);
    if (!done) return undefined;
    this.recordOrAnnounce(clearedEvent(a, why), 'a cleared alert', a.id); // closed: told all the same
    this.listener.cleared(done);
    return done;
  }

  /** The end of an alert that was never stored: delivered, not stored, like its raise. */
  private announceCleared(a: Alert, now: number, why: ClearedWhy): Alert {
    announceUnstoredEvent(this.db, clearedEvent(a, why));
    const done = { ...a, clearedAt: now, clearedWhy: why };
    this.listener.cleared(done);
    return done;
  }
}

/** The acknowledgement's transaction failed (`cause` says why): nothing changed. */
export class AckNotStored extends Error {
  constructor(override readonly cause: unknown) {
    super(`the acknowledgement was not stored: ${String((cause as Error)?.message ?? cause)}`);
    this.name = 'AckNotStored';
  }
}

function raisedEvent(a: Alert, c: Condition) {
  return {
    type: 'alert.raised',
    severity: a.severity,
    message: a.message,
    data: { alertId: a.id, rule: a.rule, subject: a.subject, title: a.title, ...c.data },
  };
}

function clearedEvent(a: Alert, why: ClearedWhy) {
  return {
    type: 'alert.cleared',
    severity: 'info' as const,
    message:
      why === 'superseded'
        ? `Alert replaced by a new one of another severity: ${a.title}.`
        : why === 'acknowledged'
          ? `Alert acknowledged and closed: ${a.title}.`
          : `Resolved: ${a.title}.`,
    data: { alertId: a.id, rule: a.rule, subject: a.subject, alertSeverity: a.severity, why },
  };
}
