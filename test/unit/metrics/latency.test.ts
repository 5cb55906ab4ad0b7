/** The core's log2 latency histogram and the percentiles the sampler derives from it. */
import { describe, expect, it } from 'vitest';
import { IoStats, LATENCY_BUCKETS, latencyBucket } from '../../../engine/src/core/stats.js';
import {
  bucketBounds,
  histDelta,
  percentiles,
  quantile,
} from '../../../engine/src/metrics/latency.js';

describe('latency histogram', () => {
  it('puts a latency in µs into its log2 bucket', () => {
    expect(latencyBucket(0)).toBe(0);
    expect(latencyBucket(0.9)).toBe(0);
    expect(latencyBucket(1)).toBe(1);
    expect(latencyBucket(1.99)).toBe(1);
    expect(latencyBucket(2)).toBe(2);
    expect(latencyBucket(3)).toBe(2);
    expect(latencyBucket(100)).toBe(7); // [64, 128)
    expect(latencyBucket(2 ** 29)).toBe(30);
    expect(latencyBucket(2 ** 30)).toBe(LATENCY_BUCKETS - 1);
    expect(latencyBucket(1e12)).toBe(LATENCY_BUCKETS - 1);
    for (let b = 1; b < 31; b++) {
      const [lo, hi] = bucketBounds(b);
      expect(latencyBucket(lo)).toBe(b);
      expect(latencyBucket(hi - 0.5)).toBe(b);
    }
  });

  it('counts reads and writes separately, and a snapshot is a copy', () => {
    const s = new IoStats();
    s.record('read', 4096, 100, false);
    s.record('write', 4096, 3, false);
    s.record('other', 0, 5000, false);
    const snap = s.snapshot();
    s.record('read', 4096, 100, false);
    expect(snap.readLatencyHist[7]).toBe(1);
    expect(s.readLatencyHist[7]).toBe(2);
    expect(snap.writeLatencyHist[2]).toBe(1);
    expect([...snap.readLatencyHist].reduce((a, n) => a + n)).toBe(1);
  });

  it('interpolates percentiles inside the bucket, from a delta of two snapshots', () => {
    const h = new Float64Array(LATENCY_BUCKETS);
    h[7] = 900; // [64, 128) µs
    h[10] = 90; // [512, 1024)
    h[14] = 10; // [8192, 16384)
    // rank 500 of 900 in [64,128): 64 + 64 × 500/900
    expect(quantile(h, 0.5)).toBeCloseTo(64 + (64 * 500) / 900, 9);
    // rank 990 is the last of bucket 10: its upper edge
    expect(quantile(h, 0.99)).toBe(1024);
    // rank 999: 9 of 10 into [8192, 16384)
    expect(quantile(h, 0.999)).toBeCloseTo(8192 + 8192 * 0.9, 9);
    const before = new Float64Array(LATENCY_BUCKETS);
    before[7] = 400;
    const d = histDelta(h, before);
    expect(d[7]).toBe(500);
    expect(percentiles(d)!.p50).toBeCloseTo(64 + (64 * 300) / 500, 9);
    expect(percentiles(new Float64Array(LATENCY_BUCKETS))).toBeNull();
  });
});
