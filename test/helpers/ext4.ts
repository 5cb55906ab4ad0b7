/**
 * A small ext4 file system on a loop-mounted image, for tests that need a disk which
 * can be made to stall (fsfreeze). Needs root, mkfs.ext4 and loop mounts; a sandbox
 * that refuses any of them gets the reason instead, for a skip.
 */
import { mkdirSync, truncateSync, writeFileSync } from 'node:fs';
import { tryRun } from '../unit/storage/helpers.js';

/** Makes `${at}.img`, formats it ext4 and mounts it on `at` (created). Unmount it yourself. */
export function mountExt4(at: string, sizeBytes = 64 << 20): string | { refused: string } {
  const image = `${at}.img`;
  mkdirSync(at);
  writeFileSync(image, '');
  truncateSync(image, sizeBytes);
  const made = tryRun('mkfs.ext4', ['-q', image]);
  if ('refused' in made) return made;
  const mounted = tryRun('mount', ['-o', 'loop', image, at]);
  if ('refused' in mounted) return mounted;
  return at;
}
