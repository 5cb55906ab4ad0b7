/**
 * Secrets are files under DATA/secrets (0700), each 0600 and owned by the service.
 * A secret file that cannot be used (others can read it, the engine may not, something
 * else is in its place) is refused rather than used, with what to run about it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { syncDirectory, writeFileSynced } from '../util/durable.js';
import { makeDirs } from '../util/paths.js';
import {
  checkRemovable,
  checkReplaceable,
  readSecretText,
  type SecretRenewal,
} from '../util/secret-file.js';

export function secretsDir(dataDir: string): string {
  const dir = path.join(dataDir, 'secrets');
  makeDirs(dir, 0o700);
  fs.chmodSync(dir, 0o700);
  return dir;
}

/** Reads a secret, creating it with `make` on first use (or when its file is empty). */
export function loadOrCreateSecret(dataDir: string, name: string, make: () => string): string {
  const file = path.join(secretsDir(dataDir), name);
  const stored = readSecretFile(file);
  if (stored !== undefined) return stored;
  const value = make();
  replaceSecretFile(file, value);
  return value;
}

export type { SecretRenewal };

/** A secret the engine makes when it finds none at its start (the console's setup token). */
const GENERATED: SecretRenewal = {
  orElse: 'or delete it to have a new one generated',
  afresh: 'start the engine again: it generates a new one',
};

/**
 * A secret file's value, or undefined when there is none: no file, or an empty one.
 * An empty file is what a power cut can leave of a file written just before it, and an
 * empty secret must never match an empty answer (a token, a bearer). Refuses, saying
 * what to run, a file others can read, one the engine may not read (another owner) and
 * something else than a file in its place (a directory; a named pipe would block):
 * readSecretText.
 */
function readSecretFile(file: string, renew: SecretRenewal = GENERATED): string | undefined {
  const text = readSecretText(file, renew);
  if (text === undefined) return undefined;
  const value = withoutLineEnd(text);
  return value === '' ? undefined : value;
}

/**
 * Refuses, as readSecret does, something else than a regular file where the secret
 * `name` goes, before a new value is written (writeSecret), so that nothing is changed
 * or recorded for a value that could not be put in place.
 */
export function checkSecretReplaceable(dataDir: string, name: string, renew: SecretRenewal): void {
  const file = path.join(secretsDir(dataDir), name);
  checkReplaceable(file, renew, `The secret ${file}`);
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

/**
 * Replaces a secret (written 0600 to a temporary name, then renamed over the old one).
 * `beforeRename` runs once the new value is written and before it takes effect (the
 * change's audit row): when it, or the write, fails, the temporary file is removed and
 * the old secret stays.
 */
export function writeSecret(
  dataDir: string,
  name: string,
  value: string,
  beforeRename?: () => void,
): void {
  replaceSecretFile(path.join(secretsDir(dataDir), name), value, beforeRename);
}

/** writeSecret for a file given by its path (its directory made 0700 by the caller). */
export function replaceSecretFile(file: string, value: string, beforeRename?: () => void): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    writeSynced(tmp, value);
    beforeRename?.();
    fs.renameSync(tmp, file);
    syncDirectory(path.dirname(file));
  } catch (err) {
    try {
      fs.rmSync(tmp, { force: true });
    } catch {
      // the error that stopped the change is the one to report
    }
    throw err;
  }
}

/**
 * `value` in a new 0600 file at `file`, on the medium: before a rename puts it in place,
 * else a power cut can leave the name pointing at an empty file (ext4, XFS delay
 * allocation).
 */
function writeSynced(file: string, value: string): void {
  fs.rmSync(file, { force: true }); // a leftover would keep its own mode
  writeFileSynced(file, value + '\n', 0o600);
}

/** A value written aside: DIR/secrets/NAME.TAG.staged. */
const STAGED = /^([a-z0-9-]+)\.([A-Za-z0-9_-]+)\.staged$/;

/** The mail password and webhook secret: only their owner can give them again. */
const ENTERED: SecretRenewal = {
  orElse:
    'or enter it again in Settings > Notifications, which stores it readable by this server only',
  afresh: 'enter it again in Settings > Notifications',
};

/** The same, when it is being deleted: once rm -r has removed what is there, it is. */
const DELETING: SecretRenewal = { ...ENTERED, afresh: 'save the settings again' };

/**
 * The secret files of `dataDir` as the settings store uses them (events/settings.ts
 * SecretFiles): a new value is staged, a file of its own, and put in place by a rename
 * only once the change is stored; a staged value whose rename failed stays, for the
 * next try.
 */
export function secretFiles(dataDir: string) {
  const file = (name: string, tag?: string) =>
    path.join(secretsDir(dataDir), tag === undefined ? name : `${name}.${tag}.staged`);
  return {
    // the mail password and webhook secret: deleted, none would be made
    read: (name: string) => readSecretFile(path.join(secretsDir(dataDir), name), ENTERED),
    stage(name: string, tag: string, value: string): void {
      // a directory (or pipe) in its place could not be replaced: refused before the
      // change is stored, which would say it was saved with a secret not in effect
      checkSecretReplaceable(dataDir, name, ENTERED);
      const staged = file(name, tag);
      try {
        writeSynced(staged, value);
      } catch (err) {
        try {
          fs.rmSync(staged, { force: true });
        } catch {
          // the error that stopped the change is the one to report
        }
        throw err;
      }
    },
    apply(name: string, tag: string): boolean {
      try {
        fs.renameSync(file(name, tag), file(name));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !fs.existsSync(file(name, tag)))
          return false;
        throw err;
      }
      syncDirectory(secretsDir(dataDir));
      return true;
    },
    discard(keep: ReadonlySet<string>): void {
      const dir = secretsDir(dataDir);
      for (const f of fs.readdirSync(dir)) {
        const m = STAGED.exec(f);
        if (m && !keep.has(`${m[1]}.${m[2]}`)) fs.rmSync(path.join(dir, f), { force: true });
      }
    },
    checkRemovable(name: string): void {
      // a directory in its place could not be deleted: refused before the change is
      // stored, which would say it was saved with the secret still set
      const f = file(name);
      checkRemovable(f, DELETING, `The secret ${f}`);
    },
    remove: (name: string) => deleteSecret(dataDir, name, DELETING),
  };
}

/**
 * A secret's value, or undefined when it is not set. Refuses a file that cannot be used
 * (readSecretFile), with `renew` in its hint: how this secret is had anew.
 */
export function readSecret(
  dataDir: string,
  name: string,
  renew: SecretRenewal = GENERATED,
): string | undefined {
  return readSecretFile(path.join(secretsDir(dataDir), name), renew);
}

/**
 * Deletes a secret; a directory in its place is refused (checkRemovable), saying what is
 * there and to rm -r it, then `renew.afresh`.
 */
export function deleteSecret(
  dataDir: string,
  name: string,
  renew: SecretRenewal = GENERATED,
): void {
  const file = path.join(secretsDir(dataDir), name);
  checkRemovable(file, renew, `The secret ${file}`);
  fs.rmSync(file, { force: true });
}

/**
 * Deletes secret files of one directory, durably: a power cut right after must not
 * bring back a secret whose deletion was reported.
 */
export function removeSecretFiles(dir: string, names: readonly string[]): void {
  if (names.length === 0) return;
  for (const n of names) fs.rmSync(path.join(dir, n), { force: true });
  syncDirectory(dir);
}
