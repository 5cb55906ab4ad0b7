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
 *
 * With the C addon, the engine also holds an flock on the data directory itself for as
 * long as it runs: the kernel lets one process have it and drops it when that process
 * dies, however it dies. Only its holder may replace a stale record, so two engines
 * starting at once on a stale lock cannot both take it (without it, each could see the
 * old record stale, and one remove the other's fresh one), and an engine whose record
 * was deleted by hand still keeps a second one out. The flock needs no byte on disk
 * either. Without the addon the record alone decides, as before.
 */
import fs from 'node:fs';
import os from 'node:os';
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

/** flock(fd, exclusive) with LOCK_NB: 0 or -errno (the C addon's `lock`). */
export type Flock = (fd: number, exclusive: number) => number;

export function acquireInstanceLock(
  dataDir: string,
  socketPath: string,
  flock?: Flock,
): InstanceLock {
  const file = path.join(dataDir, 'engine.lock');
  const dirFd = flock ? holdDirectory(dataDir, flock) : null;
  try {
    const recorded = takeRecord(file, dataDir, socketPath);
    let released = false;
    return {
      path: file,
      socketRecorded: recorded,
      release() {
        if (released) return;
        released = true;
        if (readLock(file).pid === process.pid) fs.rmSync(file, { force: true });
        if (dirFd !== null) fs.closeSync(dirFd); // the flock goes with it
      },
    };
  } catch (err) {
    if (dirFd !== null) fs.closeSync(dirFd);
    throw err;
  }
}

/**
 * The flock on the data directory, held through the descriptor returned (null where
 * the file system has no flock: the record alone decides there). Throws when another
 * process holds it: an engine runs on the directory, whatever its record says.
 */
function holdDirectory(dataDir: string, flock: Flock): number | null {
  const fd = fs.openSync(dataDir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  const r = flock(fd, 1);
  if (r === 0) return fd;
  fs.closeSync(fd);
  if (r === -os.constants.errno.EWOULDBLOCK) {
    throw alreadyRunning(
      dataDir,
      flockHolder(dataDir) ?? readLock(path.join(dataDir, 'engine.lock')).pid,
    );
  }
  return null; // ENOLCK, EINVAL: a file system without flock (some network ones)
}

/** Writes our record over a stale one; true when the socket is recorded (see makeLock). */
function takeRecord(file: string, dataDir: string, socketPath: string): boolean {
  for (let attempt = 0; attempt < 3; attempt++) {
    const recorded = makeLock(file, socketPath);
    if (recorded !== null) return recorded;
    const owner = readLock(file).pid;
    // An engine of a version without the flock, or on a file system without it.
    if (owner !== undefined && owner !== process.pid && isEngineAlive(owner)) {
      throw alreadyRunning(dataDir, owner);
    }
    // Stale: its owner is gone. Remove it and try again (holding the flock, nobody
    // else does this now; without it, another starter may win the race).
    fs.rmSync(file, { force: true });
  }
  throw new UserError(
    `Could not take the engine lock ${file}; another engine keeps starting on ${dataDir}.`,
    'Make sure only one BranchSAN engine is configured for this data directory.',
    'already-running',
  );
}

function alreadyRunning(dataDir: string, pid: number | undefined): UserError {
  return pid === undefined
    ? new UserError(
        `Another BranchSAN engine is already running on the data directory ${dataDir} (it holds the directory's lock).`,
        'Stop it first (systemctl stop branchsan, or find it with `ps ax | grep branchsan`), or use a different --data directory.',
        'already-running',
      )
    : new UserError(
        `Another BranchSAN engine (pid ${pid}) is already running on the data directory ${dataDir}.`,
        `Stop it first (kill ${pid}, or systemctl stop branchsan), or use a different --data directory.`,
        'already-running',
      );
}

/**
 * The pid holding an flock on `dir`, from /proc/locks ("1: FLOCK ADVISORY WRITE PID
 * MAJ:MIN:INODE 0 EOF", device numbers in hex), or undefined when it cannot be told.
 */
function flockHolder(dir: string): number | undefined {
  try {
    const { dev, ino } = fs.statSync(dir, { bigint: true });
    const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn); // glibc's dev_t layout
    const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
    const hex = (n: bigint) => n.toString(16).padStart(2, '0');
    const id = `${hex(major)}:${hex(minor)}:${ino}`;
    for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/);
      // "1:", "FLOCK", "ADVISORY", "WRITE", pid, id, ... ("->" marks a waiter, which flock with LOCK_NB never is)
      if (f[1] === 'FLOCK' && f[5] === id) {
        const pid = Number(f[4]);
        if (Number.isInteger(pid) && pid > 0) return pid;
      }
    }
  } catch {
    // no /proc, or the directory went: not known
  }
  return undefined;
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
