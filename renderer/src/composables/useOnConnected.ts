import { watch } from 'vue';
import { useConnectionStore } from '../stores/connection.js';

/**
 * Runs `fn` whenever the link to the engine comes up: now, if it is up already, and after
 * every reconnect. Stores use it to hydrate from a fresh snapshot, since events pushed
 * while the link was down are lost. Stops with the calling scope.
 */
export function useOnConnected(fn: () => void): void {
  const connection = useConnectionStore();
  watch(
    () => connection.state,
    (state, previous) => {
      if (state === 'connected' && previous !== 'connected') fn();
    },
    // 'sync': a drop and reconnect within one tick must still trigger a new hydrate.
    { immediate: true, flush: 'sync' },
  );
}
