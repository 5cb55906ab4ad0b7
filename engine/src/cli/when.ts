/** Moments on the command line: printed in local time, read as "ago" or as a date. */
import { UserError } from '../util/errors.js';

const pad = (n: number) => String(n).padStart(2, '0');

/** `2026-11-27 06:51:39` in this machine's time zone: sortable, and what `date` shows. */
export function formatWhen(ms: number): string {
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

const UNIT_MS: Record<string, number> = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `--since`: a time ago (90s, 30m, 2h, 7d) or a date and time in local time
 * (2026-11-27, "2026-11-27 06:00", 2026-11-27T06:00:30). Returns ms since the epoch.
 */
export function parseSince(command: string, text: string, now = Date.now()): number {
  const ago = /^(\d+)([smhd])$/.exec(text);
  const at = ago ? now - Number(ago[1]) * UNIT_MS[ago[2]!]! : localTime(text);
  if (typeof at === 'number' && at >= 0) return at;
  const hint =
    'Give a time ago such as 90s, 30m, 2h or 7d, or a date such as 2026-11-27 or "2026-11-27 06:00" (local time).';
  if (at === 'skipped') {
    throw new UserError(
      `${command}: --since "${text}": that local time does not exist here: the clocks were put forward over it (daylight saving time).`,
      'Give a time just after the change (an hour later), or a time ago such as 2h.',
      'usage',
    );
  }
  throw new UserError(
    at === null
      ? `${command}: --since "${text}" is neither a time ago nor a date.`
      : `${command}: --since "${text}" is before 1970.`,
    hint,
    'usage',
  );
}

/**
 * `YYYY-MM-DD[ HH:MM[:SS]]` (or with a T) in local time; null when no such date or
 * time, 'skipped' for a time of day the clocks jumped over (daylight saving time). A
 * date alone is the start of that day, even where it starts at 01:00 (zones whose
 * clocks go forward at midnight).
 */
function localTime(text: string): number | null | 'skipped' {
  const m = /^(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2}))?)?$/.exec(text);
  if (!m) return null;
  const [y, mo, d, h = 0, mi = 0, sec = 0] = m
    .slice(1)
    .map((v) => (v === undefined ? undefined : Number(v)));
  if (h > 23 || mi > 59 || sec > 59) return null;
  const t = new Date(y!, mo! - 1, d!, h, mi, sec);
  // Date rolls 2026-02-31 over to 3 March: a date that does not exist is refused
  if (t.getFullYear() !== y || t.getMonth() !== mo! - 1 || t.getDate() !== d) return null;
  const asGiven = t.getHours() === h && t.getMinutes() === mi && t.getSeconds() === sec;
  if (asGiven || m[4] === undefined) return t.getTime();
  return 'skipped';
}
