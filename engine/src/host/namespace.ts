/**
 * NvmeNamespace: block I/O on one namespace of one controller, with promises, in logical
 * blocks of the namespace's format (the I/O methods are NamespaceIo's). A command the
 * controller completes with a status without DNR is sent again on the same controller,
 * after the status's retry delay (a short backoff for a path status), a few times
 * (status-retry.ts) before its caller sees it; a delay longer than what is left of the
 * command's timeout (the delays it waited out add up against it) is not waited out, and
 * the controller's close() ends a command waiting one at once. One answered with ANA
 * Transition while the ANA log says its group is in change waits for the group to be
 * usable again instead (afterTransition), then goes out on the same controller. A read,
 * compare or flush in flight when the association is lost is sent again once the
 * controller has reconnected; a write is not, and its error says it may have been
 * executed (resendable), unless it was never sent (it waited for a queue slot). One
 * submitted while the controller reconnects was never sent either: the controller holds
 * it until it is live again (NvmeController.submitIo), a write too.
 */
import { performance } from 'node:perf_hooks';
import type { NamespaceIdentity, NamespaceIds } from './admin.js';
import { anaStateOfStatus, type AnaPathState } from './ana-log.js';
import type { AnaWait } from './ana-state.js';
import type { ControllerState } from './controller.js';
import { EARLIER_ATTEMPT_NOTE, HostError, NvmeStatusError, writeInDoubtAdvice } from './errors.js';
import { NamespaceIo } from './namespace-io.js';
import { NO_TIMEOUT, type NvmeRequest } from './request.js';
import {
  MAX_STATUS_RETRIES,
  retriedNote,
  timesNote,
  retryDelayRefusal,
  statusRetryDelayMs,
  statusRetryable,
} from './status-retry.js';

/** What a namespace needs from its controller (NvmeController implements it). */
export interface IoController {
  submitIo(req: NvmeRequest, queue?: number): void;
  /** submitIo() after `delayMs`, or now (held while the controller reconnects); close()
   * meanwhile ends it at once. */
  submitIoAfter(req: NvmeRequest, delayMs: number, queue?: number): void;
  readonly maxTransferBytes: number;
  /** CRDT1..3, 100 ms units (status-retry.ts). */
  readonly crdt: readonly number[];
  /** Default I/O command timeout, ms (0 or Infinity: none). */
  readonly ioTimeoutMs: number;
  /** No association, and one is being built or will be (automatic reconnect). */
  readonly reconnecting: boolean;
  /** The namespace's ANA state as a log read issued now says; null without ANA. */
  anaState(nsid: number): Promise<AnaPathState> | null;
  /** The namespace's ANA state once its group leaves change, or 'change' after `ms`; the
   * controller is reset each time the wait reaches twice ANATT. */
  anaSettled(nsid: number, ms: number): Promise<AnaWait>;
  /** How long a group may stay in change before the controller is reset (2 x ANATT), ms. */
  readonly anaChangeLimitMs: number;
  /** Where the controller is (ControllerState), for what a failed command's error advises. */
  readonly state: ControllerState;
}

/** What a command answered with ANA Transition does once its group's state is known. */
type AfterTransition =
  /** The group is usable again: send it again now. */
  | { readonly send: true }
  /** Not sent again, `why`; null: the log does not say change, back off as before. */
  | { readonly send: false; readonly why: string | null };

/**
 * What a write (write zeroes, deallocate) that lost its association tells its caller,
 * with what to do once the controller is in `state` (ControllerState) after the loss:
 * a controller that reconnects by itself, one that reconnects no more, or one closed.
 */
function writeInDoubt(state: ControllerState): string {
  const when =
    state === 'deleting' || state === 'closed'
      ? 'once connected again (the controller was closed)'
      : state === 'dead'
        ? 'once the controller is reconnected (it reconnects no more by itself: reconnect())'
        : 'once the controller is live again';
  return writeInDoubtAdvice(when);
}

export type { IoOptions, ReadOptions, WriteOptions } from './namespace-io.js';

export class NvmeNamespace extends NamespaceIo {
  readonly nsid: number;
  readonly blockSize: number;
  /** Size in blocks. */
  readonly nsze: number;

  constructor(
    private readonly ctrl: IoController,
    readonly identity: NamespaceIdentity,
    readonly ids: NamespaceIds,
  ) {
    super();
    this.nsid = identity.nsid;
    this.blockSize = identity.blockSize;
    this.nsze = identity.nsze;
  }

