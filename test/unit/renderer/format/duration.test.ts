import { describe, expect, it } from 'vitest';
import { formatDuration } from '../../../../renderer/src/format/duration.js';

describe('formatDuration', () => {
  it.each([
    [0, '0 s'],
    [5.9, '5 s'],
    [59, '59 s'],
    [60, '1 min 0 s'],
    [7385, '2 h 3 min 5 s'],
    [3605, '1 h 0 min 5 s'],
    [90061, '1 d 1 h 1 min 1 s'],
    [-3, '0 s'],
    [Number.NaN, '0 s'],
  ])('%s s reads "%s"', (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });
});
