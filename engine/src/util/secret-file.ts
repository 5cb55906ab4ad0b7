/**
 * Reading one secret file (DATA/secrets/NAME, 0600, owned by the engine's user), for
 * the service's secrets and the console's password file alike. A file that cannot be
 * used (others can read it, the engine may not, something else in its place, a read
 * error) is refused with what to run about it, never read as if it were the secret.
 */
import fs from 'node:fs';
import os from 'node:os';
import { errorCode, UserError } from './errors.js';

/**
 * How a secret of one kind is had anew, for the hints about a file that cannot be used:
 * `orElse` instead of repairing the file, `afresh` once it is removed (a directory in
 * its place cannot be repaired).
 */
export interface SecretRenewal {
  orElse: string;
  afresh: string;
}

/**
 * Opened without blocking: a named pipe opens at once (a blocking open waits for a
 * writer, for good, with the engine's thread and SIGTERM held), then fstat refuses it.
 * Symbolic links are followed: an administrator may link a certificate in.
 */
const OPEN_FLAGS = fs.constants.O_RDONLY | fs.constants.O_NONBLOCK;

/**
 * The text of the secret file `file`, or undefined when there is none. The file is
 * opened first and everything is checked on what was opened (fstat), so the check and
 * the read are of the same file: something swapped in between (a named pipe, which a
 * read would wait on) cannot be read. `label` names it in messages ('The secret FILE').
 */
export function readSecretText(
  file: string,
  renew: SecretRenewal,
  label = `The secret ${file}`,
): string | undefined {
  return readSecretWithStats(file, renew, label)?.text;
}

/**
 * readSecretText, with what fstat said of the file read (its mtime: when the secret
 * was made).
 */
export function readSecretWithStats(
  file: string,
  renew: SecretRenewal,
  label = `The secret ${file}`,
): { text: string; stats: fs.Stats } | undefined {
  let got: { text: string | null; stats: fs.Stats };
  try {
    got = readIfRegular(file, (stats) => {
      if ((stats.mode & 0o077) !== 0) {
        throw new UserError(
          `${label} is readable by other users (mode ${modeOf(stats)}).`,
          `Run: chmod 600 ${file}  (${renew.orElse}).`,
        );
      }
    });
  } catch (err) {
    if (err instanceof UserError) throw err;
    const code = errorCode(err);
    if (code === 'ENOENT') return undefined;
    if (code === 'EACCES' || code === 'EPERM') throw notReadable(file, label, code, renew);
    if (code === 'ENXIO') throw notRegular(file, label, 'a special file', renew); // a socket
    throw readFailed(file, label, err, renew);
  }
  const { text, stats } = got;
  if (text === null)
    throw notRegular(file, label, stats.isDirectory() ? 'a directory' : 'a special file', renew);
  return { text, stats };
}

/**
 * The text of `file` if what opening it gave is a regular file (`text` null, unread,
 * when it is something else: a directory, a named pipe, a device), with what fstat said
 * of it. Opened without blocking and checked on the descriptor, so nothing swapped in
 * by name between the check and the read is read; symbolic links are followed.
 * `check` sees a regular file's stats before the read, and refuses it by throwing.
 * Errors of open, fstat and read are thrown as fs gives them.
 */
export function readIfRegular(
  file: string,
  check?: (stats: fs.Stats) => void,
): { text: string | null; stats: fs.Stats } {
  const fd = fs.openSync(file, OPEN_FLAGS);
  try {
    const stats = fs.fstatSync(fd);
    if (!stats.isFile()) return { text: null, stats };
    check?.(stats);
    return { text: fs.readFileSync(fd, 'utf8'), stats };
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Refuses, as readSecretText does, something else than a regular file at `file` (a new
 * value could not be renamed over a directory), before a new value is written. `failed`:
 * the error of a write or rename of it that failed, which this looks into; when looking
 * fails too, the message names both, the one that stopped the change first.
 */
export function checkReplaceable(
  file: string,
  renew: SecretRenewal,
  label: string,
  failed?: unknown,
): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return;
    if (failed === undefined) throw readFailed(file, label, err, renew);
    throw new UserError(
      `${label} could not be replaced (${codeOf(failed)}), and looking at what is there failed too (${codeOf(err)}).`,
      readFailed(file, label, err, renew).hint,
    );
  }
  if (!st.isFile())
    throw notRegular(file, label, st.isDirectory() ? 'a directory' : 'a special file', renew);
}

/**
 * Refuses a directory where the secret file `file` is to be deleted (rm of a secret is
 * not recursive: what an administrator put there is not deleted with it), saying what
 * is there and to rm -r it, then `renew.afresh`. A named pipe or other file is deleted
 * as a file is; a symbolic link is deleted, not what it points to.
 */
export function checkRemovable(file: string, renew: SecretRenewal, label: string): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.lstatSync(file, { throwIfNoEntry: false });
  } catch (err) {
    throw readFailed(file, label, err, renew);
  }
  if (st?.isDirectory()) throw notRegular(file, label, 'a directory', renew);
}

function notRegular(
  file: string,
  label: string,
  what: 'a directory' | 'a special file',
  renew: SecretRenewal,
): UserError {
  return new UserError(
    `${label} is ${what === 'a directory' ? what : 'a special file (a named pipe, socket or device)'}, not a regular file.`,
    `Run: rm -r ${file}, then ${renew.afresh}.`,
  );
}

/** The engine may not open it: says its owner and mode, and the chown to run. */
function notReadable(file: string, label: string, code: string, renew: SecretRenewal): UserError {
  const me = engineUser();
  let owner = '';
  try {
    const st = fs.statSync(file);
    owner = `it belongs to uid ${st.uid} with mode ${modeOf(st)}, and `;
  } catch {
    // a directory above it the engine may not enter: its owner is not to be had
  }
  return new UserError(
    `${label} cannot be read by the engine (${code}: ${owner}the engine runs as ${me.name === String(me.uid) ? 'uid ' : `${me.name}, uid `}${me.uid}).`,
    `Run as root: chown ${me.name} ${file} && chmod 600 ${file}  (${renew.orElse}).`,
  );
}

/** Any other failure (EIO from a failing disk, ELOOP, ENOTCONN from a dead mount). */
function readFailed(file: string, label: string, err: unknown, renew: SecretRenewal): UserError {
  return new UserError(
    `${label} could not be read (${codeOf(err)}).`,
    `Check what is at ${file} (ls -l it) and the disk that holds it (dmesg for I/O errors), then try again (${renew.orElse}).`,
  );
}

/** An error's errno name (ELOOP), else its message. */
function codeOf(err: unknown): string {
  return errorCode(err) || (err as Error).message;
}

function modeOf(st: fs.Stats): string {
  return (st.mode & 0o777).toString(8);
}

/** Who the engine runs as: its user name, or its uid when it has none. */
function engineUser(): { name: string; uid: number } {
  const uid = process.getuid?.() ?? -1;
  try {
    return { name: os.userInfo().username, uid };
  } catch {
    return { name: String(uid), uid }; // no passwd entry (a container's arbitrary uid)
  }
}
