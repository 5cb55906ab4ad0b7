/**
 * One engine per data directory. The lock is a file created with O_EXCL holding the
 * owner's pid and, on its second line, the engine's API socket (so `status --data DIR`
 * finds an engine whose socket lives elsewhere, as the service's /run/branchsan/ one
 * does); a lock left by a dead process (kill -9, power cut) is taken over. Readable by
 * the admin group (0640), which may use the socket.
 */
import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../util/errors.js';

export interface InstanceLock {
  readonly path: string;
  release(): void;
}

export function acquireInstanceLock(dataDir: string, socketPath: string): InstanceLock {
  const file = path.join(dataDir, 'engine.lock');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = fs.openSync(file, 'wx', 0o640);
      try {
        fs.writeSync(fd, `${process.pid}\n${socketPath}\n`);
      } catch (err) {
        // A full disk: leave no empty lock behind (and no open fd).
        fs.closeSync(fd);
        fs.rmSync(file, { force: true });
        throw err;
      }
      fs.closeSync(fd);
      let released = false;
      return {
        path: file,
        release() {
          if (released) return;
          released = true;
          if (readOwner(file) === process.pid) fs.rmSync(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = readOwner(file);
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
 * The API socket of the engine on `dataDir`: the one its lock names while it runs,
 * else DIR/engine.sock (the default).
 */
export function engineSocketPath(dataDir: string): string {
  try {
    const recorded = fs.readFileSync(path.join(dataDir, 'engine.lock'), 'utf8').split('\n')[1];
    if (recorded && path.isAbsolute(recorded)) return recorded;
  } catch {
    // no engine running (or an unreadable lock): the default place
  }
  return path.join(dataDir, 'engine.sock');
}

function readOwner(file: string): number | undefined {
  try {
    const pid = Number.parseInt(fs.readFileSync(file, 'utf8').trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
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
