/**
 * Wall-clock moments in the viewer's locale and time zone, to the second, naming the
 * zone ("14:05:09 CET"): an administrator reading a branch's console from head office,
 * or comparing it with the engine's logs, needs to know which zone a time is in.
 */
export function formatDateTime(msSinceEpoch: number): string {
  return new Date(msSinceEpoch).toLocaleString(undefined, {
    dateStyle: 'medium',
    timeStyle: 'long',
  });
}

/** The time of day alone when it is today here, else the date with it. */
export function formatTime(msSinceEpoch: number, now = Date.now()): string {
  const at = new Date(msSinceEpoch);
  if (at.toDateString() !== new Date(now).toDateString()) return formatDateTime(msSinceEpoch);
  return at.toLocaleTimeString(undefined, { timeStyle: 'long' });
}
