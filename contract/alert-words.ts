/**
 * How alerts read to a person, for every part that shows them: the console, the
 * desktop notifications and the CLI. Imports only types, so the console bundle that
 * uses it stays free of zod (whose eval probe the console's CSP would report).
 */
import type { Alert, Severity } from './events.js';

/** A severity as it is named to people. */
export const SEVERITY_LABEL: Readonly<Record<Severity, string>> = {
  info: 'Info',
  warning: 'Warning',
  error: 'Error',
  critical: 'Critical',
};

/** Severity order, the more severe higher (the order of SEVERITIES). */
export const SEVERITY_RANK: Readonly<Record<Severity, number>> = {
  info: 0,
  warning: 1,
  error: 2,
  critical: 3,
};

/** Orders alerts the most severe first, then the newest raised first. */
export const mostSevereFirst = (a: Alert, b: Alert) =>
  SEVERITY_RANK[b.severity] - SEVERITY_RANK[a.severity] || b.raisedAt - a.raisedAt;

/** How many of `alerts` have each severity, the most severe first, zeros included. */
export function countBySeverity(alerts: readonly Pick<Alert, 'severity'>[]): [Severity, number][] {
  return (Object.keys(SEVERITY_RANK) as Severity[])
    .sort((x, y) => SEVERITY_RANK[y] - SEVERITY_RANK[x])
    .map((sev) => [sev, alerts.filter((a) => a.severity === sev).length]);
}

/** One active alert per rule and subject: this pair names it. */
export const alertKey = (a: Pick<Alert, 'rule' | 'subject'>) => `${a.rule}\u0000${a.subject}`;

/** Whether two alerts are the same one (an unstored one has id 0 until it is stored). */
export const sameAlert = (a: Alert, b: Alert) =>
  a.id !== 0
    ? a.id === b.id
    : b.id === 0 && alertKey(a) === alertKey(b) && a.raisedAt === b.raisedAt;

/** How a closed alert ended; `by` of a replaced one is its successor when in view. */
export type ClosedHow =
  | { kind: 'acknowledged'; by: string | null }
  | { kind: 'replaced'; by: Alert | null }
  | { kind: 'resolved' };

/**
 * How closed alert `a` ended. The engine says so (`clearedWhy`); for an alert closed
 * before it did, it is inferred: closed by its acknowledgement (the engine stamps both
 * at once), replaced by another alert of its pair (among `others`) that was raised by
 * the time `a` closed and was still active then, or resolved. The successor of a
 * replaced alert is looked up among `others` either way, for its severity.
 */
export function closedHow(a: Alert, others: Iterable<Alert>): ClosedHow {
  if (
    a.clearedWhy === 'acknowledged' ||
    (!a.clearedWhy && a.ackedAt !== null && a.ackedAt === a.clearedAt)
  )
    return { kind: 'acknowledged', by: a.ackedBy };
  if (a.clearedWhy === 'resolved') return { kind: 'resolved' };
  const key = alertKey(a);
  const at = a.clearedAt!;
  for (const b of others) {
    if (alertKey(b) !== key || sameAlert(a, b)) continue;
    if (b.raisedAt <= at && (b.clearedAt === null || b.clearedAt > at))
      return { kind: 'replaced', by: b };
  }
  return a.clearedWhy === 'superseded' ? { kind: 'replaced', by: null } : { kind: 'resolved' };
}

/** closedHow in words, with `at` (the closing time as the caller writes times). */
export function closedInWords(how: ClosedHow, at: string): string {
  if (how.kind === 'acknowledged')
    return `closed when ${how.by ?? 'someone'} acknowledged it, ${at}`;
  if (how.kind === 'replaced')
    return how.by
      ? `replaced by a ${SEVERITY_LABEL[how.by.severity].toLowerCase()} alert, ${at}`
      : `replaced by an alert of another severity, ${at}`;
  return `resolved ${at}`;
}
