/**
 * Who owns the engine's socket, checked before a single byte is sent to it.
 * The engine is privileged; a socket planted by another local user at the path we
 * expect would otherwise receive the operator's requests and feed the UI lies.
 * Electron-free: testable under plain Node.
 */
import { lstatSync, type Stats } from 'node:fs';
import { dirname } from 'node:path';

const S_IWOTH = 0o002;
const S_ISVTX = 0o1000;

export interface OwnerCheckOptions {
  /** The uid trusted besides root; defaults to the current process's uid. */
  uid?: number;
}

/** The identity of the checked socket, compared again after connecting. */
export interface SocketIdentity {
  dev: number;
  ino: number;
}

/** Thrown when the socket is not one we may trust; the message is for the operator. */
export class SocketTrustError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SocketTrustError';
  }
}

/**
 * Verifies the socket at `path` and returns its identity, or throws SocketTrustError
 * (untrusted) or the lstat error (ENOENT: no engine yet, ...).
 * Rules: a real socket (not a symlink), owned by root or us, in a directory that
 * nobody else may swap it in (not world-writable unless sticky and owned by root or us).
 */
export function verifySocketOwner(path: string, opts: OwnerCheckOptions = {}): SocketIdentity {
  if (process.platform === 'win32') {
    // Named pipes have no owner that Node can read; refusing is the honest default.
    throw new SocketTrustError(
      `cannot verify who owns ${path} on Windows yet: refusing to talk to it`,
    );
  }
  const me = opts.uid ?? process.getuid?.() ?? -1;
  const st = lstatSync(path);
  if (st.isSymbolicLink()) {
    throw new SocketTrustError(
      `the engine socket ${path} is a symbolic link: refusing to follow it`,
    );
  }
  if (!st.isSocket()) {
    throw new SocketTrustError(`${path} is not a socket: refusing to talk to it`);
  }
  if (!trustedUid(st.uid, me)) {
    throw new SocketTrustError(
      `the engine socket ${path} is owned by uid ${st.uid}, not root or you: refusing to talk to it`,
    );
  }
  checkParent(dirname(path), me);
  return { dev: st.dev, ino: st.ino };
}

/** Same dev/ino as when checked: nobody swapped the file between check and connect. */
export function sameSocket(path: string, id: SocketIdentity): boolean {
  try {
    const st = lstatSync(path);
    return st.isSocket() && st.dev === id.dev && st.ino === id.ino;
  } catch {
    return false;
  }
}

function checkParent(dir: string, me: number): void {
  const st: Stats = lstatSync(dir);
  if (!st.isDirectory()) {
    throw new SocketTrustError(`${dir} is not a directory: refusing the engine socket in it`);
  }
  const worldWritable = (st.mode & S_IWOTH) !== 0;
  if (!worldWritable) return;
  const sticky = (st.mode & S_ISVTX) !== 0;
  if (sticky && trustedUid(st.uid, me)) return;
  throw new SocketTrustError(
    `the directory ${dir} holding the engine socket is writable by everyone` +
      (sticky ? ` and owned by uid ${st.uid}` : ' without the sticky bit') +
      ': anyone could have replaced the socket, refusing to talk to it',
  );
}

function trustedUid(uid: number, me: number): boolean {
  return uid === 0 || uid === me;
}
