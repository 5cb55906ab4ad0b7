/**
 * The benchmark's latency percentiles: nearest rank, so p99 of 100 samples is the 99th
 * smallest, not the largest, and p999 is the maximum only when it is the nearest rank.
 */
import { describe, expect, it } from 'vitest';
import { LatencyRecorder } from '../../../engine/src/bench/stats.js';

function summary(samples: number[]) {
  const rec = new LatencyRecorder();
  // recorded out of order: the summary sorts numerically
  for (const s of [...samples].reverse()) rec.record(s);
  return rec.summary();
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

describe('LatencyRecorder.summary', () => {
  it.each([
    [range(100), { p50: 50, p99: 99, p999: 100 }],
    [range(1000), { p50: 500, p99: 990, p999: 999 }],
    [range(10_000), { p50: 5000, p99: 9900, p999: 9990 }],
    [[7], { p50: 7, p99: 7, p999: 7 }],
    [[3, 1], { p50: 1, p99: 3, p999: 3 }],
  ])('nearest-rank percentiles of %#', (samples, want) => {
    expect(summary(samples)).toMatchObject(want);
  });

  it('means and zeros', () => {
    expect(summary([2, 4, 9]).mean).toBe(5);
    expect(new LatencyRecorder().summary()).toEqual({ mean: 0, p50: 0, p99: 0, p999: 0 });
  });
});
