/**
 * MultipathNamespace: one namespace reached through several controllers of the same
 * subsystem (a BranchSAN pair: one controller per node), with the I/O API of
 * NvmeNamespace. It checks that every path shows the same namespace (on each new
 * association and after a namespace-changed event), follows ANA (log 0x0C at start,
 * on the ANA change event, on ANA status completions), sends I/O to
 * optimized paths round robin, falls back to non-optimized ones, and moves commands
 * between paths only when that cannot reorder writes. Every path connects as one host:
 * the host NQN and host ID the paths give (they must agree), else one generated for the
 * namespace, so the subsystem does not see one host per node.
 *
 *   const mp = await MultipathNamespace.connect({
 *     nsid: 1,
 *     paths: [
 *       { host: '10.0.0.1', port: 4420, subnqn, name: 'node-a', reconnect },
 *       { host: '10.0.0.2', port: 4420, subnqn, name: 'node-b', reconnect },
 *     ],
 *     onPathChange: (p, why) => log(p.name, p.ana, p.controller, why),
 *   });
 *   await mp.write(0, data);
 *
 * Retry rules, and why:
 * 1. Completed with a path status (SCT 3: 3/01 persistent loss, 3/02 inaccessible,
 *    3/03 change, 3/00 internal path error) and no DNR: the target refused it at parse,
 *    before touching data, so it was not executed. Resend at once on another usable path,
 *    or wait for one as in rule 5. An ANA status (3/01..3/03) also gives its path that
 *    state, which keeps the path out of use until a log read issued after the status
 *    says otherwise; that read comes after a backoff (50 ms, doubling while the path
 *    keeps refusing, at most ANATT), not at once: a target may answer 3/03 for a moment
 *    while its log still says optimized (ours does for a backend briefly away), and
 *    re-admitting the path on that log would bounce the command straight back. Such
 *    refusals do not count toward maxAttempts; noPathTimeoutMs bounds them (while no
 *    path is usable the command is parked, and its parks add up, rule 5).
 * 2. Never sent (HostError with maybeExecuted = false: not connected, queue full,
 *    closed): nothing happened anywhere, so resend at once.
 * 3. Ended without a completion after it reached the socket (timeout, connection lost;
 *    maybeExecuted = true): the first target may still execute it. Resending it on the
 *    other node now could let the old copy land after a later write to the same blocks
 *    that went through the other node, silently replacing newer data with older data.
 *    So a write, write zeroes or deallocate is held (bounded by maxWaiting) until its
 *    path is fenced (multipath-path.ts): fenceDelayMs passed since the association it
 *    went out on was lost (reconnected since or not: a new association does not end the
 *    old controller on the target). Only then is it resent. That is why every path needs
 *    a keep-alive: with KATO 0 nothing on the target ever drops the lost controller, no
 *    wait proves anything, and connect() refuses such a path (and a Set Features that
 *    would turn it off; one that raises KATO lengthens the path's fence). A read, compare or flush
 *    changes no data, so running it twice cannot reorder writes: it is resent at once.
 * 4. Any other status: the namespace answered. With DNR set (LBA range...), the caller
 *    gets the NvmeStatusError. Without DNR (a media error, Namespace Not Ready, a
 *    transient transport error...) a retry may pass: it is sent again on the SAME path,
 *    after the delay the status's CRD asks for (status-retry.ts), at most
 *    MAX_STATUS_RETRIES times, as Linux retries such a status on its path. Never on
 *    another: a write is not moved off its path on a status that is not a path status
 *    (rule 1). If the path is not usable when the delay ends, a read, compare or flush
 *    goes to another path; a write on a lost association is held as in rule 3, and one
 *    on a live association that stopped being usable (ANA, a namespace re-check) fails
 *    with its status, saying why it was not sent again. A command waiting out a delay
 *    waits as a parked one does, and is bounded the same way: it counts toward
 *    maxWaiting, and its delays add to the time noPathTimeoutMs bounds (rule 5). A
 *    delay longer than what is left of that (CRDT goes up to 65535 × 100 ms) is not
 *    waited out: the command fails at once with its status, saying which delay was
 *    asked; one that would exceed maxWaiting fails 'busy'.
 * 4a. Except LBA Out of Range from a path whose namespace had shown every block the
 *    command names: that path's namespace shrank (or is another one) under us, and it
 *    says nothing of the volume. The path is taken out of use and identified again, and
 *    the command is resent at once on a path that has those blocks (or waits for one,
 *    rule 5). Safe for a write: the target checks the range at parse, before touching
 *    data (ours and nvmet do), and the attempt has completed, so no copy of it is left
 *    anywhere to land after a later write; DNR means "the same command fails again
 *    here", which is why it goes elsewhere. A command past the namespace's end, as the
 *    namespace reports it (nsze), is the caller's: it goes to any path and fails there.
 *    Paths are chosen by size too (multipath-policy.ts choosePath): while a node has not
 *    grown the volume another path shows grown, it gets only the blocks it has. So a
 *    path with the namespace's identity is taken at whatever size it first shows, which
 *    path answered first or not, and refused only once it shows fewer blocks than it
 *    showed itself (a shrink: data written past its new end would be cut off).
 * 5. No usable path (all inaccessible, recovering, dead...): the command waits for one
 *    (queue_if_no_path with a limit), at most noPathTimeoutMs in all: the time it spent
 *    parked is summed over every park, however often it is sent and parked again
 *    meanwhile, and so is the time of attempts a path refused with an ANA status (rule
 *    1: that path was not usable either) and of retry delays (rule 4); other time in
 *    flight, or in doubt (rule 3), is not waiting for a path and does not count. Then it
 *    fails with a HostError 'not-connected' that says what each path is doing. Its maybeExecuted is true if any earlier attempt may have run.
 * 6. Larger than the MDTS of every usable path (a path whose limit was not known when
 *    the command was sized, because it had not connected yet): no path is sent it, as a
 *    controller refuses a transfer over its MDTS; a path with a larger one takes it when
 *    usable. If none is, it fails at once with a HostError 'too-large' that gives the
 *    limit to keep to. While no path is usable at all it waits as in rule 5.
 * The caller is never told "failed" about a write that may still land, without
 * maybeExecuted = true saying so.
 */
