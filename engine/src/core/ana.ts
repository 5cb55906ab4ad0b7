/**
 * Asymmetric Namespace Access groups of one target (node). Each node reports the
 * state of its own paths; the pair agrees on group ids so a host sees one group
 * per volume with a different state on each path.
 */
export type AnaState =
  /** This path is the preferred one. */
  | 'optimized'
  /** Usable, but another path is better (e.g. the peer owns the volume). */
  | 'non-optimized'
  /** Answers admin commands, fails I/O with 3/02 so the host uses another path. */
  | 'inaccessible'
  /** This path will never serve the namespace again (3/01). */
  | 'persistent-loss'
  /** Transitioning (failover in progress); I/O gets 3/03 and the host retries. */
  | 'change';

/** What a group whose storage is out reports (AnaGroups.hold). */
export type HeldState = 'change' | 'inaccessible';

export const ANA_STATE_CODE: { readonly [K in AnaState]: number } = {
  optimized: 0x01,
  'non-optimized': 0x02,
  inaccessible: 0x03,
  'persistent-loss': 0x04,
  change: 0x0f,
};

export interface AnaGroupInfo {
  readonly grpid: number;
  readonly state: AnaState;
  /** Value of the target's change count when this group's descriptor last changed. */
  readonly chgcnt: number;
}

/**
 * The groups and the ANA log's change count (CHGCNT). The count identifies the log's
 * contents, so it moves on every change a host could read there: a group's state, a
 * group appearing, and a namespace joining or leaving a group (its NSID list and
 * NNSIDS), as nvmet bumps it when a namespace changes group. A host that reads the log
 * in pieces checks the header's count again at the end (libnvme, our host library):
 * had it stood still while a namespace was added, pieces of two logs would be stitched.
 */
export class AnaGroups {
  /** What the log reports, by grpid: the state set, or 'change' while held (see hold). */
  private readonly groups = new Map<number, AnaGroupInfo>();
  /** The state set by whoever owns this node's ANA states (set()), by grpid. */
  private readonly setStates = new Map<number, AnaState>();
  /**
   * Groups whose storage is out, by grpid: 'change' while it comes back by itself (I/O
   * threads being replaced), 'inaccessible' once closed for good.
   */
  private readonly held = new Map<number, HeldState>();
  /** Monotonic change count reported in the ANA log header (CHGCNT). */
  private changeCount = 0;

  constructor(readonly maxGroups: number) {
    // Group 1 always exists, as in nvmet: namespaces default to it.
    this.groups.set(1, { grpid: 1, state: 'optimized', chgcnt: 0 });
  }

  get chgcnt(): number {
    return this.changeCount;
  }

  has(grpid: number): boolean {
    return this.groups.has(grpid);
  }

  state(grpid: number): AnaState {
    return this.groups.get(grpid)?.state ?? 'optimized';
  }

  /** All groups in ascending grpid order. */
  list(): AnaGroupInfo[] {
    return [...this.groups.values()].sort((a, b) => a.grpid - b.grpid);
  }

  /** Creates the group (optimized) if it does not exist yet; returns true if it did not. */
  ensure(grpid: number): boolean {
    this.assertGrpid(grpid);
    if (this.groups.has(grpid)) return false;
    this.stamp(grpid, 'optimized');
    return true;
  }

  /**
   * Sets a group's state; returns false if what the log reports did not change (no
   * event to send). A held group keeps reporting 'change' until released, then this.
   */
  set(grpid: number, state: AnaState): boolean {
    this.assertGrpid(grpid);
    if (!(state in ANA_STATE_CODE)) throw new Error(`Unknown ANA state "${state}"`);
    this.setStates.set(grpid, state);
    return this.report(grpid);
  }

  /**
   * Reports a group as `held` while the storage of its namespaces is out, or (null) in
   * the state set again. 'change': it will be back by itself, so hosts should hold their
   * I/O (Linux requeues it and waits, ANATT applies) rather than resend it at once, as
   * an ANA Transition status under a usable state makes them do. 'inaccessible': it is
   * closed and will not be back on its own, so hosts go to another path, or wait with no
   * ANATT to run out (Linux parks the I/O while the controller is live), instead of
   * resending at once. A group set inaccessible or persistent-loss stays so (hosts use
   * other paths anyway); one set in change reports 'inaccessible' when held so. Returns
   * false if what the log reports did not change.
   */
  hold(grpid: number, held: HeldState | null): boolean {
    this.assertGrpid(grpid);
    if (held) this.held.set(grpid, held);
    else this.held.delete(grpid);
    return this.report(grpid);
  }

  /**
   * A namespace joined or left group `grpid` (created if new): its NSID list changed.
   * Hosts hear of it through the Namespace Attribute event (the changed namespace
   * list), not an ANA change event, as from nvmet: Linux reads the ANA log again after
   * the rescan that event starts, and no path's state changed (no group's state did).
   */
  membersChanged(grpid: number): void {
    if (!this.ensure(grpid)) this.stamp(grpid, this.state(grpid));
  }

  /** Brings what the log reports of `grpid` up to date; false if it stood. */
  private report(grpid: number): boolean {
    const set = this.setStates.get(grpid) ?? 'optimized';
    const usable = set === 'optimized' || set === 'non-optimized' || set === 'change';
    const state = (usable && this.held.get(grpid)) || set;
    if (this.groups.get(grpid)?.state === state) return false;
    this.stamp(grpid, state);
    return true;
  }

  /** Records a change of group `grpid`'s descriptor: the count moves, the group takes it. */
  private stamp(grpid: number, state: AnaState): void {
    this.changeCount++;
    this.groups.set(grpid, { grpid, state, chgcnt: this.changeCount });
  }

  private assertGrpid(grpid: number): void {
    if (!Number.isInteger(grpid) || grpid < 1 || grpid > this.maxGroups) {
      throw new Error(`ANA group id ${grpid} is out of range 1..${this.maxGroups}`);
    }
  }
}
