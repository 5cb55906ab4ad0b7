/**
 * Who may open the local API socket: root (the engine's own user) and the members of
 * an admin group. The group is optional: without it the socket is owner-only (0600)
 * and the engine says how to create the group.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type { Logger } from '../../util/log.js';

export const DEFAULT_ADMIN_GROUP = 'branchsan-admin';

export interface SocketAccess {
  /** File mode for the socket. */
  mode: number;
  /** Group to give the socket to, when there is one. */
  gid?: number;
}

/** The gid of a group (local or from NSS via getent), or null when there is no such group. */
export function lookupGroupId(name: string): number | null {
  if (!/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/.test(name)) return null;
  try {
    const line = execFileSync('getent', ['group', name], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 5_000,
    });
    return gidFromGroupLine(line, name);
  } catch (err) {
    // getent exits 2 for "no such group"; anything else (not installed): read /etc/group.
    if ((err as { status?: number }).status === 2) return null;
  }
  try {
    for (const line of fs.readFileSync('/etc/group', 'utf8').split('\n')) {
      const gid = gidFromGroupLine(line, name);
      if (gid !== null) return gid;
    }
  } catch {
    // no /etc/group: no group
  }
  return null;
}

function gidFromGroupLine(line: string, name: string): number | null {
  const [n, , gid] = line.trim().split(':');
  if (n !== name || gid === undefined || !/^\d+$/.test(gid)) return null;
  return Number(gid);
}

/** Decides the socket's mode and group, and warns when only its owner can use it. */
export function socketAccessFor(groupName: string, log: Logger): SocketAccess {
  if (process.platform === 'win32') return { mode: 0o600 };
  const gid = lookupGroupId(groupName);
  if (gid === null) {
    log.warn(
      `No group "${groupName}": the API socket is usable by ${ownerName()} only (mode 0600). ` +
        `To let administrators use the desktop app and the CLI without root, run: ` +
        `groupadd --system ${groupName} && usermod -aG ${groupName} USER, then restart the engine.`,
      { group: groupName },
    );
    return { mode: 0o600 };
  }
  const uid = process.getuid?.() ?? 0;
  if (uid !== 0 && !(process.getgroups?.() ?? []).includes(gid)) {
    log.warn(
      `The engine runs as uid ${uid}, which is not in the group "${groupName}", so it cannot ` +
        `give the API socket to that group: the socket is usable by its owner only (mode 0600). ` +
        `Run the engine as root (the system service does) or add its user to the group.`,
      { group: groupName, gid },
    );
    return { mode: 0o600 };
  }
  return { mode: 0o660, gid };
}

function ownerName(): string {
  return (process.getuid?.() ?? 0) === 0 ? 'root' : 'the engine’s user';
}