import { performance } from 'node:perf_hooks';
import { statusName, statusType } from '../protocol/status.js';
import type { NamespaceIdentity, NamespaceIds } from './admin.js';
import { anaStateOfStatus } from './ana-log.js';
import {
  DEFAULT_CONNECT_TIMEOUT_MS,
  NvmeController,
  type ControllerOptions,
} from './controller.js';
import {
  EARLIER_ATTEMPT_NOTE,
  HostError,
  NvmeStatusError,
  withEarlierAttempt,
  writeInDoubtAdvice,
} from './errors.js';
import { Command, copyRequest } from './multipath-command.js';
import { checkOptions, oneHost, pathName } from './multipath-options.js';
import { Path, type PathInfo } from './multipath-path.js';
import {
  choosePath,
  classifyOutcome,
  isOutOfRange,
  noPathHint,
  type Outcome,
} from './multipath-policy.js';
import {
  checkSize,
  onAnaEvent,
  onAnaStatus,
  onNamespaceEvent,
  onOutOfRange,
  validatePath,
  type WatchContext,
} from './multipath-watch.js';
import { callUser } from './callback.js';
import { NamespaceIo } from './namespace-io.js';
import { MAX_TIMER_MS } from './queue.js';
import { NvmeRequest } from './request.js';
import { retriedNote, retryDelayRefusal, statusRetryDelayMs } from './status-retry.js';

export { defaultFenceMs } from './multipath-options.js';
export type { PathInfo, PathIoCounts } from './multipath-path.js';

/** A path's controller options; its `kato` must not be 0 (see rule 3 above). */
/** A path's controller options: fastIoFailMs is always 0 (a path reconnecting holds no I/O). */
export interface PathOptions extends Omit<ControllerOptions, 'fastIoFailMs'> {
  /** Name for path lists and messages (default host:port). */
  readonly name?: string;
}

