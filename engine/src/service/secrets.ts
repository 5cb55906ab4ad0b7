/**
 * Secrets are files under DATA/secrets (0700), each 0600 and owned by the service.
 * A secret whose mode lets others read it is refused rather than used.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { UserError } from '../util/errors.js';

export function secretsDir(dataDir: string): string {
  const dir = path.join(dataDir, 'secrets');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.chmodSync(dir, 0o700);
  return dir;
}

/** Reads a secret, creating it with `make` on first use. */
export function loadOrCreateSecret(dataDir: string, name: string, make: () => string): string {
  const file = path.join(secretsDir(dataDir), name);
  try {
    const st = fs.statSync(file);
    if ((st.mode & 0o077) !== 0) {
      throw new UserError(
        `The secret ${file} is readable by other users (mode ${(st.mode & 0o777).toString(8)}).`,
        `Run: chmod 600 ${file}  (or delete it to have a new one generated).`,
      );
    }
    return withoutLineEnd(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const value = make();
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, value + '\n', { mode: 0o600 });
  fs.renameSync(tmp, file);
  return value;
}

/**
 * A secret file's value: its text without the one line end written after it (or an
 * editor added). Nothing else is stripped: a password may begin or end with spaces.
 */
function withoutLineEnd(text: string): string {
  return text.replace(/\r?\n$/, '');
}

export function randomToken(bytes = 24): string {
  return randomBytes(bytes).toString('base64url');
}

/** Replaces a secret (written 0600 to a temporary name, then renamed over the old one). */
export function writeSecret(dataDir: string, name: string, value: string): void {
  const file = path.join(secretsDir(dataDir), name);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, value + '\n', { mode: 0o600 });
  fs.renameSync(tmp, file);
}

/** A secret's value, or undefined when it is not set. Refuses one others can read. */
export function readSecret(dataDir: string, name: string): string | undefined {
  const file = path.join(secretsDir(dataDir), name);
  if (!fs.existsSync(file)) return undefined;
  return loadOrCreateSecret(dataDir, name, () => '');
}

export function deleteSecret(dataDir: string, name: string): void {
  fs.rmSync(path.join(secretsDir(dataDir), name), { force: true });
}
