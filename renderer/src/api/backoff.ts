/** Reconnect delays: exponential, bounded, with jitter so many consoles do not retry in step. */
export interface BackoffOptions {
  /** Delay before the first retry, in ms (default 500). */
  minMs?: number;
  /** Upper bound of any delay, in ms (default 10000). */
  maxMs?: number;
  /** Source of randomness in [0, 1) (default Math.random); tests pin it. */
  random?: () => number;
}

/**
 * Delay before retry number `attempt` (0-based): min·2^attempt capped at max, then
 * scaled into [50 %, 100 %] of that value ("equal jitter"), so it never exceeds max.
 */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}): number {
  const min = opts.minMs ?? 500;
  const max = opts.maxMs ?? 10_000;
  const random = opts.random ?? Math.random;
  const ceiling = Math.min(max, min * 2 ** Math.min(attempt, 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}
