/**
 * The benchmark's latency percentiles: nearest rank, so p99 of 100 samples is the 99th
 * smallest, not the largest, and p999 is the maximum only when it is the nearest rank;
 * from a histogram whose memory does not grow with the samples, within its stated
 * relative error (LATENCY_RELATIVE_ERROR) of an exact sort; the mean exact.
 */
import { describe, expect, it } from 'vitest';
import {
  LATENCY_RELATIVE_ERROR,
  LatencyRecorder,
  medianRound,
} from '../../../engine/src/bench/stats.js';
import { nearestRank } from '../../../engine/src/util/nearest-rank.js';

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
    const got = summary(samples);
    // within the histogram's error (and the report's 0.01 µs), far below the 1% or more
    // between neighbouring samples here: the rank is the nearest one, not its neighbour
    for (const k of ['p50', 'p99', 'p999'] as const)
      expect(Math.abs(got[k] - want[k])).toBeLessThanOrEqual(
        want[k] * LATENCY_RELATIVE_ERROR + 0.005,
      );
  });

  it('gives the minimum and the maximum exactly when their rank is asked for', () => {
    expect(summary([7])).toEqual({ mean: 7, p50: 7, p99: 7, p999: 7 });
    expect(summary([3, 1])).toMatchObject({ p50: 1, p99: 3, p999: 3 });
    expect(summary(range(100)).p999).toBe(100);
  });

  it('matches an exact sort within its stated error on skewed data; the mean exactly', () => {
    // a long-tailed mix, as a loaded machine gives: most I/Os near 20 µs, some near
    // 2 ms, a few stalls of seconds, and some under a microsecond (1 ns buckets there)
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) + 0.5) / 2 ** 31;
    const samplesNs: number[] = [];
    for (let i = 0; i < 200_000; i++) {
      const r = rand();
      const base = r < 0.9 ? 20_000 : r < 0.995 ? 2_000_000 : r < 0.999 ? 700 : 3e9;
      samplesNs.push(Math.round(base * Math.exp(-Math.log(rand()) * 0.5)));
    }
    const rec = new LatencyRecorder();
    for (const ns of samplesNs) rec.recordNs(ns);
    const sorted = Float64Array.from(samplesNs).sort();
    const got = rec.summary();
    const sum = samplesNs.reduce((a, b) => a + b, 0);
    expect(got.mean).toBe(Math.round(sum / samplesNs.length / 10) / 100);
    for (const [k, q] of [
      ['p50', 0.5],
      ['p99', 0.99],
      ['p999', 0.999],
    ] as const) {
      const exact = nearestRank(sorted, q) / 1000;
      // the bound, and the report's rounding to 0.01 µs
      expect(Math.abs(got[k] - exact)).toBeLessThanOrEqual(exact * LATENCY_RELATIVE_ERROR + 0.005);
    }
    expect(LATENCY_RELATIVE_ERROR).toBeLessThanOrEqual(0.001); // as the README states
    // every quantile, not only the three reported, from 1 ns to seconds
    const fine = new LatencyRecorder();
    for (const ns of [1, 1023, 1024, 1025, 2047, 2048, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 5])
      fine.recordNs(ns);
    for (const ns of samplesNs.slice(0, 5000)) fine.recordNs(ns);
    const all = [1, 1023, 1024, 1025, 2047, 2048, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 5]
      .concat(samplesNs.slice(0, 5000))
      .sort((a, b) => a - b);
    for (let rank = 2; rank < all.length; rank++) {
      const exact = all[rank - 1]!;
      const ns = fine.percentilesNs([(rank - 0.5) / all.length])[0]!;
      expect(Math.abs(ns - exact)).toBeLessThanOrEqual(exact * LATENCY_RELATIVE_ERROR);
    }
  });

  it('keeps the maximum exact beyond its last bucket', () => {
    const rec = new LatencyRecorder();
    rec.recordNs(1000);
    rec.recordNs(2 ** 50); // about 13 days
    expect(rec.summary().p999).toBe(Math.round(2 ** 50 / 10) / 100);
  });

  it('does not grow with the number of latencies it records, nor allocate per record', () => {
    const rec = new LatencyRecorder();
    const bytes = rec.bytes;
    expect(bytes).toBeLessThan(256 * 1024);
    rec.recordNs(1);
    const before = process.memoryUsage().arrayBuffers;
    // 4M latencies: kept one by one, they took 64 MiB (32 MiB, grown by doubling)
    for (let i = 0; i < 4_000_000; i++) rec.recordNs(1000 + (i % 100_000) * 37);
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1 << 20);
    expect(rec.bytes).toBe(bytes);
    expect(rec.count).toBe(4_000_001);
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
