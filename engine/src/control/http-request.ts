/**
 * What the console's HTTP server reads off a request before anything else: its path
 * and who sent it. Nothing here throws, whatever the client sent: these run inside the
 * server's event listeners, where an exception would stop the whole engine.
 */
import type http from 'node:http';
import { isIPv6 } from 'node:net';

/**
 * The request's path (origin-form target, up to any query), or null when the target
 * is not a path: absolute-form (`GET http://host/ HTTP/1.1`), authority or asterisk.
 * Not percent-decoded and not normalised.
 */
export function requestPath(req: http.IncomingMessage): string | null {
  const target = req.url ?? '';
  if (!target.startsWith('/')) return null;
  const end = target.search(/[?#]/);
  return end < 0 ? target : target.slice(0, end);
}

/** The client's address as people read it (IPv4-mapped IPv6 shown as IPv4). */
export function clientAddress(req: http.IncomingMessage): string {
  return readableAddress(req.socket.remoteAddress ?? 'unknown');
}

export function readableAddress(a: string): string {
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

/**
 * The unit that limits count against. One client can use many addresses: any local
 * user binds any of 127.0.0.0/8, and an IPv6 client usually holds a whole /64. So all
 * of loopback is one client, an IPv6 client is its /64, an IPv4 client its address.
 */
export function clientBucket(address: string): { key: string; label: string } {
  const a = readableAddress(address);
  if (a === '::1' || /^127\.\d+\.\d+\.\d+$/.test(a))
    return { key: 'loopback', label: 'this machine (loopback)' };
  if (isIPv6(a)) {
    const prefix = ipv6Groups(a).slice(0, 4).join(':');
    return { key: `${prefix}::/64`, label: `${prefix}::/64` };
  }
  return { key: a, label: a };
}

/** The eight 16-bit groups of an IPv6 address, as lower-case hex without leading zeros. */
function ipv6Groups(a: string): string[] {
  const zone = a.indexOf('%');
  const addr = (zone < 0 ? a : a.slice(0, zone)).toLowerCase();
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  // An embedded IPv4 tail (::ffff:1.2.3.4 forms other than the mapped one) is two groups.
  const last = right.length ? right : left;
  if (last.length && last[last.length - 1]!.includes('.')) {
    const v4 = last.pop()!.split('.').map(Number);
    last.push(((v4[0]! << 8) | v4[1]!).toString(16), ((v4[2]! << 8) | v4[3]!).toString(16));
  }
  const fill =
    tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...fill, ...right].map((g) => parseInt(g || '0', 16).toString(16));
}
