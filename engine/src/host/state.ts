/**
 * Explicit state machines for queues and controllers: a table of legal predecessors and
 * one transition() that throws on an illegal move, so a bug shows up where it happens
 * instead of as a hung promise later.
 */
export class StateMachine<S extends string> {
  private current: S;

  constructor(
    /** Name used in error messages ("queue 1", "controller"). */
    private readonly name: string,
    initial: S,
    /** For each state, the states it may be entered from. */
    private readonly from: Readonly<Record<S, readonly S[]>>,
    private readonly onChange?: (next: S, prev: S) => void,
  ) {
    this.current = initial;
  }

  get state(): S {
    return this.current;
  }

  is(...states: S[]): boolean {
    return states.includes(this.current);
  }

  /** Move to `next`; throws if the table does not allow it from the current state. */
  transition(next: S): void {
    const prev = this.current;
    if (!this.from[next].includes(prev)) {
      throw new Error(`${this.name}: illegal state transition ${prev} -> ${next}`);
    }
    this.current = next;
    this.onChange?.(next, prev);
  }
}
