/**
 * The decisions of multipath I/O as pure functions, so they can be tested table by
 * table without sockets: which paths are usable, which one gets the next command,
 * what to do with a completed attempt, and whether two paths show the same namespace.
 * multipath.ts holds the state and carries the decisions out.
 */
import { DNR, SC, statusType } from '../protocol/status.js';
import type { NamespaceIdentity, NamespaceIds } from './admin.js';
import type { AnaPathState } from './ana-log.js';
import type { ControllerState } from './controller.js';
import type { HostError } from './errors.js';
import { statusRetryable } from './status-retry.js';

/** What path selection looks at. */
export interface PathView {
  readonly controller: ControllerState;
  readonly ana: AnaPathState;
  /** The namespace's identity was checked on the current association and matched. */
  readonly verified: boolean;
  /** Largest transfer of one command on this path (MDTS); 0 or absent: no limit known. */
  readonly maxTransferBytes?: number;
  /** Blocks the namespace has on this path, as its last check that passed showed. */
  readonly nsze: number;
}

/**
 * A path takes I/O only when all three hold: its controller is live (not recovering,
 * dead or closed), the namespace on it is proven to be ours, and ANA says optimized or
 * non-optimized. Inaccessible, persistent loss, change and unknown all mean "not here".
 */
export function pathUsable(p: PathView): boolean {
  return (
    p.controller === 'live' && p.verified && (p.ana === 'optimized' || p.ana === 'non-optimized')
  );
}

/** What a path's state in a "no usable path" failure means (noPathHint). */
const STATE_MEANS: Readonly<Record<string, string>> = {
  change:
    "its target is moving the namespace's ANA group (BranchSAN: the volume's storage is " +
    'out) and says so again with an ANA change event once it is done',
  inaccessible: 'that node does not serve the namespace now (its peer does, or a failover is due)',
  'persistent-loss': 'that node will never serve the namespace again',
  unknown: 'its ANA state is not known (not read yet, or the log does not list the namespace)',
  recovering: 'its controller lost the connection and is reconnecting',
  connecting: 'its controller is connecting',
  dead:
    'its controller gave up reconnecting (call reconnect() on that controller once its ' +
    'target is reachable)',
};

/**
 * For a command no path took within noPathTimeoutMs: what the states its paths were in
 * mean (those not live by their controller's state, the others by their ANA state; a
 * path's own problem says itself), and what to do next.
 */
export function noPathHint(
  paths: readonly { controller: string; ana: string; problem: string | null }[],
): string {
  const states = new Set(
    paths.map((p) => (p.controller !== 'live' ? p.controller : p.problem ? '' : p.ana)),
  );
  const means = [...states]
    .filter((s) => STATE_MEANS[s])
    .map((s) => `${s}: ${STATE_MEANS[s]}`)
    .join('; ');
  return (
    `${means ? `; ${means}` : ''}; check the target's event log for this volume, then send ` +
    `it again, or raise noPathTimeoutMs to wait out longer outages`
  );
}

/** Path `p` can carry a command moving `bytes` (its MDTS is not smaller). */
export function pathTakes(p: PathView, bytes: number): boolean {
  return !p.maxTransferBytes || bytes <= p.maxTransferBytes;
}

/**
 * Index of the path for the next command, or -1 when no usable path takes it. Round
 * robin (by `cursor`, which the caller advances) among the optimized paths; the
 * non-optimized ones only when no optimized path is left, as the Linux host's ANA
 * policy does. A command moving `bytes` goes only to a path whose MDTS is not smaller:
 * it was sized before that path's limit was known (it had not connected yet), and that
 * controller would refuse it. A command that reaches block `end` (its last block + 1;
 * 0: no blocks, as a flush) goes only to a path whose namespace has that block: one
 * whose node has not grown the volume yet would answer LBA Out of Range. Two passes
 * instead of building candidate arrays: this runs once per command.
 */
export function choosePath(paths: readonly PathView[], cursor: number, bytes = 0, end = 0): number {
  for (const want of ['optimized', 'non-optimized'] as const) {
    let n = 0;
    for (const p of paths) if (candidate(p, want, bytes, end)) n++;
    if (n === 0) continue;
    let k = cursor % n;
    for (let i = 0; i < paths.length; i++) {
      if (candidate(paths[i]!, want, bytes, end) && k-- === 0) return i;
    }
  }
  return -1;
}

function candidate(p: PathView, want: AnaPathState, bytes: number, end: number): boolean {
  return p.ana === want && pathUsable(p) && pathTakes(p, bytes) && p.nsze >= end;
}

/** What to do with one attempt of a command (see the retry rules in multipath.ts). */
export type Outcome =
  /** Success: complete it to the caller. */
  | 'complete'
  /** The namespace answered (or the status says do not retry): the caller gets the status. */
  | 'fail'
  /** Certainly not executed: send it again on a usable path at once. */
  | 'retry'
  /** Completed with a status a retry may pass (no DNR, not a path status): send it
   * again on the same path, after the status's retry delay (status-retry.ts). */
  | 'again'
  /** May have been executed: hold it until its path is fenced (dead or reset). */
  | 'hold';

