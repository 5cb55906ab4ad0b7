/**
 * Explicit state machines: a table of legal predecessors and one transition()
 * that throws on an illegal move, so a wrong sequence is a loud bug, not a
 * silently confused controller.
 */
export type TransitionTable<S extends string> = { readonly [K in S]: readonly S[] };

export class IllegalTransitionError extends Error {
  constructor(what: string, from: string, to: string) {
    super(`${what}: illegal state transition ${from} -> ${to}`);
    this.name = 'IllegalTransitionError';
  }
}

/** Returns `to` if the table allows from -> to, else throws. */
export function checkTransition<S extends string>(
  table: TransitionTable<S>,
  what: string,
  from: S,
  to: S,
): S {
  if (!table[from].includes(to)) throw new IllegalTransitionError(what, from, to);
  return to;
}
