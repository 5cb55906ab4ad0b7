/**
 * Writes that survive a power cut: a file's bytes on the medium before a link or
 * rename names it (else ext4 and XFS, which delay allocation, can leave the name on an
 * empty file), and the directory synced after, so the new name itself is kept.
 */
import fs from 'node:fs';

/** Creates `file` (mode `mode`, whatever the umask) holding `content`, synced. */
export function writeFileSynced(file: string, content: string, mode: number): void {
  const fd = fs.openSync(file, 'w', mode);
  try {
    fs.writeFileSync(fd, content);
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Makes a link, rename or unlink in `dir` durable (Linux syncs a directory opened
 * read-only). Best effort: the change has taken effect, and failing here would report
 * it as not made; a directory that cannot be synced is a failing disk, which the
 * engine's other checks report.
 */
export function syncDirectory(dir: string): void {
  try {
    const fd = fs.openSync(dir, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // see above
  }
}