/** Status Code Type 3: path related (ANA states, internal path error). */
const SCT_PATH = 3;

/**
 * `mutating` is true for commands that change data (write, write zeroes, deallocate):
 * only those can be reordered against later writes by an early resend. A read, compare
 * or flush that may have run is harmless to run again. `retries`: how often the command
 * was sent again after such a status already ('again'). `claimed`: the path had shown
 * the namespace with every block the command names, so LBA Out of Range says the path's
 * namespace shrank under us, not that the caller overran the end (retry rule 4a).
 */
export function classifyOutcome(
  status: number,
  error: HostError | null,
  mutating: boolean,
  retries = 0,
  claimed = false,
): Outcome {
  if (error) {
    if (error.kind === 'too-large') return 'fail'; // choosePath picks a path that takes it
    if (!error.maybeExecuted) return 'retry';
    return mutating ? 'hold' : 'retry';
  }
  if (status === 0) return 'complete';
  if (claimed && isOutOfRange(status)) return 'retry';
  if (status & DNR) return 'fail';
  if (statusType(status) === SCT_PATH) return 'retry';
  return statusRetryable(status, retries) ? 'again' : 'fail';
}

/** LBA Out of Range (generic status 0x80), DNR or not. */
export function isOutOfRange(status: number): boolean {
  return (status & 0x7ff) === SC.LBA_RANGE;
}

/** Identify data of one path's view of the namespace (an NvmeNamespace has both). */
export interface NamespaceView {
  readonly identity: NamespaceIdentity;
  readonly ids: NamespaceIds;
}

const hex = (b: Buffer | undefined): string => (b ? b.toString('hex') : 'none');
const zero = (b: Buffer | undefined): boolean => !b || b.every((x) => x === 0);

/** Why one path's view cannot join a multipath namespace at all, or null. */
export function namespaceProblem(v: NamespaceView): string | null {
  const { identity: id, ids } = v;
  if (!id.active) return `namespace ${id.nsid} is not active`;
  if ((id.nmic & 1) === 0) return `namespace ${id.nsid} is not shared (NMIC bit 0 clear)`;
  if (zero(id.nguid) && zero(id.eui64) && zero(ids.nguid) && zero(ids.eui64) && !ids.uuid) {
    return `namespace ${id.nsid} reports no NGUID, EUI64 or UUID to prove its paths are one namespace`;
  }
  // CNS 0 and CNS 3 must agree on one controller before comparing controllers (facts §7).
  if (ids.nguid && !ids.nguid.equals(id.nguid)) {
    return `NGUID differs between Identify Namespace (${hex(id.nguid)}) and its descriptors (${hex(ids.nguid)})`;
  }
  if (ids.eui64 && !ids.eui64.equals(id.eui64)) {
    return `EUI64 differs between Identify Namespace (${hex(id.eui64)}) and its descriptors (${hex(ids.eui64)})`;
  }
  return null;
}

/**
 * Why `b` is not the same namespace as `a` (byte-identical NGUID, EUI64, UUID and CSI,
 * same format, and at least `minNsze` blocks), or null. Merging two different namespaces
 * behind one handle would scatter a volume's writes over two disks, so any difference
 * refuses the path. A larger size is no difference: a grown volume (an LV or file the
 * target serves at its new size) is the same namespace, as Linux takes a new capacity;
 * the caller makes `b` the reference then. Smaller than `a` is no difference either: a
 * node that has not grown the volume yet (another path shows it larger) serves the
 * blocks it has, and I/O past them goes elsewhere (choosePath). A multipath namespace
 * gives as `minNsze` the size `b`'s path showed before (0 for a path seen for the first
 * time): fewer blocks than that is a shrink, and refused, as it would cut the volume's
 * end off under data written there. Default: `a`'s size.
 */
export function namespaceMismatch(
  a: NamespaceView,
  b: NamespaceView,
  minNsze = a.identity.nsze,
): string | null {
  const checks: [string, string, string][] = [
    ['NGUID', hex(a.identity.nguid), hex(b.identity.nguid)],
    ['EUI64', hex(a.identity.eui64), hex(b.identity.eui64)],
    ['descriptor NGUID', hex(a.ids.nguid), hex(b.ids.nguid)],
    ['descriptor EUI64', hex(a.ids.eui64), hex(b.ids.eui64)],
    ['UUID', a.ids.uuid ?? 'none', b.ids.uuid ?? 'none'],
    ['CSI', String(a.ids.csi ?? 0), String(b.ids.csi ?? 0)],
    ['block size', String(a.identity.blockSize), String(b.identity.blockSize)],
  ];
  const diff = checks.find(([, x, y]) => x !== y);
  if (diff) return `${diff[0]} ${diff[1]} vs ${diff[2]}`;
  if (b.identity.nsze < minNsze) {
    return (
      `size in blocks (NSZE) ${minNsze} vs ${b.identity.nsze}: smaller than the ` +
      `namespace was seen, so writes to its end would fail or land nowhere`
    );
  }
  return null;
}
