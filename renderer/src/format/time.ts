/** A wall-clock moment in the viewer's locale and time zone, to the second. */
export function formatDateTime(msSinceEpoch: number): string {
  return new Date(msSinceEpoch).toLocaleString(undefined, {
    dateStyle: 'medium',
    timeStyle: 'medium',
  });
}

export function formatTime(msSinceEpoch: number): string {
  return new Date(msSinceEpoch).toLocaleTimeString(undefined, { timeStyle: 'medium' });
}
