const UNITS: [label: string, seconds: number][] = [
  ['d', 86_400],
  ['h', 3_600],
  ['min', 60],
  ['s', 1],
];

/**
 * A duration for people: "2 h 3 min 5 s", "4 d 0 h 12 min 9 s", "0 s".
 * Starts at the largest non-zero unit and always ends in seconds, so a value read twice
 * visibly advances; fractions of a second are dropped.
 */
export function formatDuration(totalSeconds: number): string {
  let rest = Math.max(0, Math.floor(Number.isFinite(totalSeconds) ? totalSeconds : 0));
  const parts: string[] = [];
  for (const [label, size] of UNITS) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n > 0 || parts.length > 0 || size === 1) parts.push(`${n} ${label}`);
  }
  return parts.join(' ');
}
