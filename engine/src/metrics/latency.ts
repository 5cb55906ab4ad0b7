/**
 * Percentiles from the core's log2 latency histogram (core/stats.ts). The sampler
 * subtracts two snapshots, so a percentile describes one interval, not the lifetime.
 */
import { LATENCY_BUCKETS } from '../core/stats.js';

export interface Percentiles {
  p50: number;
  p99: number;
  p999: number;
}

/** Lower and upper bound in µs of bucket b: [0, 1), then [2^(b-1), 2^b). */
export function bucketBounds(b: number): [number, number] {
  return b === 0 ? [0, 1] : [2 ** (b - 1), 2 ** b];
}

/** a − b per bucket (counters only grow, so every difference is ≥ 0). */
export function histDelta(a: ArrayLike<number>, b: ArrayLike<number> | undefined): Float64Array {
  const out = new Float64Array(LATENCY_BUCKETS);
  for (let i = 0; i < LATENCY_BUCKETS; i++) out[i] = (a[i] ?? 0) - (b?.[i] ?? 0);
  return out;
}

export function histAdd(into: Float64Array, h: ArrayLike<number>): void {
  for (let i = 0; i < LATENCY_BUCKETS; i++) into[i] = into[i]! + (h[i] ?? 0);
}

/**
 * The q-quantile (0 < q ≤ 1) in µs, interpolated linearly inside its bucket: a log2
 * bucket spans a factor of two, and assuming completions spread evenly inside it is
 * closer than reporting either edge. null when the histogram is empty.
 */
export function quantile(h: ArrayLike<number>, q: number): number | null {
  let total = 0;
  for (let i = 0; i < LATENCY_BUCKETS; i++) total += h[i] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let below = 0;
  for (let b = 0; b < LATENCY_BUCKETS; b++) {
    const n = h[b] ?? 0;
    if (n > 0 && below + n >= rank) {
      const [lo, hi] = bucketBounds(b);
      return lo + ((hi - lo) * (rank - below)) / n;
    }
    below += n;
  }
  return bucketBounds(LATENCY_BUCKETS - 1)[1];
}

export function percentiles(h: ArrayLike<number>): Percentiles | null {
  const p50 = quantile(h, 0.5);
  if (p50 === null) return null;
  return { p50, p99: quantile(h, 0.99)!, p999: quantile(h, 0.999)! };
}
