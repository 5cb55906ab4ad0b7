/**
 * Engine identity and liveness. Hydrated from one `system.status` snapshot each time the
 * link comes up, then kept current by `system.heartbeat` events: uptime advances only
 * when the engine says so, never from a local timer.
 */
import { defineStore } from 'pinia';
import { computed, ref } from 'vue';
import type { Heartbeat, SystemStatus } from '../../../contract/api.js';
import { useApiClient } from '../api/inject.js';
import { useEngineEvent } from '../composables/useEngineEvent.js';
import { useOnConnected } from '../composables/useOnConnected.js';
import { describeError, type ErrorSummary } from './errors.js';
import { useConnectionStore } from './connection.js';

export const useSystemStore = defineStore('system', () => {
  const client = useApiClient();
  const connection = useConnectionStore();

  /** The last snapshot; kept while disconnected so the page can show last-known values. */
  const status = ref<SystemStatus | null>(null);
  /** Engine uptime in seconds, from the snapshot and then from each heartbeat. */
  const uptimeSec = ref<number | null>(null);
  /** When the last heartbeat arrived, by this machine's clock (ms since epoch). */
  const lastHeartbeatAt = ref<number | null>(null);
  /** Heartbeats received since the page loaded; orders a snapshot against heartbeats. */
  const heartbeats = ref(0);
  /** Snapshot requests started; a reply to anything but the latest is stale. */
  const hydrations = ref(0);
  const loading = ref(false);
  /** Why the last snapshot request failed; null after a success. */
  const error = ref<ErrorSummary | null>(null);

  const connectionState = computed(() => connection.state);
  const nodeName = computed(() => status.value?.hostname ?? null);

  async function hydrate(): Promise<void> {
    const request = ++hydrations.value;
    const heartbeatsBefore = heartbeats.value;
    loading.value = true;
    error.value = null; // a failure of the last link is not this request's
    try {
      const snapshot = await client.call('system.status', {});
      if (request !== hydrations.value) return;
      status.value = snapshot;
      // A heartbeat that arrived while the request was in flight is newer than the snapshot.
      const current = uptimeSec.value;
      const newer = heartbeats.value !== heartbeatsBefore && current !== null;
      uptimeSec.value = newer ? Math.max(current, snapshot.uptimeSec) : snapshot.uptimeSec;
      error.value = null;
    } catch (e) {
      if (request === hydrations.value) error.value = describeError(e);
    } finally {
      if (request === hydrations.value) loading.value = false;
    }
  }

  function applyHeartbeat(hb: Heartbeat): void {
    if (typeof hb?.uptimeSec !== 'number' || typeof hb.at !== 'number') return;
    heartbeats.value++;
    uptimeSec.value = hb.uptimeSec;
    // this machine's clock: shown beside the viewer's own, an engine clock set differently
    // would make a live engine look stale (or from the future)
    lastHeartbeatAt.value = Date.now();
  }

  useEngineEvent('system.heartbeat', applyHeartbeat);
  useOnConnected(() => void hydrate());

  return {
    status,
    uptimeSec,
    lastHeartbeatAt,
    heartbeats,
    hydrations,
    loading,
    error,
    connectionState,
    nodeName,
    hydrate,
  };
});
