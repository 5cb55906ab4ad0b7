/**
 * Latency recording for closed-loop benchmarks: every completion's latency in a
 * growable Float64Array (µs), percentiles by sorting once at the end.
 */
import { nearestRank } from '../util/nearest-rank.js';

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

export class LatencyRecorder {
  private samples = new Float64Array(1 << 16);
  private n = 0;

  record(us: number): void {
    if (this.n === this.samples.length) {
      const bigger = new Float64Array(this.samples.length * 2);
      bigger.set(this.samples);
      this.samples = bigger;
    }
    this.samples[this.n++] = us;
  }

  get count(): number {
    return this.n;
  }

  summary(): LatencySummary {
    if (this.n === 0) return { mean: 0, p50: 0, p99: 0, p999: 0 };
    const s = this.samples.subarray(0, this.n).sort();
    let sum = 0;
    for (let i = 0; i < this.n; i++) sum += s[i]!;
    const at = (q: number) => nearestRank(s, q);
    return {
      mean: round(sum / this.n),
      p50: round(at(0.5)),
      p99: round(at(0.99)),
      p999: round(at(0.999)),
    };
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
