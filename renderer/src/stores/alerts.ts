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
 */
import { defineStore } from 'pinia';
import { computed, ref } from 'vue';
import type { Alert, Severity } from '../../../contract/events.js';
import { useApiClient } from '../api/inject.js';
import { useEngineEvent } from '../composables/useEngineEvent.js';
import { useOnConnected } from '../composables/useOnConnected.js';
import { useConnectionStore } from './connection.js';
import { describeError, type ErrorSummary } from './errors.js';

/** The most alerts one `alerts.list` answer holds (the contract's limit). */
const LIST_LIMIT = 1000;

/**
 * Severity order (the contract's SEVERITIES; a value import of the contract would
 * bring zod into the bundle, whose eval probe the console's CSP reports).
 */
const RANK: Record<Severity, number> = { info: 0, warning: 1, error: 2, critical: 3 };

export const alertKey = (a: Pick<Alert, 'rule' | 'subject'>) => `${a.rule}\u0000${a.subject}`;

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
  const active = computed(() =>
    [...byKey.value.values()].sort(
      (a, b) => RANK[b.severity] - RANK[a.severity] || b.raisedAt - a.raisedAt,
    ),
  );
  /** More active alerts than one list answer holds: the list shown is not all of them. */
  const truncated = ref(false);

  function apply([kind, a]: Change): void {
    const key = alertKey(a);
    const held = byKey.value.get(key);
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

  function pushed(change: Change): void {
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
    loaded,
    loading,
    error,
    acking,
    ackErrors,
    hydrate,
    acknowledge,
  };
});
