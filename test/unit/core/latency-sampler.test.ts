/**
 * Which commands the core times for its latency figures (LatencySampler), and what
 * IoStats makes of them: every command while they come slowly, a random share of them
 * when they come fast, weighted so that the figures stay right.
 */
import { describe, expect, it } from 'vitest';
import { IoStats, LatencySampler, MAX_TIME_EVERY } from '../../../engine/src/core/stats.js';

/** A sampler on a clock that advances `stepMs` per command; `run(n, latency)` records n. */
function fastCommands(stepMs: number) {
  let now = 1000;
  const sampler = new LatencySampler(() => now);
  const stats = new IoStats();
  let timed = 0;
  let weights = 0;
  const run = (n: number, latencyUs: (i: number) => number) => {
    for (let i = 0; i < n; i++) {
      const t = sampler.start();
      if (t) {
        timed++;
        weights += t.weight;
        expect(t.at).toBe(now);
      }
      stats.record('read', 4096, t ? latencyUs(i) : -1, false, t?.weight);
      now += stepMs;
    }
  };
  return { sampler, stats, run, counts: () => ({ timed, weights }) };
}

const histTotal = (h: Float64Array) => h.reduce((a, n) => a + n, 0);

describe('LatencySampler', () => {
  it('times every command while they come 30 µs apart: exact figures', () => {
    const s = fastCommands(0.03);
    s.run(10_000, (i) => 10 + (i % 7));
    expect(s.counts()).toEqual({ timed: 10_000, weights: 10_000 });
    let sum = 0;
    for (let i = 0; i < 10_000; i++) sum += 10 + (i % 7);
    expect(s.stats.readLatencyUs).toBe(sum);
    expect(histTotal(s.stats.readLatencyHist)).toBe(10_000);
    expect(s.stats.readOps).toBe(10_000);
  });

  it('times about one command per 50 µs when they come faster; ops and bytes stay exact', () => {
    const s = fastCommands(0.001); // 1M commands per second
    const n = 200_000;
    s.run(n, () => 20);
    const { timed, weights } = s.counts();
    // 200 ms of commands, one timed per 25-100 µs: 2000 to 8000 of them
    expect(timed).toBeGreaterThanOrEqual(2000);
    expect(timed).toBeLessThanOrEqual(8000);
    // each timed one stands for itself and the untimed ones up to the next (at most
    // 2 × MAX_TIME_EVERY - 1 commands): the weights add up to the commands
    expect(weights).toBeGreaterThanOrEqual(n);
    expect(weights).toBeLessThan(n + 2 * MAX_TIME_EVERY);
    expect(s.stats.readOps).toBe(n);
    expect(s.stats.readBytes).toBe(n * 4096);
    expect(histTotal(s.stats.readLatencyHist)).toBe(weights);
    expect(s.stats.readLatencyUs).toBe(20 * weights);
  });

  it('estimates the mean of a latency that repeats with each batch of 16 without bias', () => {
    // The first command of a batch a host sends waits longest: 50 µs down to 5 µs. A
    // fixed one in 16 would time one place of every batch and report 50 or 5.
    const s = fastCommands(0.004); // 250k per second: every 8 to 16
    const latency = (i: number) => 50 - 3 * (i % 16);
    const n = 400_000;
    s.run(n, latency);
    const trueMean = 27.5; // (50 + 5) / 2
    const { weights } = s.counts();
    expect(s.counts().timed).toBeLessThan(n / 4);
    expect(s.stats.readLatencyUs / weights).toBeGreaterThan(trueMean * 0.97);
    expect(s.stats.readLatencyUs / weights).toBeLessThan(trueMean * 1.03);
    // and the histogram's shape: each place of the batch about as often
    const hist = s.stats.readLatencyHist;
    const share = (b: number) => hist[b]! / weights;
    // [32, 64) µs holds 50, 47, ..., 35, 32: 7 of 16 places
    expect(share(6)).toBeGreaterThan((7 / 16) * 0.95);
    expect(share(6)).toBeLessThan((7 / 16) * 1.05);
  });

  it('times every command again once they come slowly after a burst', () => {
    let now = 0;
    const sampler = new LatencySampler(() => now);
    for (let i = 0; i < 50_000; i++) {
      sampler.start();
      now += 0.001;
    }
    // A few timed commands at 1 ms apart bring it back to one in one.
    const seen: (number | null)[] = [];
    for (let i = 0; i < 400; i++) {
      now += 1;
      seen.push(sampler.start()?.weight ?? null);
    }
    expect(seen.slice(-100).every((w) => w === 1)).toBe(true);
  });
});

describe('IoStats.record', () => {
  it('counts an untimed command in ops, bytes and errors but not in the latencies', () => {
    const s = new IoStats();
    s.record('read', 4096, -1, false);
    s.record('write', 8192, -1, true);
    s.record('other', 0, -1, false);
    expect([s.readOps, s.readBytes, s.writeOps, s.writeBytes, s.otherOps, s.errors]).toEqual([
      1, 4096, 1, 8192, 1, 1,
    ]);
    expect([s.readLatencyUs, s.writeLatencyUs, s.otherLatencyUs]).toEqual([0, 0, 0]);
    expect(histTotal(s.readLatencyHist) + histTotal(s.writeLatencyHist)).toBe(0);
  });

  it('weights a timed command for the untimed ones it stands for', () => {
    const s = new IoStats();
    s.record('write', 4096, 100, false, 8);
    s.record('other', 0, 30, false, 4);
    expect(s.writeLatencyUs).toBe(800);
    expect(s.writeLatencyHist[7]).toBe(8); // [64, 128) µs
    expect(s.otherLatencyUs).toBe(120);
  });
});
