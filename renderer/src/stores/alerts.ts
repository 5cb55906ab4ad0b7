/**
 * The node's active alerts. Hydrated from one `alerts.list {active: true}` each time the
 * link comes up, then kept current by the pushed `alert.raised`, `alert.cleared`,
 * `alert.acknowledged` and `alert.stored` events; events that arrive while the list is
 * being fetched are applied on top of it, so none is lost to the race.
 *
 * An alert is shown by its rule and subject (one active alert per pair): a raise
 * replaces the pair's earlier alert, which covers a severity change (the engine clears
 * the old one as "superseded") in either order of the two events. A clear or an
 * acknowledgement applies to the alert of its id only, so a late clear of the old one
 * leaves the new one alone. An alert the engine delivered before its database could
 * store it has id 0 until `alert.stored` gives it its id.
 *
 * The alerts closed last are kept too (`recent`, the last closed first): read with
 * `alerts.list {active: false}` beside the active ones, and added to by each pushed
 * clear, including the clear of an alert a newer one of its pair replaced.
 */
import { defineStore } from 'pinia';
import { computed, ref } from 'vue';
import {
  alertKey,
  SEVERITY_LABEL,
  closedHow,
  mostSevereFirst,
  sameAlert,
  type ClosedHow,
} from '../../../contract/alert-words.js';
import type { Alert } from '../../../contract/events.js';
import { useApiClient } from '../api/inject.js';
import { useEngineEvent } from '../composables/useEngineEvent.js';
import { useOnConnected } from '../composables/useOnConnected.js';
import { useConnectionStore } from './connection.js';
import { describeError, type ErrorSummary } from './errors.js';

/** The most alerts one `alerts.list` answer holds (the contract's limit). */
const LIST_LIMIT = 1000;
/** Closed alerts kept for the "recently closed" list. */
export const RECENT_LIMIT = 10;

export { alertKey };

type Change = ['raised' | 'cleared' | 'acknowledged' | 'stored', Alert];

