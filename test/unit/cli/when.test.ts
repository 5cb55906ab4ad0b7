import { describe, expect, it } from 'vitest';
import { formatWhen, parseSince } from '../../../engine/src/cli/when.js';

describe('--since', () => {
  const now = new Date(2026, 10, 27, 12, 0, 0).getTime();

  it('reads a time ago', () => {
    expect(parseSince('events', '90s', now)).toBe(now - 90_000);
    expect(parseSince('events', '30m', now)).toBe(now - 1_800_000);
    expect(parseSince('events', '2h', now)).toBe(now - 7_200_000);
    expect(parseSince('events', '7d', now)).toBe(now - 604_800_000);
  });

  it('reads a date and time as local time', () => {
    expect(parseSince('events', '2026-11-27', now)).toBe(new Date(2026, 10, 27).getTime());
    expect(parseSince('events', '2026-11-27 06:00', now)).toBe(
      new Date(2026, 10, 27, 6, 0).getTime(),
    );
    expect(parseSince('events', '2026-11-27T06:00:30', now)).toBe(
      new Date(2026, 10, 27, 6, 0, 30).getTime(),
    );
    expect(formatWhen(parseSince('events', '2026-03-01 23:59:59', now))).toBe(
      '2026-03-01 23:59:59',
    );
  });

  it('refuses what is no moment, with what to give instead', () => {
    for (const text of [
      'yesterday',
      '2026-02-31',
      '2026-04-31',
      '2026-13-01',
      '2026-11-27 24:00',
      '5w',
      '-1h',
    ]) {
      expect(() => parseSince('events', text, now), text).toThrow(
        `events: --since "${text}" is neither a time ago nor a date.`,
      );
    }
    expect(() => parseSince('events', '999999999d', now)).toThrow(
      'events: --since "999999999d" is before 1970.',
    );
  });
});
