/**
 * Who is calling on the local API socket, for the audit trail: the user the kernel
 * recorded for the connecting process (SO_PEERCRED, through the C addon), as
 * `NAME@local`. Without the addon (not built, or BRANCHSAN_NATIVE=off) there is no
 * name to give, and the socket server falls back to its connection number.
 */
import fs from 'node:fs';
import type { Socket } from 'node:net';
import { loadNativeAddon } from '../storage/io-worker-pool.js';
import type { Logger } from '../util/log.js';

/** Names a connected local socket's user, or null when it cannot be told. */
export type PeerNamer = (sock: Socket) => string | null;

export async function localPeerNamer(log: Logger): Promise<PeerNamer | null> {
  const addon = await loadNativeAddon((err) =>
    log.warn('API callers are named by connection, not by user: the C addon did not load', {
      err,
    }),
  );
  const peerCred = addon?.peerCred;
  if (typeof peerCred !== 'function') return null; // none, or one built before peerCred
  return (sock) => {
    // libuv's descriptor of the accepted connection (Node has no public getter)
    const fd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof fd !== 'number' || fd < 0) return null;
    try {
      return `${userName(peerCred(fd).uid)}@local`;
    } catch {
      return null;
    }
  };
}

/** Names found so far, by uid: /etc/passwd is read once per new uid, not per connection. */
const names = new Map<number, string>();

/**
 * The account name of `uid` from /etc/passwd (a few kB, read on the event loop only
 * for a uid not seen before), or "uid N" when it has none there. Accounts only a
 * directory service knows (LDAP, SSSD) are named by number: asking NSS could wait on
 * the network, and the event loop also serves the hosts' I/O.
 */
export function userName(uid: number): string {
  let name = names.get(uid);
  if (name === undefined) {
    name = passwdName(uid) ?? `uid ${uid}`;
    names.set(uid, name);
  }
  return name;
}

function passwdName(uid: number): string | null {
  try {
    for (const line of fs.readFileSync('/etc/passwd', 'utf8').split('\n')) {
      const [name, , id] = line.split(':');
      if (name && id !== undefined && id !== '' && Number(id) === uid) return name;
    }
  } catch {
    // no passwd file to read: say the number
  }
  return null;
}