  /** Size in bytes. */
  get sizeBytes(): number {
    return this.nsze * this.blockSize;
  }

  protected transferLimit(): number {
    return this.ctrl.maxTransferBytes;
  }

  protected submit(req: NvmeRequest, what: string, mutating: boolean, queue?: number) {
    return new Promise<NvmeRequest>((resolve, reject) => {
      let retries = 0;
      // Attempts that reached the socket (an error that says it may have been executed,
      // or an answer), for the error the caller gets after resends.
      let sent = 0;
      // The delays waited out add up against the command's timeout (status-retry.ts).
      const budget = this.timeoutOf(req);
      let delayed = 0;
      // An earlier attempt got no completion and may have run.
      let earlier = false;
      req.onDone = (r) => {
        const e = r.error;
        if (!e || e.maybeExecuted) sent++;
        if (e) {
          if (!this.resendable(e, mutating, retries)) {
            return reject(this.lost(e, what + sentNote(sent, retries), mutating, earlier));
          }
          earlier ||= e.maybeExecuted;
          retries++;
          return this.ctrl.submitIoAfter(req, 0, queue); // once reconnected
        }
        if (r.status === 0) return resolve(r);
        const { status, dw0 } = r;
        const tried = what + retriedNote(retries);
        const refuse = (why: string) =>
          reject(new NvmeStatusError(status, `${tried} (not sent again: ${why})`, dw0, earlier));
        if (!statusRetryable(status, retries)) {
          return reject(new NvmeStatusError(status, tried, dw0, earlier));
        }
        const backOff = () => {
          // The same controller, so no reordering against another path's writes: it
          // answered, so nothing of this command is left in flight there. A path status
          // waits a backoff (status-retry.ts).
          const ms = statusRetryDelayMs(status, this.ctrl.crdt, retries++);
          const who = 'the controller';
          const why = retryDelayRefusal(who, ms, budget - delayed, 'ioTimeoutMs', budget);
          if (why) return refuse(why);
          delayed += ms;
          this.ctrl.submitIoAfter(req, ms, queue);
        };
        const read = anaStateOfStatus(status) === 'change' ? this.ctrl.anaState(this.nsid) : null;
        if (!read) return backOff();
        // Answered, so not executed: sent again on this controller once its group is back.
        const started = performance.now();
        this.afterTransition(read, budget - delayed, budget).then((next) => {
          delayed += performance.now() - started;
          if (!next.send) return next.why === null ? backOff() : refuse(next.why);
          // Sent before: held for a reconnect now, it ends "not sent again".
          this.ctrl.submitIoAfter(req, 0, queue);
        }, reject);
      };
      this.ctrl.submitIo(req, queue);
    });
  }

  /**
   * A command answered with ANA Transition, whose namespace's group the ANA log (`read`,
   * issued after the status) says is in change: the target is moving the group and will
   * say so with an ANA change event, so the command waits for that, as Linux holds it,
   * and goes out again on this controller once the group is usable (a write too: the
   * status is a definite answer, so nothing of it is left to land later). Past twice
   * ANATT the controller is reset, as Linux resets it, and it waits on for the next
   * association's log; bounded by what is left (`left`) of the command's timeout
   * (`total`, ioTimeoutMs). A group inaccessible or in persistent loss fails it with its
   * status.
   * A log that does not say change (a status for a moment, a group shared with a volume
   * that serves), or cannot be read, leaves it to the path-status backoff.
   */
  private async afterTransition(
    read: Promise<AnaPathState>,
    left: number,
    total: number,
  ): Promise<AfterTransition> {
    const started = performance.now();
    const now = await read.catch(() => null);
    if (now === null || now === 'optimized' || now === 'non-optimized' || now === 'unknown') {
      return { send: false, why: null };
    }
    const group = `namespace ${this.nsid}'s ANA group`;
    if (now !== 'change') return { send: false, why: anaUnusable(group, now) };
    const ms = left - (performance.now() - started);
    const after: AnaWait =
      ms > 0
        ? await this.ctrl.anaSettled(this.nsid, ms)
        : { state: 'change', resets: 0, lost: null };
    if (after.state === 'optimized' || after.state === 'non-optimized') return { send: true };
    if (after.state !== 'change') return { send: false, why: anaUnusable(group, after.state) };
    const ran = `the ${Math.max(0, Math.round(left))} ms left of its ioTimeoutMs (${total} ms) ran out`;
    if (after.lost !== null) {
      const why =
        `${group} was in change and the controller lost its association (${after.lost}); ` +
        `it was still reconnecting when ${ran}, so what the group's state is now is not ` +
        `known: check the connection to the target, then send it again`;
      return { send: false, why };
    }
    if (after.resets === 0) {
      const why = `${group} was still in change when ${ran}; raise ioTimeoutMs to wait out longer transitions`;
      return { send: false, why };
    }
    const waited = Math.round(performance.now() - started);
    const why =
      `${group} stayed in change for ${waited} ms, until ${ran}: the controller was reset ` +
      `${after.resets === 1 ? 'once' : `${after.resets} times`} after twice its ANATT ` +
      `(${this.ctrl.anaChangeLimitMs} ms) with no ANA change event saying it is usable ` +
      `again, and the target still reported change; check the target's storage for this ` +
      `volume (its event log), then send it again`;
    return { send: false, why };
  }

