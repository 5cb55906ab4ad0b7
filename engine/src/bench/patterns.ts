/**
 * The I/O patterns every leg of the benchmark runs, and the closed loop that keeps
 * `qd` operations in flight for a fixed time. The same loop drives the local
 * backend, the NVMe/TCP host and the bare-TCP floor, so only the I/O path differs.
 */
import { LatencyRecorder, summarize, type RunStats } from './stats.js';

export type PatternName = 'randread' | 'randwrite' | 'read' | 'write';

export interface Pattern {
  pattern: PatternName;
  bs: number;
  qd: number;
  queues: number;
}

export const FULL_PATTERNS: Pattern[] = [
  { pattern: 'randread', bs: 4096, qd: 1, queues: 1 },
  { pattern: 'randread', bs: 4096, qd: 32, queues: 1 },
  { pattern: 'randread', bs: 4096, qd: 32, queues: 2 },
  { pattern: 'randwrite', bs: 4096, qd: 1, queues: 1 },
  { pattern: 'randwrite', bs: 4096, qd: 32, queues: 1 },
  { pattern: 'randwrite', bs: 4096, qd: 32, queues: 2 },
  { pattern: 'read', bs: 131072, qd: 8, queues: 1 },
  { pattern: 'write', bs: 131072, qd: 8, queues: 1 },
];

/** The 4 KiB patterns (both queue counts); quick runs them on the RAM-backed file only. */
export const QUICK_PATTERNS: Pattern[] = FULL_PATTERNS.filter((p) => p.bs === 4096);

export const isWrite = (p: PatternName): boolean => p === 'randwrite' || p === 'write';

/** Submits one I/O: op on [offset, offset+len) through queue `queue`; calls done(err). */
export type Submit = (
  write: boolean,
  offset: number,
  len: number,
  queue: number,
  done: (err?: Error | null) => void,
) => void;

export interface LoopOptions {
  /** Bytes of the device the offsets range over (multiple of bs). */
  span: number;
  warmupMs: number;
  durationMs: number;
  /** Called when the measured window opens and when it closes (CPU accounting). */
  onWindow?: (edge: 'start' | 'end') => void;
}

/** Runs the pattern closed-loop; resolves with the measured statistics (warm-up excluded). */
export function runLoop(p: Pattern, submit: Submit, o: LoopOptions): Promise<RunStats> {
  const write = isWrite(p.pattern);
  const random = p.pattern.startsWith('rand');
  const blocks = Math.floor(o.span / p.bs);
  let seq = 0;
  const rec = new LatencyRecorder();
  let measuring = false;
  let bytes = 0;
  let stopAt = BigInt(Number.MAX_SAFE_INTEGER) * 1_000_000n;
  let inflight = 0;
  let failed: Error | null = null;
  let t0 = 0n;
  return new Promise((resolve, reject) => {
    const finish = () => {
      o.onWindow?.('end');
      if (failed) return reject(failed);
      const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
      resolve(summarize(rec, bytes, seconds));
    };
    const issue = (slot: number) => {
      const block = random ? Math.floor(Math.random() * blocks) : seq++ % blocks;
      const start = process.hrtime.bigint();
      inflight++;
      submit(write, block * p.bs, p.bs, slot % p.queues, (err) => {
        inflight--;
        if (err && !failed) failed = err;
        const now = process.hrtime.bigint();
        if (measuring) {
          rec.record(Number(now - start) / 1000);
          bytes += p.bs;
        }
        if (!failed && now < stopAt) issue(slot);
        else if (inflight === 0) finish();
      });
    };
    setTimeout(() => {
      measuring = true;
      t0 = process.hrtime.bigint();
      // Whole nanoseconds: --seconds 0.1234 is 123.39999… ms, which BigInt() refuses.
      stopAt = t0 + BigInt(Math.round(o.durationMs * 1e6));
      o.onWindow?.('start');
    }, o.warmupMs);
    for (let slot = 0; slot < p.qd * p.queues; slot++) issue(slot);
  });
}
