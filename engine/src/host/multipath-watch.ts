/**
 * What a multipath namespace learns about each path after its controller comes up:
 * that the namespace behind it is ours (identity check), and its ANA state (log 0x0C,
 * the ANA change event, ANA status codes). Each function works on one Path and reports
 * through a WatchContext; routing I/O stays in multipath.ts.
 */
import { LID, NSID_ALL } from '../protocol/opcodes.js';
import { SC } from '../protocol/status.js';
import { anaGroupOf, parseAnaLog, type AnaLog, type AnaPathState } from './ana-log.js';
import type { AsyncEvent } from './controller.js';
import { HostError, NamespaceNotActiveError, NvmeStatusError } from './errors.js';
import type { Path } from './multipath-path.js';
import { namespaceMismatch, namespaceProblem, type NamespaceView } from './multipath-policy.js';

/** What the watchers need from the multipath namespace. */
export interface WatchContext {
  readonly nsid: number;
  /** The first verified view of the namespace: every other path must match it. */
  reference: { readonly view: NamespaceView; readonly path: string } | null;
  /** Something about `p` changed (report it; if it became usable, send what waits). */
  changed(p: Path, why: string): void;
  /** `p` showed the namespace grown: the paths that show it smaller are checked (checkSize). */
  grown(p: Path): void;
}

/**
 * On a new association (or a namespace change event): prove the namespace is ours,
 * then read ANA. A mismatch (or a missing namespace) sets `p.problem`, which keeps the
 * path unusable until it is checked again (a reconnect may land on a replaced node).
 * A check that got no answer, or a transient status, proves nothing either way: the path
 * stays unusable, says why, and is checked again (see unchecked()).
 * Only the latest check applies; an older one still running waits for it.
 */
export async function validatePath(ctx: WatchContext, p: Path): Promise<void> {
  const epoch = p.epoch;
  const check = ++p.checks;
  try {
    const ns = await p.ctrl.namespace(ctx.nsid);
    if (epoch !== p.epoch) return;
    if (check !== p.checks) return p.validating;
    p.recheckBackoffMs = 0;
    const ref = ctx.reference;
    // Sizes (see namespaceMismatch): not smaller than this path showed it before (a
    // shrink). A path seen for the first time may show fewer blocks than another: its node
    // has not grown the volume yet, and it serves the blocks it has (behind). So whether a
    // path is taken does not depend on which path's Identify answered first.
    const problem = namespaceProblem(ns) ?? (ref ? namespaceMismatch(ref.view, ns, p.nsze) : null);
    if (problem) return refuse(ctx, p, problem);
    const size = ns.identity.nsze;
    const refSize = ref?.view.identity.nsze ?? 0;
    if (size < refSize && p.nsze === 0) {
      ctx.changed(
        p,
        `namespace ${ctx.nsid} shows ${size} of the ${refSize} blocks path ${ref!.path} ` +
          `shows: its node has not grown the volume yet, so it serves only those blocks`,
      );
    }
    const grownFrom = ref && size > refSize ? refSize : 0;
    // The volume grew (namespaceMismatch allows no shrink): later checks compare with the
    // new size, and the namespace reports it; identity stays as strict as before.
    if (!ref || grownFrom) ctx.reference = { view: ns, path: p.name };
    p.nsze = size;
    p.anagrpid = ns.identity.anagrpid;
    p.maxTransferBytes = p.ctrl.maxTransferBytes;
    p.problem = null;
    p.absent = false;
    p.unchecked = false;
    p.verified = true;
    if (grownFrom) {
      ctx.changed(p, `namespace ${ctx.nsid} grew from ${grownFrom} to ${size} blocks`);
      ctx.grown(p);
    }
    // An ANA read that overlapped a re-check may have set the state already: wake I/O.
    if (p.usable) ctx.changed(p, 'namespace verified');
    await readAna(ctx, p);
  } catch (e) {
    if (epoch !== p.epoch) return;
    if (check !== p.checks) return p.validating;
    if (e instanceof HostError && e.kind === 'closed') return; // the caller closes it
    const absent =
      e instanceof NamespaceNotActiveError ||
      (e instanceof NvmeStatusError && e.sc === SC.INVALID_NS);
    const transient =
      (e instanceof HostError && e.kind !== 'too-large') ||
      (e instanceof NvmeStatusError && !e.dnr);
    if (transient && !absent) return unchecked(ctx, p, e as Error);
    refuse(ctx, p, `namespace ${ctx.nsid}: ${(e as Error).message}`, absent);
  }
}

