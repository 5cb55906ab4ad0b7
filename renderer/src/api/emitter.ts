/** A minimal synchronous fan-out: the transports use it for state, problems and events. */
export interface Emitter<T> {
  on(handler: (value: T) => void): () => void;
  emit(value: T): void;
  clear(): void;
}

export function createEmitter<T>(): Emitter<T> {
  const handlers = new Set<(value: T) => void>();
  return {
    on(handler) {
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
    emit(value) {
      // A copy, so a handler that unsubscribes itself does not skip its neighbour.
      for (const h of [...handlers]) h(value);
    },
    clear() {
      handlers.clear();
    },
  };
}
