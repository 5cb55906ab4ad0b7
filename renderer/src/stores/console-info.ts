/**
 * How the web console is served: address, remote access, TLS and the certificate's
 * SHA-256 fingerprint, which a person compares with what the browser shows before
 * typing the admin password. Hydrated from `system.console` each time the link comes up.
 */
import { defineStore } from 'pinia';
import { ref } from 'vue';
import type { ConsoleInfo } from '../../../contract/api.js';
import { useApiClient } from '../api/inject.js';
import { useOnConnected } from '../composables/useOnConnected.js';
import { describeError, type ErrorSummary } from './errors.js';

export const useConsoleInfoStore = defineStore('console-info', () => {
  const client = useApiClient();
  /** The last answer; kept while disconnected. */
  const info = ref<ConsoleInfo | null>(null);
  /** Why the last request failed; null after a success. */
  const error = ref<ErrorSummary | null>(null);

  async function hydrate(): Promise<void> {
    try {
      info.value = await client.call('system.console', {});
      error.value = null;
    } catch (e) {
      error.value = describeError(e);
    }
  }

  useOnConnected(() => void hydrate());
  return { info, error, hydrate };
});
