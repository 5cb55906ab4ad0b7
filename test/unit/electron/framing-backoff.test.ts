import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_BACKOFF } from '../../../electron/src/backoff.js';
import { LineFramer, LineTooLongError } from '../../../electron/src/line-framer.js';

describe('LineFramer', () => {
  it('returns whole lines, keeps the tail, skips blank lines', () => {
    const f = new LineFramer(100);
    expect(f.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(f.push(':2}\n\n  \n{"c":3}\n')).toEqual(['{"b":2}', '{"c":3}']);
    expect(f.push('')).toEqual([]);
  });

  it('splits a message at every offset the same way', () => {
    const text = '{"x":"é€"}\n{"y":[1,2]}\n';
    for (let i = 0; i <= text.length; i++) {
      const f = new LineFramer(100);
      expect([...f.push(text.slice(0, i)), ...f.push(text.slice(i))]).toEqual([
        '{"x":"é€"}',
        '{"y":[1,2]}',
      ]);
    }
  });

  it('refuses an unterminated line past the limit, and a terminated one', () => {
    expect(() => new LineFramer(10).push('x'.repeat(11))).toThrow(LineTooLongError);
    expect(() => new LineFramer(10).push('x'.repeat(11) + '\n')).toThrow(LineTooLongError);
    const f = new LineFramer(10);
    f.push('x'.repeat(6));
    expect(() => f.push('x'.repeat(5))).toThrow(/longer than 10 characters/);
    expect(new LineFramer(10).push('x'.repeat(10) + '\n')).toEqual(['x'.repeat(10)]);
  });

  it('forgets a partial line on reset', () => {
    const f = new LineFramer(100);
    f.push('{"half":');
    f.reset();
    expect(f.push('{"whole":1}\n')).toEqual(['{"whole":1}']);
  });
});

describe('backoffDelay', () => {
  it('starts at 250 ms, doubles, and caps at 10 s by default', () => {
    const mid = (): number => 0.5; // zero jitter
    const seq = Array.from({ length: 10 }, (_, i) => backoffDelay(i, DEFAULT_BACKOFF, mid));
    expect(seq).toEqual([250, 500, 1000, 2000, 4000, 8000, 10000, 10000, 10000, 10000]);
    expect(backoffDelay(10_000, DEFAULT_BACKOFF, mid)).toBe(10_000);
  });

  it('jitters within ±20 % and never exceeds the cap', () => {
    expect(backoffDelay(0, DEFAULT_BACKOFF, () => 0)).toBe(200);
    expect(backoffDelay(0, DEFAULT_BACKOFF, () => 1)).toBe(300);
    expect(backoffDelay(20, DEFAULT_BACKOFF, () => 1)).toBe(10_000);
    expect(backoffDelay(20, DEFAULT_BACKOFF, () => 0)).toBe(8_000);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(i % 12, DEFAULT_BACKOFF);
      expect(d).toBeGreaterThanOrEqual(200);
      expect(d).toBeLessThanOrEqual(10_000);
    }
  });
});