export interface MultipathOptions {
  /** One controller per path; all must name the same subsystem (subnqn). */
  readonly paths: readonly PathOptions[];
  readonly nsid: number;
  /** How long a command may wait for a usable path before failing (default 30000 ms):
   * the time it spent parked, summed over its parks, and out the retry delays its
   * statuses asked for (a longer delay is refused); not its time in flight or in doubt.
   * Infinity: it waits for a path, and out any delay, as long as it takes. */
  readonly noPathTimeoutMs?: number;
  /** Commands that may wait for a path, for fencing or out a status's retry delay,
   * together (default 4096). */
  readonly maxWaiting?: number;
  /** Wait after a path's association is lost (its controller left 'live') before its
   * in-doubt commands are resent elsewhere. Default, per path: that path's KATO (the
   * largest its lost controller may have had, Set Features included) rounded
   * up to seconds, plus one second (defaultFenceMs), the longest our target keeps a
   * controller it lost touch with. Given, it applies to every path and may only lengthen
   * that wait (a Linux nvmet target may keep a controller up to twice its KATO); a value
   * below any path's defaultFenceMs is refused. */
  readonly fenceDelayMs?: number;
  /** Attempts per command before giving up (default 16): stops ping-pong on flapping
   * paths. Attempts refused with an ANA status do not count (see retry rule 1). */
  readonly maxAttempts?: number;
  /** A path's controller state, ANA state, identity check or usability changed. */
  readonly onPathChange?: (path: PathInfo, why: string) => void;
  /** A command was resent, held in doubt, or released from doubt. */
  readonly onRetry?: (ev: RetryEvent) => void;
}

export interface RetryEvent {
  /** retry: resent at once; hold: may have run, waits for fencing; release: fenced, resent;
   * again: a status a retry may pass, sent again on its path (after the status's delay). */
  readonly kind: 'retry' | 'hold' | 'release' | 'again';
  /** The command ("write slba 8 nlb 8"). */
  readonly what: string;
  /** The path the last attempt went to. */
  readonly path: string;
  readonly reason: string;
}

export class MultipathNamespace extends NamespaceIo {
  readonly nsid: number;
  private readonly list: Path[] = [];
  private readonly waiting: Command[] = [];
  private waitTimer: NodeJS.Timeout | null = null;
  /** When waitTimer fires (performance.now()). */
  private waitDue = 0;
  private rr = 0;
  private closing: Promise<void> | null = null;
  private readonly watch: WatchContext;
  /** connect() waiting for a path's next change (awaitRechecks). */
  private readonly checked: (() => void)[] = [];
  private readonly noPathTimeoutMs: number;
  private readonly maxWaiting: number;
  private readonly maxAttempts: number;

  private constructor(private readonly opts: MultipathOptions) {
    super();
    this.nsid = opts.nsid;
    this.watch = {
      nsid: opts.nsid,
      reference: null,
      changed: (p, why) => {
        for (const resolve of this.checked.splice(0)) resolve();
        this.emit(p, why);
        if (p.usable) this.wake();
      },
      grown: (p) => {
        for (const q of this.list) if (q !== p && q.nsze < p.nsze) checkSize(this.watch, q);
      },
    };
    this.noPathTimeoutMs = opts.noPathTimeoutMs ?? 30_000;
    this.maxWaiting = opts.maxWaiting ?? 4096;
    this.maxAttempts = opts.maxAttempts ?? 16;
    const host = oneHost(opts.paths);
    opts.paths.forEach((po, i) => {
      const p = new Path(i, pathName(po), opts.fenceDelayMs ?? 0);
      p.ctrl = new NvmeController({
        ...po,
        ...host,
        requireKeepAlive: true,
        // A path reconnecting holds no I/O: the namespace sends it to another path.
        fastIoFailMs: 0,
        onStateChange: (next, prev, why) => {
          this.onControllerState(p, why);
          callUser('onStateChange', po.onStateChange, next, prev, why);
        },
        onAsyncEvent: (ev) => {
          onAnaEvent(this.watch, p, ev);
          onNamespaceEvent(this.watch, p, ev);
          callUser('onAsyncEvent', po.onAsyncEvent, ev);
        },
      });
      this.list.push(p);
    });
  }