  /**
   * A command whose association was lost under it (its connection dropped, or a command
   * on it timed out) is sent again on the next one, once the controller has reconnected,
   * as Linux requeues it (nvme_cancel_request, nvme_decide_disposition): within the same
   * MAX_STATUS_RETRIES, and only while the controller is reconnecting. Only if it changes
   * no data (read, compare, flush), or was never sent (it waited for a queue slot): a
   * write sent may still land on the target after the reconnect, the old controller
   * living on there until its keep-alive timeout (and our target finishing a backend
   * write already started), so sent again and acknowledged it could be overwritten by
   * its lost copy after the caller's next write to those blocks.
   */
  private resendable(e: HostError, mutating: boolean, retries: number): boolean {
    return (
      lostAssociation(e) &&
      (!mutating || !e.maybeExecuted) &&
      this.ctrl.reconnecting &&
      retries < MAX_STATUS_RETRIES
    );
  }

  /** What the caller gets when `e` ends the command. */
  private lost(e: HostError, what: string, mutating: boolean, earlier: boolean): HostError {
    // 'closed': in flight when close() gave up waiting for it (its drainMs ran out)
    if (mutating && e.maybeExecuted && (lostAssociation(e) || e.kind === 'closed')) {
      const doubt = writeInDoubt(this.ctrl.state);
      return new HostError(e.kind, `${what}: ${e.message}; ${doubt}`, true, { cause: e });
    }
    if (earlier) {
      // Restated even when it says it may have been executed (withEarlierAttempt would
      // leave it as it is): the last attempt's error says nothing of the command or its
      // resends.
      const msg = `${what}: ${e.message}${EARLIER_ATTEMPT_NOTE}`;
      return new HostError(e.kind, msg, true, { cause: e });
    }
    // Ended by close() before it was sent: say which command it was.
    if (e.kind === 'closed')
      return new HostError(e.kind, `${what}: ${e.message}`, false, { cause: e });
    return e;
  }

  /** The command's timeout, ms: its own, else the controller's; Infinity for none. */
  private timeoutOf(req: NvmeRequest): number {
    const t = req.timeoutMs < 0 ? this.ctrl.ioTimeoutMs : req.timeoutMs;
    return t === NO_TIMEOUT ? Infinity : t;
  }
}

/**
 * For an error message after resends (`retries` > 0): how many times the command was
 * sent (`sent` of its attempts reached the socket); nothing when it was tried once, or
 * never sent at all (a write that waited for a slot when its queue failed, held for the
 * reconnect: its error says it was never sent, where this said 'sent 0 times').
 */
function sentNote(sent: number, retries: number): string {
  return retries === 0 || sent === 0 ? '' : timesNote('sent', sent);
}

/** Why a command is not sent again to a group in ANA state `state`. */
function anaUnusable(group: string, state: AnaPathState): string {
  if (state === 'unknown') {
    return `${group} is not in the controller's ANA log any more: the namespace is not reachable through this controller`;
  }
  return (
    `${group} went ${state} on this controller, which serves the namespace no more; send ` +
    `it to a controller of a node that serves it (multipath does), or wait for this one to ` +
    `be optimized again`
  );
}

/** The command's association was lost under it: its queue failed, or it timed out. */
function lostAssociation(e: HostError): boolean {
  return e.kind === 'transport' || e.kind === 'timeout';
}
