import { describe, expect, it } from 'vitest';
import { formatDateTime, formatTime } from '../../../../renderer/src/format/time.js';

// vitest runs with the machine's zone; these read the same in any zone and locale
const NOW = Date.UTC(2026, 10, 27, 12, 30, 0); // a minute before it is the same day in every zone
const zone = new Intl.DateTimeFormat(undefined, { timeZoneName: 'short' })
  .formatToParts(NOW)
  .find((p) => p.type === 'timeZoneName')!.value;

describe('times on the console', () => {
  it('name their time zone', () => {
    expect(formatTime(NOW - 60_000, NOW)).toContain(zone);
    expect(formatDateTime(NOW)).toContain(zone);
  });

  it('carry the date when it is not today here', () => {
    const today = formatTime(NOW - 60_000, NOW);
    const lastWeek = formatTime(NOW - 7 * 86_400_000, NOW);
    expect(lastWeek).toBe(formatDateTime(NOW - 7 * 86_400_000));
    expect(lastWeek.length).toBeGreaterThan(today.length);
    expect(today).not.toContain(String(new Date(NOW).getFullYear()));
  });
});
