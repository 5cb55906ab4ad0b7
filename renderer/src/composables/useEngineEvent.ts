import { getCurrentScope, onScopeDispose } from 'vue';
import type { EventData, EventName } from '../../../contract/api.js';
import { useApiClient } from '../api/inject.js';

/**
 * Subscribes to one pushed engine event for the life of the calling scope (a component's
 * setup or a setup store); the subscription ends when that scope is disposed.
 * Returns the unsubscribe function for an earlier stop.
 */
export function useEngineEvent<E extends EventName>(
  event: E,
  handler: (data: EventData<E>) => void,
): () => void {
  if (!getCurrentScope())
    throw new Error(`useEngineEvent('${event}') needs a component or store scope.`);
  const off = useApiClient().on(event, handler);
  onScopeDispose(off);
  return off;
}
