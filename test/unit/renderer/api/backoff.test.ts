import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../../../renderer/src/api/backoff.js';

describe('backoffDelay', () => {
  it('doubles from 0.5 s up to the 10 s bound', () => {
    const top = (n: number) => backoffDelay(n, { random: () => 1 });
    expect([0, 1, 2, 3, 4, 5, 6, 40].map(top)).toEqual([
      500, 1000, 2000, 4000, 8000, 10000, 10000, 10000,
    ]);
    expect(top(Number.POSITIVE_INFINITY)).toBe(10000);
  });

  it('jitters within the upper half of each step', () => {
    expect(backoffDelay(3, { random: () => 0 })).toBe(2000);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(3);
      expect(d).toBeGreaterThanOrEqual(2000);
      expect(d).toBeLessThanOrEqual(4000);
    }
  });
});
