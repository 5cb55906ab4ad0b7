/**
 * The node's active alerts. Hydrated from one `alerts.list {active: true}` each time the
 * link comes up, then kept current by the pushed `alert.raised`, `alert.cleared` and
 * `alert.acknowledged` events; events that arrive while the list is being fetched are
 * applied on top of it, so none is lost to the race.
 *
 * An alert is known by its rule and subject (one active alert per pair): a raise
 * replaces the pair's earlier alert, which covers a severity change (the engine clears
 * the old one as "superseded") in either order of the two events, and an alert the
 * engine delivered before its database could store it (id 0) is replaced or cleared by
 * the stored one.
 */
import { defineStore } from 'pinia';
import { computed, ref } from 'vue';
import type { Alert, Severity } from '../../../contract/events.js';
import { useApiClient } from '../api/inject.js';
import { useEngineEvent } from '../composables/useEngineEvent.js';
import { useOnConnected } from '../composables/useOnConnected.js';
import { describeError, type ErrorSummary } from './errors.js';

/** The engine lists at most this many active alerts in one answer. */
const LIST_LIMIT = 200;

/**
 * Severity order (the contract's SEVERITIES; a value import of the contract would
 * bring zod into the bundle, whose eval probe the console's CSP reports).
 */
const RANK: Record<Severity, number> = { info: 0, warning: 1, error: 2, critical: 3 };

export const alertKey = (a: Pick<Alert, 'rule' | 'subject'>) => `${a.rule}\u0000${a.subject}`;

type Change = ['raised' | 'cleared' | 'acknowledged', Alert];

export const useAlertsStore = defineStore('alerts', () => {
  const client = useApiClient();

  /** Active alerts by alertKey; kept while disconnected as the last-known list. */
  const byKey = ref(new Map<string, Alert>());
  /** Whether a list has been received since the page loaded. */
  const loaded = ref(false);
  const loading = ref(false);
  /** Why the last list request failed; null after a success. */
  const error = ref<ErrorSummary | null>(null);
  /** Acknowledgements in flight, and why the last one of an alert failed, by alertKey. */
  const acking = ref(new Set<string>());
  const ackErrors = ref(new Map<string, ErrorSummary>());
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
    // a clear or acknowledgement of an older alert of this pair (superseded) changes nothing
    if (!held || (held.id !== a.id && held.id !== 0)) return;
    if (a.clearedAt !== null) {
      byKey.value.delete(key);
      acking.value.delete(key);
      ackErrors.value.delete(key);
    } else {
      byKey.value.set(key, a);
    }
  }

  function pushed(change: Change): void {
    if (pending) pending.push(change);
    else apply(change);
  }

  async function hydrate(): Promise<void> {
    const request = ++requests;
    pending = [];
    loading.value = true;
    try {
      const { alerts } = await client.call('alerts.list', { active: true, limit: LIST_LIMIT });
      if (request !== requests) return;
      byKey.value = new Map(alerts.map((a) => [alertKey(a), a]));
      truncated.value = alerts.length >= LIST_LIMIT;
      loaded.value = true;
      error.value = null;
    } catch (e) {
      if (request === requests) error.value = describeError(e);
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
    const key = alertKey(a);
    if (a.id <= 0 || acking.value.has(key)) return;
    acking.value.add(key);
    ackErrors.value.delete(key);
    try {
      apply(['acknowledged', await client.call('alerts.ack', { id: a.id })]);
    } catch (e) {
      ackErrors.value.set(key, describeError(e));
    } finally {
      acking.value.delete(key);
    }
  }

  useEngineEvent('alert.raised', (a) => pushed(['raised', a]));
  useEngineEvent('alert.cleared', (a) => pushed(['cleared', a]));
  useEngineEvent('alert.acknowledged', (a) => pushed(['acknowledged', a]));
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
