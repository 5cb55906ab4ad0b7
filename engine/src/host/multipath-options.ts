/**
 * What MultipathNamespace.connect() checks before it connects anything, and the values
 * it derives per path: one subsystem, a valid NSID, a keep-alive on every path and no
 * fence shorter than a path's target needs (multipath-path.ts, Fencing), one host
 * identity for all paths.
 */
import { randomUUID } from 'node:crypto';
import { NSID_ALL } from '../protocol/opcodes.js';
import { DEFAULT_KATO_MS } from './controller.js';
import type { MultipathOptions, PathOptions } from './multipath.js';

/** Refuse options a multipath namespace cannot run with (throws, naming the path). */
export function checkOptions(o: MultipathOptions): void {
  if (o.paths.length === 0) throw new Error('multipath: at least one path is needed');
  const nqn = o.paths[0]!.subnqn;
  const other = o.paths.find((p) => p.subnqn !== nqn);
  if (other) {
    throw new Error(
      `multipath: every path must name the same subsystem (${nqn} vs ${other.subnqn} at ${other.host}:${other.port})`,
    );
  }
  if (!Number.isInteger(o.nsid) || o.nsid < 1 || o.nsid >= NSID_ALL) {
    throw new RangeError(`multipath: nsid ${o.nsid} is not a valid namespace id`);
  }
  const t = o.noPathTimeoutMs;
  if (t !== undefined && !(t >= 0)) {
    throw new RangeError(
      `multipath: noPathTimeoutMs ${t} is not a number of milliseconds: give 0 or more ` +
        `(Infinity: commands wait for a usable path as long as it takes), or leave it out for 30000.`,
    );
  }
  checkFence(o);
}

/** Every path needs a keep-alive, and no fence shorter than its target may need. */
function checkFence(o: MultipathOptions): void {
  const unfenceable = o.paths.find((p) => !(katoOf(p) > 0));
  if (unfenceable) {
    throw new Error(
      `multipath: path ${pathName(unfenceable)} has no keep-alive (kato ${unfenceable.kato}): ` +
        `its target never drops a controller it lost touch with, so nothing could prove that ` +
        `a write in doubt there can no longer land, and moving it to another path could ` +
        `replace newer data with older. Give the path a keep-alive (kato, e.g. 5000 ms).`,
    );
  }
  const f = o.fenceDelayMs;
  if (f === undefined) return;
  if (!Number.isFinite(f)) {
    throw new RangeError(
      `multipath: fenceDelayMs ${f} is not a finite number of milliseconds: give how long a ` +
        `write in doubt waits after its path was lost before it is resent elsewhere, or ` +
        `leave it out for the wait each path's KATO needs.`,
    );
  }
  const short = o.paths.find((p) => !(f >= defaultFenceMs(katoOf(p))));
  if (short) {
    const kato = katoOf(short);
    throw new RangeError(
      `multipath: fenceDelayMs ${f} is shorter than path ${pathName(short)} needs: its ` +
        `target may keep a controller it lost touch with for ${defaultFenceMs(kato)} ms ` +
        `(KATO ${kato} ms rounded up to seconds, plus one second), and a write in doubt ` +
        `resent sooner could land there after a newer one. fenceDelayMs may only lengthen ` +
        `that wait: leave it out, or give at least ${defaultFenceMs(kato)} ms (a smaller ` +
        `kato shortens the wait).`,
    );
  }
}

/**
 * The host NQN and host ID every path connects with: the ones the paths give, else one
 * generated for this namespace, so the subsystem sees one host on all its nodes (host
 * access lists, its controller list), not one per path. Paths that give different ones
 * are refused.
 */
export function oneHost(paths: readonly PathOptions[]): {
  hostnqn?: string;
  hostid: Buffer | string;
} {
  checkSame(paths, 'hostnqn', (p) => p.hostnqn);
  checkSame(paths, 'hostid', (p) =>
    Buffer.isBuffer(p.hostid)
      ? p.hostid.toString('hex')
      : p.hostid?.replace(/-/g, '').toLowerCase(),
  );
  const hostnqn = paths.find((p) => p.hostnqn !== undefined)?.hostnqn;
  const hostid = paths.find((p) => p.hostid !== undefined)?.hostid ?? randomUUID();
  // Without a host NQN, each controller derives it from the shared host ID.
  return hostnqn === undefined ? { hostid } : { hostnqn, hostid };
}

/** Refuse paths that give different values of `field` (compared by `key`). */
function checkSame(
  paths: readonly PathOptions[],
  field: string,
  key: (p: PathOptions) => string | undefined,
): void {
  const first = paths.find((p) => key(p) !== undefined);
  const other = first && paths.find((p) => key(p) !== undefined && key(p) !== key(first));
  if (!other) return;
  throw new Error(
    `multipath: paths ${pathName(first)} and ${pathName(other)} give different ${field}s ` +
      `(${key(first)} vs ${key(other)}): the subsystem would see one host as two. Give ` +
      `every path the same ${field}, or none (one is then generated for all paths).`,
  );
}

/** The path's keep-alive timeout as its controller uses it. */
export function katoOf(p: PathOptions): number {
  return p.kato ?? DEFAULT_KATO_MS;
}

export function pathName(p: PathOptions): string {
  return p.name ?? `${p.host}:${p.port}`;
}

/**
 * How long after losing a path's association its in-doubt commands wait before going
 * elsewhere: a target that did not see the loss drops the controller once its
 * keep-alive timer runs out, KATO rounded up to whole seconds plus its slack.
 * BranchSAN's target allows 500 ms of slack and checks every 250 ms, so one second
 * covers it. (A target that restarts a whole KATO period on traffic, as Linux nvmet
 * does with TBKAS, may keep a controller up to twice as long: give such paths
 * fenceDelayMs.)
 */
export function defaultFenceMs(kato: number): number {
  return Math.ceil(kato / 1000) * 1000 + 1000;
}
