/**
 * Cheap I/O counters the metrics layer samples: plain number fields bumped on each
 * completion, no allocation, no timers. Latency sums are in microseconds; divide by
 * ops for a mean over a sampling interval. Read and write latencies also go into a
 * log2 histogram (one clz32 and one increment per I/O) so the sampler can derive
 * percentiles from the difference of two snapshots.
 */
export type IoKind = 'read' | 'write' | 'other';

/** Histogram buckets: 0 holds < 1 µs, b holds [2^(b-1), 2^b) µs, the last one is open. */
export const LATENCY_BUCKETS = 32;

/** The bucket of a latency in µs (fractions truncate; ≥ 2^30 µs lands in the last). */
export function latencyBucket(us: number): number {
  return us < 2 ** 30 ? 32 - Math.clz32(us) : LATENCY_BUCKETS - 1;
}

export interface IoStatsSnapshot {
  readonly readOps: number;
  readonly readBytes: number;
  readonly readLatencyUs: number;
  readonly writeOps: number;
  readonly writeBytes: number;
  readonly writeLatencyUs: number;
  /** Flush, Write Zeroes, DSM, Compare. */
  readonly otherOps: number;
  readonly otherLatencyUs: number;
  /** Commands that completed with a non-zero status. */
  readonly errors: number;
  /** Completions per latencyBucket(), reads and writes; a snapshot holds copies. */
  readonly readLatencyHist: Float64Array;
  readonly writeLatencyHist: Float64Array;
}

export class IoStats implements IoStatsSnapshot {
  readOps = 0;
  readBytes = 0;
  readLatencyUs = 0;
  writeOps = 0;
  writeBytes = 0;
  writeLatencyUs = 0;
  otherOps = 0;
  otherLatencyUs = 0;
  errors = 0;
  // Float64: exact counts up to 2^53 and never wraps, unlike a Uint32Array.
  readonly readLatencyHist = new Float64Array(LATENCY_BUCKETS);
  readonly writeLatencyHist = new Float64Array(LATENCY_BUCKETS);

  record(kind: IoKind, bytes: number, latencyUs: number, failed: boolean): void {
    if (failed) this.errors++;
    if (kind === 'read') {
      this.readOps++;
      this.readBytes += bytes;
      this.readLatencyUs += latencyUs;
      this.readLatencyHist[latencyBucket(latencyUs)]!++;
    } else if (kind === 'write') {
      this.writeOps++;
      this.writeBytes += bytes;
      this.writeLatencyUs += latencyUs;
      this.writeLatencyHist[latencyBucket(latencyUs)]!++;
    } else {
      this.otherOps++;
      this.otherLatencyUs += latencyUs;
    }
  }

  snapshot(): IoStatsSnapshot {
    return {
      ...this,
      readLatencyHist: this.readLatencyHist.slice(),
      writeLatencyHist: this.writeLatencyHist.slice(),
    };
  }
}
