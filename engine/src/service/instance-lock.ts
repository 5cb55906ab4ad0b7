/**
 * One engine per data directory. The lock is a symbolic link, DIR/engine.lock, made
 * atomically (it fails if the name exists) whose target is not a path but the owner's
 * record: its pid and, after one space, the engine's API socket (so `status --data
 * DIR` finds an engine whose socket lives elsewhere, as the service's
 * /run/branchsan/one does). A short link target lives in the inode itself (ext4 up to
 * 59 bytes, xfs and tmpfs more), so the lock needs no data block: the engine starts on
 * a data disk with no byte free, where a lock file's 2 lines could not be written.
 * A record too long for that on a full disk is cut to the pid alone. A lock left by a
 * dead process (kill -9, power cut) is taken over; so is a lock file an older version
 * left (pid and socket on two lines).
 */
import fs from 'node:fs';
import path from 'node:path';
import { isDiskFull, UserError } from '../util/errors.js';

export interface InstanceLock {
  readonly path: string;
  /** False when a full disk left room for the pid only: finders use DIR/engine.sock. */
  readonly socketRecorded: boolean;
  release(): void;
}

/** What an engine lock says: its owner, and the API socket when it was recorded. */
interface LockRecord {
  pid: number | undefined;
  socket: string | undefined;
}

export function acquireInstanceLock(dataDir: string, socketPath: string): InstanceLock {
  const file = path.join(dataDir, 'engine.lock');
  for (let attempt = 0; attempt < 3; attempt++) {
    const recorded = makeLock(file, socketPath);
    if (recorded !== null) {
      let released = false;
      return {
        path: file,
        socketRecorded: recorded,
        release() {
          if (released) return;
          released = true;
          if (readLock(file).pid === process.pid) fs.rmSync(file, { force: true });
        },
      };
    }
    const owner = readLock(file).pid;
    if (owner !== undefined && owner !== process.pid && isEngineAlive(owner)) {
      throw new UserError(
        `Another BranchSAN engine (pid ${owner}) is already running on the data directory ${dataDir}.`,
        `Stop it first (kill ${owner}, or systemctl stop branchsan), or use a different --data directory.`,
        'already-running',
      );
    }
    // Stale: its owner is gone. Remove it and try again (another starter may win the race; that is fine).
    fs.rmSync(file, { force: true });
  }
  throw new UserError(
    `Could not take the engine lock ${file}; another engine keeps starting on ${dataDir}.`,
    'Make sure only one BranchSAN engine is configured for this data directory.',
    'already-running',
  );
}

/**
 * Makes the lock: true with the socket recorded, false with the pid alone (a full
 * disk refused the longer record), null when a lock is already there.
 */
function makeLock(file: string, socketPath: string): boolean | null {
  try {
    fs.symlinkSync(`${process.pid} ${socketPath}`, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null;
    if (!isDiskFull(err)) throw err;
  }
  try {
    fs.symlinkSync(String(process.pid), file);
    return false;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return null;
    throw err;
  }
}

/**
 * The API socket of the engine on `dataDir`: the one its lock names while it runs,
 * else DIR/engine.sock (the default).
 */
export function engineSocketPath(dataDir: string): string {
  const recorded = readLock(path.join(dataDir, 'engine.lock')).socket;
  // no engine running, an unreadable lock or none recorded: the default place
  return recorded && path.isAbsolute(recorded) ? recorded : path.join(dataDir, 'engine.sock');
}

/** The lock's record; nothing known when there is no lock or it cannot be read. */
function readLock(file: string): LockRecord {
  let text: string;
  try {
    text = fs.readlinkSync(file);
  } catch (err) {
    // EINVAL: a lock file of an older version ("pid\nsocket\n").
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL')
      return { pid: undefined, socket: undefined };
    try {
      text = fs.readFileSync(file, 'utf8').replace('\n', ' ').trim();
    } catch {
      return { pid: undefined, socket: undefined };
    }
  }
  const space = text.indexOf(' ');
  const pid = Number(space < 0 ? text : text.slice(0, space));
  return {
    pid: Number.isInteger(pid) && pid > 0 ? pid : undefined,
    socket: space < 0 ? undefined : text.slice(space + 1) || undefined,
  };
}

/** A live process whose command line looks like ours (pids are reused after a crash). */
function isEngineAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return /branchsan|engine/i.test(cmdline);
  } catch {
    return true; // no /proc: trust the pid
  }
}
