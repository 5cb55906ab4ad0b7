import { reportListenerError } from '../../../contract/rpc-client.js';

/** A minimal synchronous fan-out: the transports use it for state, problems and events. */
export interface Emitter<T> {
  on(handler: (value: T) => void): () => void;
  emit(value: T): void;
  clear(): void;
}

/**
 * `what` names the change in the report of a listener that throws: as RpcSession does
 * for events, such a listener costs only itself, not the other listeners, and its throw
 * stays here, out of the transport code that emitted (a socket's close handler, which
 * would then not reconnect).
 */
export function createEmitter<T>(what: string): Emitter<T> {
  const handlers = new Set<(value: T) => void>();
  return {
    on(handler) {
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
    emit(value) {
      callEach(handlers, value, what);
    },
    clear() {
      handlers.clear();
    },
  };
}

/**
 * Calls each of `handlers` with `value`; one that throws is reported (naming `what`) and
 * costs only itself. A copy is walked, so a handler that unsubscribes itself does not
 * skip its neighbour.
 */
export function callEach<T>(handlers: Iterable<(value: T) => void>, value: T, what: string): void {
  for (const h of [...handlers]) {
    try {
      h(value);
    } catch (err) {
      reportListenerError(err, what);
    }
  }
}
