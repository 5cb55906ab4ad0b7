/** Human sizes: "64M", "10G", "1.5T", "4096" (bytes). Binary units (KiB = 1024). */
import { UserError } from '../util/errors.js';

const UNITS: Record<string, number> = {
  '': 1,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
  P: 2 ** 50,
};

/** `what` names the option for messages, with its command: "export: --create-size". */
export function parseSize(what: string, text: string): number {
  // a unit letter with an optional B or iB (10G, 10GB, 10GiB), or B alone (4096B)
  const m = /^(\d+(?:\.\d+)?)\s*(?:([KMGTP])(?:i?B)?|B)?$/i.exec(text.trim());
  const bytes = m ? Math.round(Number(m[1]) * UNITS[(m[2] ?? '').toUpperCase()]!) : NaN;
  if (m && bytes > MAX_SIZE) {
    throw new UserError(
      `${what} ${text} is too large: the most is ${formatSize(MAX_SIZE)}.`,
      undefined,
      'usage',
    );
  }
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new UserError(
      `${what} must be a size like 64M, 10G or 1T, not "${text}".`,
      undefined,
      'usage',
    );
  }
  return bytes;
}

/** The largest size parseSize accepts: 8 PiB less one KiB, whole KiB below 2^53 bytes. */
const MAX_SIZE = Math.floor(Number.MAX_SAFE_INTEGER / 1024) * 1024;

export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`;
}