  /**
   * Connect every path, check that each shows the same namespace, read ANA. Resolves
   * once at least one path is verified; paths that could not connect, or that do not
   * have the namespace (not active there, as a node that does not serve it yet), or
   * whose Identify got no answer, stay listed and unused, and join once they show it
   * (reconnect, namespace-changed event, a re-check after a backoff). Rejects, closing
   * everything, when a path shows another namespace under this NSID or one that cannot
   * be proven the same (no IDs, not shared), or no path came up (naming each and why).
   */
  static async connect(opts: MultipathOptions): Promise<MultipathNamespace> {
    checkOptions(opts);
    const mp = new MultipathNamespace(opts);
    const started = performance.now();
    const timeout = connectTimeoutOf(opts);
    const results = await Promise.allSettled(mp.list.map((p) => p.ctrl.reconnect()));
    await Promise.all(mp.list.map((p) => p.validating));
    await mp.awaitRechecks(started + timeout);
    const refused = mp.list.find(isRefused);
    const verified = mp.list.filter((p) => p.verified);
    if (refused || verified.length === 0) {
      // Each path's state as it failed, before close() moves it to 'closed'.
      const why = results.map((r, i) => {
        const p = mp.list[i]!;
        if (r.status === 'rejected') return `${p.name}: ${(r.reason as Error).message}`;
        const state = p.controller === 'live' ? '' : ` (controller ${p.controller})`;
        const open = `namespace ${opts.nsid} not identified within the connect timeout (${timeout} ms)`;
        return `${p.name}: ${p.problem ?? open}${state}`;
      });
      await mp.close();
      if (refused) {
        const r = mp.watch.reference;
        const ref = r && r.path !== refused.name ? r.path : null;
        throw new Error(
          `multipath ${opts.paths[0]!.subnqn} namespace ${opts.nsid}: refusing path ` +
            `${refused.name}: ${refused.problem}${ref ? ` (compared with path ${ref})` : ''}`,
        );
      }
      throw new HostError(
        'connect',
        `multipath namespace ${opts.nsid}: no path came up (${why.join('; ')}). Fix what ` +
          `each path reports (a target down, unreachable or slow to answer, or not serving ` +
          `namespace ${opts.nsid}), then connect again.`,
      );
    }
    return mp;
  }

  /**
   * While no path is verified or refused and a path's identity check is to run again (it
   * got no answer, e.g. 'busy' or a timeout: unchecked), wait for those checks, until
   * `deadline`: a re-check 50 ms later may well pass, and connect() would fail without it.
   * So may the check of the next association of a path whose check was cut short by the
   * loss of its association (an admin timeout), when its controller reconnects: while it
   * is connecting or waiting to, it is waited for too. A path whose controller gave up
   * ('dead') is not, and nothing is past `deadline`.
   */
  private async awaitRechecks(deadline: number): Promise<void> {
    const again = (p: Path) =>
      p.unchecked && ['live', 'connecting', 'recovering'].includes(p.controller);
    const waiting = () =>
      !this.list.some((p) => p.verified || isRefused(p)) && this.list.some(again);
    while (waiting() && performance.now() < deadline) {
      await this.changeWithin(deadline);
      // A check that started meanwhile (a re-check, a new association's) goes on to read
      // ANA once it passes, as the first check did before connect() looked; one still out
      // at the deadline is not waited for.
      await this.changeWithin(deadline, Promise.all(this.list.map((p) => p.validating)));
    }
  }

