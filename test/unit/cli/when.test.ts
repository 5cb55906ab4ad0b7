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

  // Chile puts its clocks forward at midnight: 6 September 2026 starts at 01:00 there.
  // Europe skips 02:00-03:00 on 29 March 2026.
  it('reads a date whose midnight was skipped as the start of that day, and says why a skipped time is refused', () => {
    const tz = process.env.TZ;
    try {
      process.env.TZ = 'America/Santiago';
      expect(formatWhen(parseSince('events', '2026-09-06', now))).toBe('2026-09-06 01:00:00');
      process.env.TZ = 'Europe/Berlin';
      expect(() => parseSince('events', '2026-03-29 02:30', now)).toThrow(
        'events: --since "2026-03-29 02:30": that local time does not exist here: the clocks were put forward over it (daylight saving time).',
      );
      expect(formatWhen(parseSince('events', '2026-03-29 03:30', now))).toBe('2026-03-29 03:30:00');
    } finally {
      if (tz === undefined) delete process.env.TZ;
      else process.env.TZ = tz;
    }
  });
});