export const useAlertsStore = defineStore('alerts', () => {
  const client = useApiClient();
  const connection = useConnectionStore();

  /** Active alerts by alertKey; kept while disconnected as the last-known list. */
  const byKey = ref(new Map<string, Alert>());
  /** Whether a list has been received since the page loaded. */
  const loaded = ref(false);
  const loading = ref(false);
  /** Why the last list request failed; null after a success. */
  const error = ref<ErrorSummary | null>(null);
  /** Acknowledgements in flight, and why the last one failed, by alert id. */
  const acking = ref(new Set<number>());
  const ackErrors = ref(new Map<number, ErrorSummary>());
  /** Pushed changes that arrived while a list request was in flight. */
  let pending: Change[] | null = null;
  let requests = 0;

  /** Most severe first, then newest first. */
  const active = computed(() => [...byKey.value.values()].sort(mostSevereFirst));
  /** More active alerts than one list answer holds: the list shown is not all of them. */
  const truncated = ref(false);
  /** The alerts closed last, the last closed first; at most RECENT_LIMIT. */
  const recent = ref<Alert[]>([]);
  /** Whether the closed alerts have been read since the page loaded. */
  const recentLoaded = ref(false);

  /** Clears pushed while the closed alerts are being read, to apply on top of them. */
  let recentPending: Alert[] | null = null;

  function closedNow(a: Alert): void {
    recentPending?.push(a);
    const rest = recent.value.filter((r) => !sameAlert(r, a));
    recent.value = [a, ...rest]
      .sort((x, y) => y.clearedAt! - x.clearedAt! || y.id - x.id)
      .slice(0, RECENT_LIMIT);
  }

  /** How a closed alert ended (see closedHow in contract/alert-words.ts). */
  function closedHowOf(a: Alert): ClosedHow {
    return closedHow(a, [...byKey.value.values(), ...recent.value]);
  }

  function apply([kind, a]: Change): void {
    const key = alertKey(a);
    const held = byKey.value.get(key);
    // a clear, or the answer to acknowledging an alert that closes on acknowledgement
    if ((kind === 'cleared' || kind === 'acknowledged') && a.clearedAt !== null) closedNow(a);
    if (kind === 'raised') {
      if (a.clearedAt === null) byKey.value.set(key, a);
      return;
    }
    if (kind === 'stored') {
      if (held?.id === 0 && held.severity === a.severity) byKey.value.set(key, a);
      return;
    }
    // a clear or acknowledgement of an older alert of this pair (superseded) changes nothing
    if (held?.id !== a.id) return;
    if (a.clearedAt !== null) byKey.value.delete(key);
    else byKey.value.set(key, a);
  }

  /**
   * One sentence on the last alert raised or resolved while the page is open (pushed, not
   * read with a list), for the page's live region: a screen reader says it, as a sighted
   * person sees the list change. Empty until one comes.
   */
  const announcement = ref('');

  function announce([kind, a]: Change): void {
    if (kind === 'raised' && a.clearedAt === null)
      announcement.value = `New ${SEVERITY_LABEL[a.severity].toLowerCase()} alert: ${a.title}`;
    else if (kind === 'cleared' && byKey.value.get(alertKey(a))?.id === a.id)
      announcement.value = `Alert resolved: ${a.title}`;
  }

  function pushed(change: Change): void {
    announce(change);
    if (pending) pending.push(change);
    else apply(change);
  }

  async function hydrate(): Promise<void> {
    const request = ++requests;
    pending ??= []; // kept across a request that a newer one overtook
    loading.value = true;
    try {
      const { alerts } = await client.call('alerts.list', { active: true, limit: LIST_LIMIT });
      if (request !== requests) return;
      void readRecent(request);
      // newest first (unstored ones before all): the newest of a pair is the one that holds
      const fresh = new Map<string, Alert>();
      for (const a of alerts) if (!fresh.has(alertKey(a))) fresh.set(alertKey(a), a);
      byKey.value = fresh;
      truncated.value = alerts.length >= LIST_LIMIT;
      ackErrors.value.clear(); // an outcome lost with the link shows in the fresh list
      loaded.value = true;
      error.value = null;
    } catch (e) {
      // a list lost with the link is read again when it comes back: the page says the link is down
      if (request === requests && connection.state === 'connected') error.value = describeError(e);
    } finally {
      if (request === requests) {
        const changes = pending ?? [];
        pending = null;
        for (const c of changes) apply(c);
        loading.value = false;
      }
    }
  }

  /**
   * The closed alerts, read once the active ones are shown, with the clears pushed
   * meanwhile on top. When the read fails the list stays as it was, and no error is
   * shown: it is history, and the active list, which matters, was read.
   */
  async function readRecent(request: number): Promise<void> {
    const meanwhile: Alert[] = [];
    recentPending = meanwhile;
    try {
      const { alerts } = await client.call('alerts.list', { active: false, limit: RECENT_LIMIT });
      if (request !== requests) return; // a newer list reads it again
      recentPending = null;
      // closed alerts the database never stored (id 0) are not in its list: keep them
      const unstored = recent.value.filter((a) => a.id === 0);
      recent.value = [];
      for (const a of [...alerts, ...unstored, ...meanwhile]) closedNow(a);
      recentLoaded.value = true;
    } catch {
      // kept as it was
    } finally {
      if (recentPending === meanwhile) recentPending = null;
    }
  }

  /** Acknowledges an alert: someone has seen it. An unstored one (id 0) cannot be yet. */
  async function acknowledge(a: Alert): Promise<void> {
    if (a.id <= 0 || acking.value.has(a.id)) return;
    acking.value.add(a.id);
    ackErrors.value.delete(a.id);
    try {
      apply(['acknowledged', await client.call('alerts.ack', { id: a.id })]);
    } catch (e) {
      ackErrors.value.set(a.id, describeError(e));
    } finally {
      acking.value.delete(a.id);
    }
  }

  useEngineEvent('alert.raised', (a) => pushed(['raised', a]));
  useEngineEvent('alert.cleared', (a) => pushed(['cleared', a]));
  useEngineEvent('alert.acknowledged', (a) => pushed(['acknowledged', a]));
  useEngineEvent('alert.stored', (a) => pushed(['stored', a]));
  useOnConnected(() => void hydrate());

  return {
    active,
    truncated,
    recent,
    recentLoaded,
    closedHow: closedHowOf,
    loaded,
    loading,
    error,
    acking,
    ackErrors,
    hydrate,
    acknowledge,
    announcement,
  };
});
