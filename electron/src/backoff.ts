/** Bounded exponential backoff with jitter, for reconnecting to the engine. */

export interface BackoffOptions {
  /** Delay before the first retry, in ms. */
  initialMs: number;
  /** No delay ever exceeds this, jitter included. */
  maxMs: number;
  /** Growth per failed attempt. */
  factor: number;
  /** Fraction of the delay randomised either way (0.2: ±20 %), so many clients do not retry in step. */
  jitter: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialMs: 250,
  maxMs: 10_000,
  factor: 2,
  jitter: 0.2,
};

/** The delay before retry number `attempt` (0 for the first retry). */
export function backoffDelay(
  attempt: number,
  opts: BackoffOptions = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const exp = Math.min(attempt, 60); // factor ** attempt stays finite
  const base = Math.min(opts.maxMs, opts.initialMs * opts.factor ** exp);
  const jittered = base * (1 + opts.jitter * (2 * random() - 1));
  return Math.round(Math.max(0, Math.min(opts.maxMs, jittered)));
}
