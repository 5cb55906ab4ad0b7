/**
 * Cheap I/O counters the metrics layer samples: plain number fields bumped on each
 * completion, no allocation, no timers. Latency sums are in microseconds; divide by
 * ops for a mean over a sampling interval.
 */
export type IoKind = 'read' | 'write' | 'other';

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

  record(kind: IoKind, bytes: number, latencyUs: number, failed: boolean): void {
    if (failed) this.errors++;
    if (kind === 'read') {
      this.readOps++;
      this.readBytes += bytes;
      this.readLatencyUs += latencyUs;
    } else if (kind === 'write') {
      this.writeOps++;
      this.writeBytes += bytes;
      this.writeLatencyUs += latencyUs;
    } else {
      this.otherOps++;
      this.otherLatencyUs += latencyUs;
    }
  }

  snapshot(): IoStatsSnapshot {
    return { ...this };
  }
}