  /** Until a path changes (or `what` settles, if given), or `deadline` passes. */
  private async changeWithin(deadline: number, what?: Promise<unknown>): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      if (what)
        void what.then(
          () => resolve(),
          () => resolve(),
        );
      else this.checked.push(resolve);
      timer = setTimeout(resolve, Math.max(0, deadline - performance.now()));
    });
    clearTimeout(timer);
  }

  /** Identify data of the namespace, as the first verified path reported it, or the
   * first that reported it grown since (nsze follows a grown volume). */
  get identity(): NamespaceIdentity {
    return this.watch.reference!.view.identity;
  }
  get ids(): NamespaceIds {
    return this.watch.reference!.view.ids;
  }
  get blockSize(): number {
    return this.identity.blockSize;
  }
  /** Size in blocks. */
  get nsze(): number {
    return this.identity.nsze;
  }

  /** Every path with its state and counters. */
  paths(): PathInfo[] {
    return this.list.map((p) => p.info());
  }

  /** The controller of path `index` (for admin commands or a manual reconnect). */
  controller(index: number): NvmeController {
    return this.list[index]!.ctrl;
  }

  // ---- I/O API (same shape as NvmeNamespace) ----

  /** The smallest transfer limit of any path; 0 when no path said. */
  protected transferLimit(): number {
    const limits = this.list.map((p) => p.maxTransferBytes).filter((n) => n > 0);
    return limits.length ? Math.min(...limits) : 0;
  }

  /**
   * Close every path. Waiting commands fail with 'closed'; commands in doubt fail with
   * 'closed' and maybeExecuted = true (they are not resent).
   */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    for (const c of this.waiting.splice(0)) this.fail(c, 'closed', 'multipath namespace closed');
    for (const p of this.list) {
      for (const [c, timer] of [...p.delayed] as [Command, NodeJS.Timeout][]) {
        clearTimeout(timer);
        p.delayed.delete(c);
        this.fail(
          c,
          'closed',
          `multipath namespace closed while it waited to be sent again on ${p.name}`,
        );
      }
      for (const c of [...p.inDoubt.keys()] as Command[]) {
        p.inDoubt.delete(c);
        this.fail(c, 'closed', closedInDoubt(p));
      }
    }
    await Promise.all(this.list.map((p) => p.ctrl.close()));
    for (const p of this.list) {
      p.lost();
      p.stopFenceTimers();
    }
    if (this.waitTimer) clearTimeout(this.waitTimer);
    this.waitTimer = null;
  }

  // ---- routing ----

  protected submit(req: NvmeRequest, what: string, mutating: boolean, queue = -1) {
    return new Promise<NvmeRequest>((resolve, reject) => {
      const done = (err: Error | null, r: NvmeRequest | null) => (err ? reject(err) : resolve(r!));
      this.dispatch(new Command(req, what, mutating, queue, done));
    });
  }

  /** Send `c` on the next path, or park it until one is usable. */
  private dispatch(c: Command): void {
    if (this.closing) return this.fail(c, 'closed', 'multipath namespace closed');
    if (c.attempts >= this.maxAttempts) {
      const last = c.lastError ? `; last: ${c.lastError.message}` : '';
      return this.fail(c, 'not-connected', `gave up after ${c.attempts} attempts${last}`);
    }
    // Bounds refusals that never park too (two paths refusing in turn, rule 1).
    if (c.parkedMs >= this.noPathTimeoutMs) return this.failNoPath(c);
    // Past the end the namespace reports: the caller's mistake, any path answers it (4a).
    const end = c.end <= this.nsze ? c.end : 0;
    const bytes = c.template.transferLength;
    const i = choosePath(this.list, this.rr++, bytes, end);
    if (i >= 0) return this.send(c, this.list[i]!);
    // A usable path has the blocks but none takes the size (rule 6); else wait (rule 5).
    if (this.list.some((p) => p.usable && p.nsze >= end)) return this.failTooLarge(c, bytes);
    this.park(c);
  }

  /** One attempt of `c` on `p`. */
  private send(c: Command, p: Path): void {
    c.sm.transition('in-flight');
    c.path = p;
    c.epoch = p.epoch;
    c.sentAt = performance.now();
    const req = copyRequest(c.template);
    c.attempt = req;
    req.onDone = (r) => this.onAttemptDone(c, p, r);
    p.inFlight++;
    p.counts.submitted++;
    p.ctrl.submitIo(req, c.queue);
  }

  private onAttemptDone(c: Command, p: Path, r: NvmeRequest): void {
    if (c.attempt !== r) return; // an old attempt's late callback: never acted upon
    c.attempt = null;
    p.inFlight--;
    const outcome = this.learn(c, p, r);
    switch (outcome) {
      case 'complete':
        p.counts.completed++;
        return this.finish(c, null, r);
      case 'fail':
        if (statusType(r.status) === 3) p.counts.pathErrors++;
        else p.counts.failed++;
        return this.finish(c, this.failure(c, r), r);
      case 'retry':
        callUser('onRetry', this.opts.onRetry, {
          kind: 'retry',
          what: c.what,
          path: p.name,
          reason: c.lastError!.message,
        });
        return this.dispatch(c);
      case 'hold':
        return this.hold(c, p);
      case 'again':
        return this.again(c, p, r);
    }
  }

  /** What an ended attempt tells about its path and its command; and what to do next. */
  private learn(c: Command, p: Path, r: NvmeRequest): Outcome {
    const implied = r.error ? null : anaStateOfStatus(r.status);
    if (implied) {
      // Refused before it ran: the path is out until its log says otherwise (rule 1), and
      // the attempt does not count; its time counts as waiting for a usable path, which
      // noPathTimeoutMs bounds (a refusal that takes long would add little parked time).
      onAnaStatus(this.watch, p, implied, `I/O completed with ${statusName(r.status)}`);
      c.parkedMs += performance.now() - c.sentAt;
    } else {
      c.attempts++;
      // The namespace answered: the path's next ANA backoff starts short again.
      if (!r.error && statusType(r.status) !== 3) p.anaBackoffMs = 0;
    }
    const claimed = c.end > 0 && c.end <= p.nsze;
    const outcome = classifyOutcome(r.status, r.error, c.mutating, c.statusRetries, claimed);
    if (outcome === 'retry' && !r.error && isOutOfRange(r.status))
      onOutOfRange(this.watch, p, c.what);
    if (r.error) {
      p.counts.transportErrors++;
      c.lastError = r.error;
      if (r.error.maybeExecuted) c.maybeExecuted = true;
    } else if (outcome === 'retry' || outcome === 'again') {
      if (outcome === 'retry') p.counts.pathErrors++;
      else p.counts.retried++;
      c.lastError = new NvmeStatusError(r.status, `${c.what} on ${p.name}`, r.dw0);
    }
    return outcome;
  }

  /**
   * What the caller of `c` gets when its last attempt ended it (rule 4). A path that
   * refused it unsent (too large for that path), or answered it with a status, does not
   * make it "not executed": an earlier attempt, held in doubt and released, may have run.
   */
  private failure(c: Command, r: NvmeRequest): Error {
    const e = r.error;
    if (!e) {
      const what = c.what + retriedNote(c.statusRetries);
      return new NvmeStatusError(r.status, what, r.dw0, c.maybeExecuted);
    }
    return c.maybeExecuted ? withEarlierAttempt(e, `namespace ${this.nsid} ${c.what}`) : e;
  }

  /** Rule 3: keep `c` until path `p` is fenced. */
  private hold(c: Command, p: Path): void {
    if (this.closing) {
      return this.fail(c, 'closed', closedInDoubt(p));
    }
    if (this.parked() >= this.maxWaiting) {
      return this.fail(
        c,
        'busy',
        `may have been executed on ${p.name}, and ${this.maxWaiting} commands already wait; ` +
          `failing it rather than resending it before that path is fenced`,
      );
    }
    c.sm.transition('in-doubt');
    p.inDoubt.set(c, c.epoch);
    const why = c.lastError?.message ?? 'no completion';
    callUser('onRetry', this.opts.onRetry, {
      kind: 'hold',
      what: c.what,
      path: p.name,
      reason: why,
    });
    this.releaseFenced(p);
  }

  /** Rule 4: a status a retry may pass; `c` goes to `p` again after the status's delay. */
  private again(c: Command, p: Path, r: NvmeRequest): void {
    c.statusRetries++;
    const ms = statusRetryDelayMs(r.status, p.ctrl.crdt);
    if (ms > 0 && !this.mayDelay(c, p, ms)) return;
    callUser('onRetry', this.opts.onRetry, {
      kind: 'again',
      what: c.what,
      path: p.name,
      reason: `${c.lastError!.message}${ms > 0 ? `; sent again in ${ms} ms` : ''}`,
    });
    if (ms === 0) return this.resendOn(c, p);
    c.sm.transition('delayed');
    c.parkedAt = performance.now();
    const timer = setTimeout(() => {
      p.delayed.delete(c);
      // Waiting to be sent counts as waiting for a path does (noPathTimeoutMs).
      const waited = performance.now() - c.parkedAt;
      c.parkedMs += waited;
      c.delayedMs += waited;
      this.resendOn(c, p);
    }, ms);
    p.delayed.set(c, timer);
  }

  /**
   * May `c` wait `ms` on `p` before it is sent again (rule 4)? As a parked command may:
   * within what is left of its noPathTimeoutMs (else it fails now with its status, rather
   * than after a delay a controller may set to hours), and while fewer than maxWaiting
   * commands wait (else 'busy'). If not, `c` is failed, saying which delay was refused.
   */
  private mayDelay(c: Command, p: Path, ms: number): boolean {
    const budget = this.noPathTimeoutMs;
    const why = retryDelayRefusal(p.name, ms, budget - c.parkedMs, 'noPathTimeoutMs', budget);
    if (why) {
      this.finish(c, this.notSentAgain(c, p, why), null);
      return false;
    }
    if (this.parked() >= this.maxWaiting) {
      const status = statusName((c.lastError as NvmeStatusError).status);
      this.fail(
        c,
        'busy',
        `completed with ${status} on ${p.name}, which asks to wait ${ms} ms before sending ` +
          `it again, and ${this.maxWaiting} commands already wait (maxWaiting): not sent again`,
      );
      return false;
    }
    return true;
  }

  /** Send `c` again on `p`, where it completed with a status; elsewhere as rule 4 says. */
  private resendOn(c: Command, p: Path): void {
    if (this.closing) return this.fail(c, 'closed', 'multipath namespace closed');
    const sameAssociation = p.epoch === c.epoch && p.controller === 'live';
    if (sameAssociation && p.usable) return this.send(c, p);
    if (!c.mutating) return this.dispatch(c);
    // The association it completed on is gone: elsewhere once that one is fenced.
    if (!sameAssociation) return this.hold(c, p);
    const why =
      `the path stopped being usable, ${p.problem ?? `ANA ${p.ana}`}, during the status's ` +
      `retry delay, and a write moves to another path only on a path status; write it ` +
      `again to send it to a usable path`;
    this.finish(c, this.notSentAgain(c, p, why), null);
  }

  /**
   * What the caller of `c` gets when it completed on `p` with a status a retry may pass
   * but is not sent again (rule 4), and `why`: that status.
   */
  private notSentAgain(c: Command, p: Path, why: string): NvmeStatusError {
    const last = c.lastError as NvmeStatusError;
    const what = `${c.what}${retriedNote(c.statusRetries - 1)} on ${p.name} (not sent again: ${why})`;
    return new NvmeStatusError(last.status, what, last.dw0, c.maybeExecuted);
  }

  /** Resend the commands in doubt on `p` whose association is now fenced. */
  private releaseFenced(p: Path): void {
    for (const [c, epoch] of [...p.inDoubt] as [Command, number][]) {
      if (!p.fenced(epoch)) continue;
      p.inDoubt.delete(c);
      const ms = p.fenceDelayOf(epoch);
      const reason = `association lost ${ms === null ? 'and fenced' : `${ms} ms ago`} (${p.controller})`;
      callUser('onRetry', this.opts.onRetry, {
        kind: 'release',
        what: c.what,
        path: p.name,
        reason,
      });
      this.dispatch(c);
    }
  }

  /**
   * Rule 5: no usable path; wait, until its parks add up to noPathTimeoutMs (so a command
   * parked again after a path status or a release keeps what it has used up, and time in
   * flight or in doubt meanwhile does not count against it).
   */
  private park(c: Command): void {
    if (this.parked() >= this.maxWaiting) {
      return this.fail(c, 'busy', `no usable path and ${this.maxWaiting} commands already wait`);
    }
    if (c.parkedMs >= this.noPathTimeoutMs) return this.failNoPath(c);
    c.sm.transition('waiting');
    c.parkedAt = performance.now();
    this.waiting.push(c);
    if (this.waitTimer && this.deadline(c) < this.waitDue) {
      clearTimeout(this.waitTimer);
      this.waitTimer = null;
    }
    this.armWaitTimer();
  }

  /** Leave the wait queue: what this park used adds to the command's parked time. */
  private unpark(): Command {
    const c = this.waiting.shift()!;
    c.parkedMs += performance.now() - c.parkedAt;
    return c;
  }

  /** When waiting command `c` will have been parked noPathTimeoutMs in all. */
  private deadline(c: Command): number {
    return c.parkedAt + this.noPathTimeoutMs - c.parkedMs;
  }

  /** Commands that wait: for a path, for fencing, or out a status's retry delay. */
  private parked(): number {
    const held = (n: number, p: Path) => n + p.inDoubt.size + p.delayed.size;
    return this.waiting.length + this.list.reduce(held, 0);
  }

  /** Fire at the earliest deadline of the waiting commands (not their queue order). */
  private armWaitTimer(): void {
    if (this.waitTimer || this.waiting.length === 0) return;
    this.waitDue = this.waiting.reduce((t, c) => Math.min(t, this.deadline(c)), Infinity);
    this.waitTimer = setTimeout(
      () => {
        this.waitTimer = null;
        const now = performance.now();
        const expired: Command[] = [];
        let kept = 0;
        for (const c of this.waiting) {
          if (this.deadline(c) <= now) expired.push(c);
          else this.waiting[kept++] = c;
        }
        this.waiting.length = kept;
        this.armWaitTimer();
        for (const c of expired) this.failNoPath(c);
      },
      // At most setTimeout's limit (a longer delay fires after 1 ms, again and again):
      // firing early expires nothing and arms again.
      Math.min(MAX_TIMER_MS, Math.max(0, this.waitDue - performance.now())),
    );
  }

  /**
   * Rule 6: every usable path has an MDTS smaller than `c` (which was sized before those
   * paths' limits were known): none is sent it, as Linux splits by the path's limits and
   * a controller refuses a transfer over its MDTS.
   */
  private failTooLarge(c: Command, bytes: number): void {
    const limits = this.list
      .filter((p) => p.usable)
      .map((p) => `${p.name}: ${p.maxTransferBytes}`)
      .join(', ');
    const why =
      `${bytes} bytes is more than any usable path takes in one command (${limits}), so ` +
      `it was not sent; send at most ${this.transferLimit()} bytes per command`;
    const earlier = c.maybeExecuted ? EARLIER_ATTEMPT_NOTE : '';
    this.fail(c, 'too-large', why + earlier);
  }

  private failNoPath(c: Command): void {
    const delays =
      c.delayedMs > 0
        ? `, ${Math.round(c.delayedMs)} ms of that in retry delays statuses asked for`
        : '';
    const why =
      `no usable path for ${this.noPathTimeoutMs} ms${delays} (${this.summary()})` +
      noPathHint(this.list);
    this.fail(c, 'not-connected', why);
  }

  /**
   * A path may have become usable: send what waits. Each waiting command is tried once:
   * one no usable path has the blocks of parks again, at the back.
   */
  private wake(): void {
    for (let n = this.waiting.length; n > 0 && this.list.some((p) => p.usable); n--) {
      this.dispatch(this.unpark());
    }
  }

  private finish(c: Command, err: Error | null, r: NvmeRequest | null): void {
    c.sm.transition('done');
    c.done(err, r);
  }

  private fail(
    c: Command,
    kind: 'closed' | 'busy' | 'not-connected' | 'too-large',
    why: string,
  ): void {
    const err = new HostError(kind, `namespace ${this.nsid} ${c.what}: ${why}`, c.maybeExecuted, {
      cause: c.lastError ?? undefined,
    });
    this.finish(c, err, null);
  }

  private summary(): string {
    const size = (p: Path) =>
      p.verified && p.nsze < this.nsze ? `, ${p.nsze} of ${this.nsze} blocks` : '';
    return this.list
      .map((p) => `${p.name}: ${p.controller}, ${p.problem ?? p.ana}${size(p)}`)
      .join('; ');
  }

  // ---- path state ----

  private emit(p: Path, why: string): void {
    // A throw here must not stop the check, state change or retry that reports it.
    callUser('onPathChange', this.opts.onPathChange, p.info(), why);
  }

  private onControllerState(p: Path, why?: Error): void {
    const next = p.ctrl.state;
    p.controller = next;
    const reason = `controller ${next}${why && next !== 'live' ? `: ${why.message}` : ''}`;
    if (next === 'live') {
      p.newAssociation(p.ctrl.cntlid);
      p.validating = validatePath(this.watch, p);
      this.emit(p, reason);
      return;
    }
    p.lost();
    // Not yet while 'deleting': close() drains and shuts down on the association, whose
    // sockets (and Keep Alives) stay open for up to seconds, so the target may still be
    // taking this path's writes; its fence counts from 'closed', when they are shut.
    if (!this.closing && next !== 'deleting') p.startFence(() => this.releaseFenced(p));
    this.emit(p, reason);
  }
}

/**
 * Why a command in doubt on `p` (a write whose attempt there may have run) fails when the
 * namespace closes before that path was fenced, and what to do about it.
 */
function closedInDoubt(p: Path): string {
  const when = 'once connected again (the multipath namespace was closed)';
  return `multipath namespace closed while it was in doubt on ${p.name}: ${writeInDoubtAdvice(when)}`;
}

/** `p` shows another namespace, or one that cannot be proven the same (connect() fails). */
function isRefused(p: Path): boolean {
  return p.problem !== null && !p.absent && !p.unchecked;
}

/** How long connect() may take: the longest connect timeout of its paths. */
function connectTimeoutOf(o: MultipathOptions): number {
  return Math.max(...o.paths.map((p) => p.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS));
}
