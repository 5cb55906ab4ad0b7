/**
 * The benchmark's latency percentiles: nearest rank, so p99 of 100 samples is the 99th
 * smallest, not the largest, and p999 is the maximum only when it is the nearest rank.
 */
import { describe, expect, it } from 'vitest';
import { LatencyRecorder, medianRound } from '../../../engine/src/bench/stats.js';

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

describe('medianRound', () => {
  const round = (iops: number, extra = 0) => ({
    ios: iops,
    bytes: iops * 4096,
    seconds: 1,
    iops,
    mbps: (iops * 4096) / 1e6,
    lat_us: { mean: 100 + extra, p50: 90 + extra, p99: 200 + extra, p999: 300 + extra },
    cpu_us_per_io: 2 + extra,
  });

  it('is the middle round of an odd count, by IOPS', () => {
    const [a, b, c] = [round(300), round(100), round(200)];
    expect(medianRound([a, b, c])).toBe(c);
    expect(medianRound([a])).toBe(a);
  });

  it('is the mean of the two middle rounds of an even count, field by field', () => {
    // two rounds: their midpoint, not the slower one (a cold first round was the result)
    expect(medianRound([round(10_000, 40), round(30_000)])).toEqual({
      ios: 20_000,
      bytes: 20_000 * 4096,
      seconds: 1,
      iops: 20_000,
      mbps: 81.92,
      lat_us: { mean: 120, p50: 110, p99: 220, p999: 320 },
      cpu_us_per_io: 22,
    });
    expect(medianRound([round(4), round(1), round(3), round(2)]).iops).toBe(2.5);
  });
});