function refuse(ctx: WatchContext, p: Path, problem: string, absent = false): void {
  p.problem = problem;
  p.absent = absent;
  p.unchecked = false;
  p.verified = false;
  ctx.changed(p, `refused: ${problem}`);
}

/**
 * The identity check of `p` failed without telling anything about the namespace: no
 * answer (the admin queue full, a timeout or a lost connection) or a status without DNR
 * (Linux keeps a namespace whose Identify fails so, too). The path stays out of use and
 * says why; while its association lives the check runs again after a backoff, and a
 * lost association is checked again once it reconnects. Its problem is what connect()
 * names when no path came up.
 */
function unchecked(ctx: WatchContext, p: Path, e: Error): void {
  p.verified = false;
  p.absent = false;
  p.unchecked = true;
  p.problem = `namespace ${ctx.nsid} could not be identified: ${e.message}`;
  // Said in the event, not the problem: connect() gives up on such a path, closing it.
  const retry =
    p.controller === 'live'
      ? `; checking again in ${p.recheckLater(() => void (p.validating = validatePath(ctx, p)))} ms`
      : '';
  ctx.changed(p, `unchecked: ${p.problem}${retry}`);
}

/**
 * Read the ANA log on `p`. Requests during a read of the same association coalesce
 * into one more read after it (so a burst of 3/02 completions costs two reads), and
 * the promise settles when the state is current.
 */
export function readAna(ctx: WatchContext, p: Path): Promise<void> {
  if (p.anaRead && p.anaRead.epoch === p.epoch) {
    p.anaRead.again = true;
    return p.anaRead.done;
  }
  const read = { epoch: p.epoch, again: false, done: Promise.resolve() };
  read.done = readAnaLoop(ctx, p, read).finally(() => {
    if (p.anaRead === read) p.anaRead = null;
  });
  p.anaRead = read;
  return read.done;
}

async function readAnaLoop(
  ctx: WatchContext,
  p: Path,
  read: { epoch: number; again: boolean },
): Promise<void> {
  try {
    do {
      read.again = false;
      const id = p.ctrl.identity;
      if ((id.cmic & 0x08) === 0) {
        // CMIC bit 3 clear: no ANA reporting, so every path is equally good.
        return learnAna(ctx, p, 'optimized', 'controller does not report ANA');
      }
      const statuses = p.anaStatuses;
      const log = await p.ctrl.getAnaLog();
      if (read.epoch !== p.epoch) return;
      // An ANA status came in while this read was out: the log may predate it (our target
      // answers 3/03 for a backend that is briefly away while its log still says
      // optimized), so only a read issued after it, which that status scheduled, decides.
      if (statuses !== p.anaStatuses) continue;
      applyAnaLog(ctx, p, log, id.anagrpmax);
    } while (read.again);
  } catch (e) {
    // A lost association shows up as a state change, made before its commands fail. Any
    // other failure (an NVMe status, the admin queue full) leaves the path unusable
    // ('unknown'), says why, and is tried again.
    if (read.epoch === p.epoch && p.controller === 'live') {
      learnAna(ctx, p, 'unknown', `ANA log: ${(e as Error).message}`);
      readAnaLater(ctx, p);
    }
  }
}

/**
 * An I/O on `p` completed with an ANA status (3/01..3/03): refused at parse, so not
 * executed. The path takes that state at once and keeps it, out of path selection, until
 * a log read issued after the status says otherwise; that read comes after a backoff,
 * not at once, so a path whose log disagrees with its statuses is not hammered.
 */
export function onAnaStatus(ctx: WatchContext, p: Path, state: AnaPathState, why: string): void {
  p.anaStatuses++;
  learnAna(ctx, p, state, why);
  readAnaLater(ctx, p);
}

/** Read `p`'s ANA log again after a backoff (multipath-path.ts), at most ANATT apart. */
function readAnaLater(ctx: WatchContext, p: Path): void {
  const anatt = (p.controller === 'live' && p.ctrl.identity.anatt) || 10;
  p.readAnaLater(anatt * 1000, () => void readAna(ctx, p));
}

/**
 * Apply a log read by readAna(). Those reads are serialised per path, so the last one
 * applied is the last one asked for: its state stands, even when its CHGCNT is lower
 * than an earlier one's (a target that restarted its counter; Linux accepts that too).
 * A log that does not give the namespace a state (not listed, or a state code with no
 * meaning) leaves the path 'unknown', says so, and is read again (Linux re-reads a log
 * without the namespace's group too).
 */
