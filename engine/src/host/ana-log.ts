/**
 * The host's reading of Asymmetric Namespace Access (facts §7): the ANA log page
 * (LID 0x0C) parsed defensively, the state one namespace has on one path, and the
 * state an ANA status code (SCT 3) implies. Pure functions; multipath.ts applies them.
 *
 * The bytes are decoded by protocol/logpages.ts (bounds-checked: it faces whatever a
 * controller sends); this file gives them their meaning for path selection.
 */
import { ANA_GROUP_DESC_SIZE, ANA_LOG_HEADER_SIZE, decodeAnaLog } from '../protocol/logpages.js';
import { SC } from '../protocol/status.js';

/** How one namespace can be reached through one path. */
export type AnaPathState =
  /** Preferred path: I/O goes here (round robin among optimized paths). */
  | 'optimized'
  /** Usable, but used only when no optimized path is left. */
  | 'non-optimized'
  /** Answers admin commands; I/O fails with 3/02. Unusable until the state changes. */
  | 'inaccessible'
  /** The path will never serve the namespace again (3/01). */
  | 'persistent-loss'
  /** The target is moving the group between states (3/03); unusable meanwhile. */
  | 'change'
  /** Not read yet, not in the log, or an unknown state code: unusable until known. */
  | 'unknown';

/** ANA state codes of the log's group descriptor (STATE bits 3:0). */
export const ANA_STATE_BY_CODE: ReadonlyMap<number, AnaPathState> = new Map([
  [0x01, 'optimized'],
  [0x02, 'non-optimized'],
  [0x03, 'inaccessible'],
  [0x04, 'persistent-loss'],
  [0x0f, 'change'],
]);

export interface AnaGroup {
  readonly anagrpid: number;
  readonly chgcnt: bigint;
  readonly state: AnaPathState;
  /** Raw STATE bits 3:0 (for messages about unknown codes). */
  readonly code: number;
  /** NSIDs in the group; empty when the log was read with RGO (groups only). */
  readonly nsids: readonly number[];
}

export interface AnaLog {
  readonly chgcnt: bigint;
  readonly groups: readonly AnaGroup[];
}

/**
 * Parse an ANA log page (the codec's checked decoder) into path states; throws when
 * malformed, when a group ID is above the controller's ANAGRPMAX (given), or when one
 * namespace is listed in two groups (Linux refuses such a log too): which state would
 * be the namespace's is then anyone's guess.
 */
export function parseAnaLog(b: Buffer, anagrpmax = 0): AnaLog {
  const log = decodeAnaLog(b);
  const groupOf = new Map<number, number>();
  for (const g of log.groups) {
    if (anagrpmax > 0 && g.grpid > anagrpmax) {
      throw new Error(
        `ANA log names group ${g.grpid}, above the controller's ANAGRPMAX ${anagrpmax}`,
      );
    }
    for (const nsid of g.nsids) {
      const other = groupOf.get(nsid);
      if (other !== undefined) {
        throw new Error(`ANA log lists namespace ${nsid} in groups ${other} and ${g.grpid}`);
      }
      groupOf.set(nsid, g.grpid);
    }
  }
  return {
    chgcnt: BigInt(log.chgcnt),
    groups: log.groups.map((g) => ({
      anagrpid: g.grpid,
      chgcnt: BigInt(g.chgcnt),
      state: ANA_STATE_BY_CODE.get(g.state) ?? 'unknown',
      code: g.state,
      nsids: g.nsids,
    })),
  };
}

/**
 * The state of namespace `nsid` in `log` (read without RGO, as the library always
 * reads it): the group whose NSID list holds it decides, even when Identify Namespace
 * named another group (its ANAGRPID may be stale; Linux follows the list too). Not
 * listed: 'unknown', the namespace is not reachable on this path, whatever state its
 * Identify group has.
 */
export function anaStateOf(log: AnaLog, nsid: number): AnaPathState {
  return anaGroupOf(log, nsid)?.state ?? 'unknown';
}

/** The group whose NSID list holds `nsid` (see anaStateOf), or null. */
export function anaGroupOf(log: AnaLog, nsid: number): AnaGroup | null {
  return log.groups.find((g) => g.nsids.includes(nsid)) ?? null;
}

/**
 * The path state an I/O status reports, or null when the status is not an ANA one.
 * The target checks ANA at command parse (nvmet does too), so these commands were not
 * executed; their path just told us its current state before the log says so.
 */
export function anaStateOfStatus(status: number): AnaPathState | null {
  switch (status & 0x7ff) {
    case SC.ANA_PERSISTENT_LOSS:
      return 'persistent-loss';
    case SC.ANA_INACCESSIBLE:
      return 'inaccessible';
    case SC.ANA_TRANSITION:
      return 'change';
    default:
      return null;
  }
}

/**
 * The most of an ANA log the library reads (ample for 1024 groups and 200k namespaces):
 * a controller's counts do not size our memory.
 */
export const MAX_ANA_LOG = 1 << 20;

/** Bytes to read for the whole log: header, every group, every NSID (as Linux sizes it). */
export function anaLogLength(nanagrpid: number, mnan: number): number {
  return ANA_LOG_HEADER_SIZE + nanagrpid * ANA_GROUP_DESC_SIZE + mnan * 4;
}

/**
 * What the library reads of the ANA log of a controller with these Identify counts:
 * the whole log, but never more than MAX_ANA_LOG, whatever the controller claims.
 */
export function anaLogReadLength(id: { nanagrpid: number; mnan: number }): number {
  return Math.min(anaLogLength(id.nanagrpid, id.mnan), MAX_ANA_LOG);
}

/**
 * How many bytes the ANA log whose first `b.length` bytes are `b` takes (header, each
 * group and its NSID list), or null while `b` ends before the last group's descriptor
 * says. Lets a log read in pieces stop where the log ends, not where its largest
 * possible size (anaLogLength) would.
 */
export function anaLogUsedLength(b: Buffer): number | null {
  if (b.length < ANA_LOG_HEADER_SIZE) return null;
  let at = ANA_LOG_HEADER_SIZE;
  for (let i = b.readUInt16LE(8); i > 0; i--) {
    if (at + ANA_GROUP_DESC_SIZE > b.length) return null;
    at += ANA_GROUP_DESC_SIZE + b.readUInt32LE(at + 4) * 4;
  }
  return at;
}
