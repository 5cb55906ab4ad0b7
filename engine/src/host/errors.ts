/**
 * Errors the host library hands to callers. Two families, so a caller (the mirror, the
 * wizard, the benchmark) can decide what to do without parsing messages:
 * - NvmeStatusError: the controller completed the command with a non-zero status.
 *   The command ran (or was refused) on the target; the queue is fine. Its
 *   `maybeExecuted` is set when an earlier attempt of it, one that got no completion,
 *   may have run (multipath: a write released from doubt to another path).
 * - HostError: the command did not get a completion from the controller. `kind` says
 *   why and `maybeExecuted` says whether the target may have acted on it, which is what
 *   decides whether a write may be retried elsewhere (we never resend one ourselves).
 */
import { DNR, statusName, statusType } from '../protocol/status.js';
import type { NamespaceIdentity } from './admin.js';

/** How an error says that an earlier attempt of its command may have run. */
export const EARLIER_ATTEMPT_NOTE = '; an earlier attempt may have been executed';

export class NvmeStatusError extends Error {
  /** Status Code Type (0 generic, 1 command specific, 2 media, 3 path). */
  readonly sct: number;
  /** Status Code. */
  readonly sc: number;
  /** Do Not Retry: the same command will fail again. */
  readonly dnr: boolean;
  /** Spec name of the status, as status.ts spells it ("LBA_RANGE|DNR"). */
  readonly statusName: string;

  constructor(
    /** The 15-bit status value ((SCT << 8) | SC | DNR | MORE), see status.ts. */
    readonly status: number,
    /** What was being done ("read nsid 1 slba 0"), for the message only. */
    what: string,
    /** CQE dw0: carries details for some commands (Connect's IATTR/offset). */
    readonly dw0 = 0,
    /**
     * An earlier attempt of the command got no completion and may have been executed:
     * this status is a later attempt's, so it does not say the command had no effect.
     */
    readonly maybeExecuted = false,
  ) {
    const name = statusName(status);
    const earlier = maybeExecuted ? EARLIER_ATTEMPT_NOTE : '';
    super(`${what}: NVMe status ${name} (0x${status.toString(16)})${earlier}`);
    this.name = 'NvmeStatusError';
    this.sct = statusType(status);
    this.sc = status & 0xff;
    this.dnr = (status & DNR) !== 0;
    this.statusName = name;
  }
}

/**
 * Why a command ended without a completion from the controller:
 * - 'connect': TCP connect, IC exchange, Fabrics Connect or bring-up failed.
 * - 'timeout': this command exceeded its timeout; its queue was torn down. Or its
 *   timeout (counted from submission) ran out while it waited for a free slot on its
 *   queue: never sent (maybeExecuted false), and the queue stays up.
 * - 'transport': the queue failed under the command (socket closed or reset, peer
 *   TermReq, protocol error, or another command's timeout on the same controller).
 * - 'protocol': the target broke the NVMe/TCP rules on this command (bad R2T, C2HData
 *   out of range, short read); the queue was torn down too.
 * - 'not-connected': the controller was not live and not reconnecting, or the command
 *   waited for its reconnect past its timeout or fastIoFailMs, or until it gave up
 *   (never sent).
 * - 'busy': the bounded wait queue (maxWaiting) was full (never sent).
 * - 'too-large': the transfer is larger than the queue takes (its maxDataLength);
 *   sending it would make the controller's answer a protocol error that takes the
 *   association down (never sent; resending it elsewhere fails the same way).
 * - 'closed': the caller closed the controller or queue.
 */
export type HostErrorKind =
  | 'connect'
  | 'timeout'
  | 'transport'
  | 'protocol'
  | 'not-connected'
  | 'busy'
  | 'too-large'
  | 'closed';

export class HostError extends Error {
  constructor(
    readonly kind: HostErrorKind,
    message: string,
    /**
     * True when the command reached the socket, so the target may have executed it
     * (a write may or may not be on the media). False when it was never sent.
     */
    readonly maybeExecuted = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'HostError';
  }

  /** A copy for one command: same kind and cause, with that command's maybeExecuted. */
  forCommand(maybeExecuted: boolean): HostError {
    return new HostError(this.kind, this.message, maybeExecuted, { cause: this.cause });
  }
}

/**
 * What to do about a write (write zeroes, deallocate) that may have been executed and is
 * not sent again; `when`: when the caller can act ('once the controller is live again').
 */
export function writeInDoubtAdvice(when: string): string {
  return (
    'it may have been executed, and is not sent again: the target may still apply it, even ' +
    'after a newer write to the same blocks (its lost controller lives on there until its ' +
    `keep-alive timeout), so ${when} read those blocks back to see what they hold, or ` +
    'write them again'
  );
}

/**
 * `e` for a command an earlier attempt of which got no completion and may have run:
 * maybeExecuted set, and said after what the command is (`what`).
 */
export function withEarlierAttempt(e: HostError, what: string): HostError {
  if (e.maybeExecuted) return e;
  return new HostError(e.kind, `${what}: ${e.message}${EARLIER_ATTEMPT_NOTE}`, true, { cause: e });
}

/** The controller has no active namespace with this NSID (Identify Namespace is zeroed). */
export class NamespaceNotActiveError extends Error {
  constructor(readonly nsid: number) {
    super(`namespace ${nsid} is not active`);
    this.name = 'NamespaceNotActiveError';
  }
}

/**
 * The namespace is active but in a format the library cannot use: a block size it does
 * not know (LBADS) or metadata with each block (`identity.ms` not 0).
 */
export class NamespaceFormatError extends Error {
  constructor(
    readonly identity: NamespaceIdentity,
    message: string,
  ) {
    super(message);
    this.name = 'NamespaceFormatError';
  }
}
