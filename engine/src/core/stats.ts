/**
 * Cheap I/O counters the metrics layer samples: plain number fields bumped on each
 * completion, no allocation, no timers. Latency sums are in microseconds; divide by
 * ops for a mean over a sampling interval. Read and write latencies also go into a
 * log2 histogram (one clz32 and one increment per I/O) so the sampler can derive
 * percentiles from the difference of two snapshots. Ops, bytes and errors count every
 * command; latencies, above about 40k commands per second on a controller, only the
 * commands its LatencySampler times, each weighted for the untimed ones it stands for.
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

  /**
   * Counts one completed command. latencyUs < 0: it was not timed (LatencySampler);
   * else its latency counts `weight` times, for itself and the untimed ones it stands for.
   */
  record(kind: IoKind, bytes: number, latencyUs: number, failed: boolean, weight = 1): void {
    if (failed) this.errors++;
    const timed = latencyUs >= 0;
    if (kind === 'read') {
      this.readOps++;
      this.readBytes += bytes;
      if (!timed) return;
      this.readLatencyUs += latencyUs * weight;
      this.readLatencyHist[latencyBucket(latencyUs)]! += weight;
    } else if (kind === 'write') {
      this.writeOps++;
      this.writeBytes += bytes;
      if (!timed) return;
      this.writeLatencyUs += latencyUs * weight;
      this.writeLatencyHist[latencyBucket(latencyUs)]! += weight;
    } else {
      this.otherOps++;
      if (timed) this.otherLatencyUs += latencyUs * weight;
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

/** A timed command: its start (the sampler's clock, ms) and how many commands it stands for. */
export interface Timing {
  readonly at: number;
  readonly weight: number;
}

/** Aimed-at time between two timed commands of a busy controller, ms. */
const TIMED_GAP_MS = 0.05;
/** At most one command in this many goes timed, on average. */
export const MAX_TIME_EVERY = 64;

/**
 * Which of a controller's commands are timed. Two clock reads per command (start and
 * completion) cost the NVMe/TCP target about 6% of its CPU per 4 KiB read at 200k
 * reads/s. While commands come at least 25 µs apart, every one is timed and the
 * figures are exact. Busier, about one command in `every` (a power of two, adapted
 * so that one is timed about every TIMED_GAP_MS) is, with random gaps: a fixed one in
 * N would time the same place of every batch a host sends, and the first command of a
 * batch waits longer than the last. A timed command stands for itself and the untimed
 * ones up to the next timed one (its `weight`), so latency sums and histograms stay
 * unbiased estimates whose counts add up to the commands.
 */
export class LatencySampler {
  private every = 1;
  /** What the last timed command stands for: itself and the untimed ones after it. */
  private weight = 1;
  private skip = 0;
  private last = -Infinity;
  private seed = 0x2545f491;

  constructor(private readonly clock: () => number = () => performance.now()) {}

  /** When this command started, if it is to be timed; else null. */
  start(): Timing | null {
    if (this.skip > 0) {
      this.skip--;
      return null;
    }
    const now = this.clock();
    // Since the last timed command, `weight` commands came (it and those it stood for):
    // the time per command, times `every`, is the gap between timed ones at this rate.
    const gap = ((now - this.last) / this.weight) * this.every;
    this.last = now;
    if (gap < TIMED_GAP_MS / 2) {
      if (this.every < MAX_TIME_EVERY) this.every *= 2;
    } else if (gap > TIMED_GAP_MS * 2 && this.every > 1) this.every /= 2;
    // Uniform over 0..2(every-1): every - 1 on average.
    this.skip = this.every === 1 ? 0 : this.random() % (2 * this.every - 1);
    this.weight = this.skip + 1;
    return { at: now, weight: this.weight };
  }

  /** xorshift32: cheap, and no clock or Math.random state shared with anyone. */
  private random(): number {
    let x = this.seed;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.seed = x;
    return x >>> 0;
  }
}