function applyAnaLog(ctx: WatchContext, p: Path, raw: Buffer, anagrpmax: number): void {
  let log: AnaLog;
  try {
    log = parseAnaLog(raw, anagrpmax);
  } catch (e) {
    learnAna(ctx, p, 'unknown', (e as Error).message);
    return readAnaLater(ctx, p);
  }
  const what = `ANA log (CHGCNT ${log.chgcnt})`;
  const g = anaGroupOf(log, ctx.nsid);
  if (g && g.state !== 'unknown') return learnAna(ctx, p, g.state, what);
  const why = g
    ? `gives namespace ${ctx.nsid}'s group ${g.anagrpid} state code 0x${g.code.toString(16)}, which is no ANA state`
    : `does not list namespace ${ctx.nsid} in any group`;
  learnAna(ctx, p, 'unknown', `${what} ${why}: reading it again`);
  readAnaLater(ctx, p);
}

/** Record `state` for `p`; a group stuck in 'change' past 2×ANATT (anaChangeLimitMs, as
 * one controller's commands wait) resets the controller. */
export function learnAna(ctx: WatchContext, p: Path, state: AnaPathState, why: string): void {
  if (state === 'change') {
    const limit = p.ctrl.anaChangeLimitMs;
    p.watchChange(limit, () => {
      ctx.changed(p, `ANA change lasted over ${limit / 1000} s: resetting the controller`);
      p.ctrl.reconnect().catch(() => {});
    });
  } else {
    p.stopChangeTimer();
  }
  if (p.ana === state) return;
  p.ana = state;
  ctx.changed(p, `ANA ${state}: ${why}`);
}

/**
 * The namespace attribute changed event (log 0x04 lists the changed NSIDs): the
 * namespace behind `p` may be gone, or be another disk now. Check it again (checkAgain).
 */
export function onNamespaceEvent(ctx: WatchContext, p: Path, ev: AsyncEvent): void {
  if (ev.lid !== LID.CHANGED_NS || p.controller !== 'live') return;
  if (ev.log && !listsNamespace(ev.log, ctx.nsid)) return;
  checkAgain(ctx, p, `namespace ${ctx.nsid} changed`);
}

/**
 * I/O on `p` got LBA Out of Range for blocks the path had shown (retry rule 4a): its
 * namespace is smaller than it was, or another one. Check it again (checkAgain).
 */
export function onOutOfRange(ctx: WatchContext, p: Path, what: string): void {
  if (p.controller !== 'live' || !p.verified) return; // being checked already, or lost
  checkAgain(ctx, p, `${what} got LBA Out of Range within the ${p.nsze} blocks it showed`);
}

/**
 * Take `p` out of use and check its identity again as on a new association; a fresh ANA
 * log re-admits it.
 */
function checkAgain(ctx: WatchContext, p: Path, why: string): void {
  p.verified = false;
  p.ana = 'unknown';
  p.stopChangeTimer();
  ctx.changed(p, `${why}: checking its identity again`);
  p.validating = validatePath(ctx, p);
}

/**
 * Another path showed the namespace grown past what `p` showed: identify it again, while
 * it goes on serving the blocks it has (its node may have grown the volume without an
 * event reaching us; if not, it stays as it is). One check at a time.
 */
export function checkSize(ctx: WatchContext, p: Path): void {
  if (p.sizeCheck || p.controller !== 'live' || !p.verified) return;
  const check = validatePath(ctx, p).finally(() => {
    if (p.sizeCheck === check) p.sizeCheck = null;
  });
  p.sizeCheck = p.validating = check;
}

/** Does a changed namespace list name `nsid` (or overflow: 0xFFFFFFFF first)? */
function listsNamespace(log: Buffer, nsid: number): boolean {
  for (let off = 0; off + 4 <= log.length; off += 4) {
    const id = log.readUInt32LE(off);
    if (id === 0) return false;
    if (id === nsid || id === NSID_ALL) return true;
  }
  return false;
}

/**
 * The ANA change event. The controller already read the log (RAE=0, re-arming the
 * event), but that read may have crossed one of readAna()'s: read it again in line with
 * those, so the newest read decides and an older answer never lands last.
 */
export function onAnaEvent(ctx: WatchContext, p: Path, ev: AsyncEvent): void {
  if (ev.lid !== LID.ANA || !p.verified) return;
  void readAna(ctx, p);
}
