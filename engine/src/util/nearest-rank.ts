/**
 * The q-quantile of ascending samples by nearest rank: the smallest sample with at
 * least q of all samples at or below it (p99 of 100 samples is the 99th, not the
 * largest). 0 for no samples.
 */
export function nearestRank(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
