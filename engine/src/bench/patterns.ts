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

/**
 * The rows of a full run (QD is per queue). QD1 runs with one queue only: it measures
 * one I/O at a time, and a second queue would put a second I/O in flight. 128 KiB at
 * QD8 runs with one queue only: its two-queue rows would add about 30 s (18 legs on
 * the RAM-backed file, 12 on disk, plus their warm-ups) to a full run of about 155 s
 * that must stay under 3 minutes on the 2-vCPU VM; the 4 KiB QD32 rows show what a
 * second queue does. The help text (cli/bench.ts) and the README list these rows.
 */
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
  /**
   * The measured window opens once the loop has run at least this long and completed
   * at least warmupIos I/Os (or, on a machine too slow for that count, at warmupMaxMs).
   * The count is what matters for code that has not run yet: V8 optimises a function
   * after enough calls, and the first few thousand I/Os of a path run several times
   * slower (QD1 reads through the target: about 3k I/Os at a fifth of the steady rate).
   */
  warmupMs: number;
  warmupIos: number;
  warmupMaxMs: number;
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
  const began = process.hrtime.bigint();
  const warmEnd = began + ms(o.warmupMs);
  const warmCap = began + ms(Math.max(o.warmupMs, o.warmupMaxMs));
  let warmIos = 0;
  /** Opens the measured window at `now` once the warm-up's time and count are both done. */
  const maybeOpen = (now: bigint) => {
    if (!(now >= warmCap || (now >= warmEnd && warmIos >= o.warmupIos))) return;
    measuring = true;
    t0 = now;
    stopAt = t0 + ms(o.durationMs);
    o.onWindow?.('start');
  };
  return new Promise((resolve, reject) => {
    let finished = false;
    const finish = () => {
      // once: a submit that fails at once (a controller no longer live) completes each
      // slot before the next is issued, and every one of them sees inflight reach 0
      if (finished) return;
      finished = true;
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
          rec.recordNs(Number(now - start));
          bytes += p.bs;
        } else {
          warmIos++;
          if (!failed) maybeOpen(now);
        }
        if (!failed && now < stopAt) issue(slot);
        else if (inflight === 0) finish();
      });
    };
    for (let slot = 0; slot < p.qd * p.queues && !failed; slot++) issue(slot);
  });
}

/** Whole nanoseconds: --seconds 0.1234 is 123.39999… ms, which BigInt() refuses. */
const ms = (v: number): bigint => BigInt(Math.round(v * 1e6));

/**
 * Unmeasured runs of the pattern on a fresh connection, before its first measured
 * round: the first legs of a run otherwise measure code V8 has not optimised yet
 * (three to six times slower; on a busy machine the optimised code can arrive seconds
 * late, since V8 compiles it on a background thread). It runs in chunks until it has
 * done WARM_UP.minIos I/Os and its rate has stopped rising (the last chunk no more than
 * WARM_UP.rise above the one before), or for WARM_UP.maxMs at most. Warm code takes
 * two chunks.
 */
export async function warmUp(p: Pattern, submit: Submit, span: number): Promise<void> {
  const chunk = { span, warmupMs: 0, warmupIos: 0, warmupMaxMs: 0, durationMs: WARM_UP.chunkMs };
  const began = performance.now();
  const chunks: { ios: number; iops: number }[] = [];
  do chunks.push(await runLoop(p, submit, chunk));
  while (!warmedUp(chunks, performance.now() - began));
}

/** See warmUp. */
export const WARM_UP = { chunkMs: 75, minIos: 4000, rise: 0.1, maxMs: 2000 };

/** Whether a warm-up that ran `chunks` (in order) in `elapsedMs` is done (see warmUp). */
export function warmedUp(chunks: readonly { ios: number; iops: number }[], elapsedMs: number) {
  if (elapsedMs >= WARM_UP.maxMs) return true;
  const [before, last] = chunks.slice(-2);
  if (!before || !last) return false; // one chunk cannot tell a rising rate
  const ios = chunks.reduce((n, c) => n + c.ios, 0);
  return ios >= WARM_UP.minIos && last.iops <= before.iops * (1 + WARM_UP.rise);
}
