/**
 * Latency recording for closed-loop benchmarks, in memory that does not grow with the
 * number of I/Os (every completion's latency kept, as before, was 8 bytes each: about
 * 512 MiB for a 60-second leg): a log-linear histogram of whole nanoseconds, as
 * HdrHistogram's, with the count, sum, minimum and maximum kept exactly beside it.
 *
 * Precision: below 2^SUB_BITS ns (about 1 µs) every nanosecond has a bucket of its own;
 * above, each power of two is cut into 2^(SUB_BITS-1) buckets of equal width, so none
 * is wider than 1/512 of its lower bound. A percentile is the midpoint of the bucket
 * that holds its nearest-rank sample: within 1/1024 (under 0.1%) of what an exact sort
 * gives, and exactly the minimum or the maximum when its rank is the first or the last.
 * The mean is exact. Latencies of 2^MAX_BITS ns (about 73 minutes) and longer share
 * the last bucket (the maximum stays exact).
 */
export interface LatencySummary {
  mean: number;
  p50: number;
  p99: number;
  p999: number;
}

export interface RunStats {
  ios: number;
  bytes: number;
  seconds: number;
  iops: number;
  /** Decimal megabytes per second: MB = 10^6 bytes (not MiB). */
  mbps: number;
  lat_us: LatencySummary;
}

/** See the top of this file. */
const SUB_BITS = 10;
const MAX_BITS = 42;
const SUB = 2 ** SUB_BITS;
const HALF = SUB / 2;
/** Buckets: SUB of width 1, then HALF per power of two from 2^SUB_BITS to 2^MAX_BITS. */
const BUCKETS = SUB + (MAX_BITS - SUB_BITS) * HALF;
/** The relative error bound of a percentile (see the top of this file). */
export const LATENCY_RELATIVE_ERROR = 1 / SUB;

/** The histogram bucket of ns (a whole number ≥ 0). */
function bucketOf(ns: number): number {
  if (ns < SUB) return ns;
  // bucket = shift × HALF + (ns >> shift): SUB + (shift − 1) × HALF + (ns >> shift) − HALF
  if (ns < 2 ** 32) {
    const shift = 32 - Math.clz32(ns) - SUB_BITS; // ≥ 1
    return shift * HALF + (ns >>> shift);
  }
  const shift = 64 - Math.clz32(ns / 2 ** 32) - SUB_BITS;
  return Math.min(BUCKETS - 1, shift * HALF + Math.floor(ns / 2 ** shift));
}

/** The midpoint (ns) of the whole nanoseconds bucket i holds. */
function bucketMid(i: number): number {
  if (i < SUB) return i;
  const shift = Math.floor((i - SUB) / HALF) + 1;
  const low = (HALF + ((i - SUB) % HALF)) * 2 ** shift;
  return low + (2 ** shift - 1) / 2;
}

export class LatencyRecorder {
  private readonly counts = new Float64Array(BUCKETS);
  private n = 0;
  private sumNs = 0;
  private minNs = Infinity;
  private maxNs = 0;

  /** One completion's latency in µs (kept to the nanosecond). */
  record(us: number): void {
    this.recordNs(Math.round(us * 1000));
  }

  /** One completion's latency in nanoseconds. No allocation. */
  recordNs(ns: number): void {
    ns = ns > 0 ? Math.round(ns) : 0; // not NaN nor negative: a monotonic clock gives neither
    this.counts[bucketOf(ns)]!++;
    this.n++;
    this.sumNs += ns;
    if (ns < this.minNs) this.minNs = ns;
    if (ns > this.maxNs) this.maxNs = ns;
  }

  get count(): number {
    return this.n;
  }

  /** Bytes this recorder holds: the same however many latencies it has recorded. */
  get bytes(): number {
    return this.counts.byteLength;
  }

  /** The exact mean, in ns (0 for none). */
  get meanNs(): number {
    return this.n === 0 ? 0 : this.sumNs / this.n;
  }

  summary(): LatencySummary {
    if (this.n === 0) return { mean: 0, p50: 0, p99: 0, p999: 0 };
    const [p50, p99, p999] = this.percentilesNs([0.5, 0.99, 0.999]);
    const us = (ns: number) => round(ns / 1000);
    return { mean: us(this.meanNs), p50: us(p50!), p99: us(p99!), p999: us(p999!) };
  }

  /**
   * The nearest-rank q-quantiles (q ascending), in ns: the rank an exact sort would
   * pick (util/nearest-rank.ts), found by counting buckets up to it. 0 for none.
   */
  percentilesNs(qs: readonly number[]): number[] {
    if (this.n === 0) return qs.map(() => 0);
    const out: number[] = [];
    let seen = 0;
    let i = 0;
    for (const q of qs) {
      const rank = Math.min(this.n, Math.max(1, Math.ceil(q * this.n)));
      if (rank === 1) out.push(this.minNs);
      else if (rank === this.n) out.push(this.maxNs);
      else {
        while (seen + this.counts[i]! < rank) seen += this.counts[i++]!;
        out.push(Math.min(this.maxNs, Math.max(this.minNs, bucketMid(i))));
      }
    }
    return out;
  }
}

export function summarize(rec: LatencyRecorder, bytes: number, seconds: number): RunStats {
  return {
    ios: rec.count,
    bytes,
    seconds: round(seconds),
    iops: Math.round(rec.count / seconds),
    mbps: round(bytes / seconds / 1e6),
    lat_us: rec.summary(),
  };
}

/**
 * A leg's median round by IOPS: the middle round, or for an even count the mean of the
 * two middle ones, field by field (IOPS, latencies and CPU per I/O alike), so two
 * rounds report their midpoint, not the slower one.
 */
export function medianRound<T extends RunStats>(runs: readonly T[]): T {
  if (runs.length === 0) throw new Error('medianRound: no rounds');
  const sorted = [...runs].sort((a, b) => a.iops - b.iops);
  const mid = (sorted.length - 1) / 2;
  const [lo, hi] = [sorted[Math.floor(mid)]!, sorted[Math.ceil(mid)]!];
  return lo === hi ? lo : (midpoint(lo, hi) as T);
}

/** The mean of a and b, field by field, into nested objects; a's value where not numbers. */
function midpoint(a: unknown, b: unknown): unknown {
  if (typeof a === 'number' && typeof b === 'number') return round((a + b) / 2);
  if (a === null || typeof a !== 'object' || b === null || typeof b !== 'object') return a;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(a)) out[k] = midpoint(v, (b as Record<string, unknown>)[k]);
  return out;
}

export function round(v: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}
