/**
 * One caller command of a multipath namespace as it moves between paths: its state,
 * attempts, whether any attempt may have run, and the path and association epoch of
 * the current attempt (what fencing is checked against). Each attempt is a fresh
 * NvmeRequest copied from the caller's template, so a late callback of an old attempt
 * can be recognised and ignored.
 */
import { IO } from '../protocol/opcodes.js';
import type { Path } from './multipath-path.js';
import { NvmeRequest } from './request.js';
import { StateMachine } from './state.js';

/** Command states. */
type CommandState =
  /** Built, not yet routed. */
  | 'new'
  /** An attempt is on a path. */
  | 'in-flight'
  /** No usable path: parked until one appears or noPathTimeoutMs passes. */
  | 'waiting'
  /** May have run on its path; parked until that path is fenced. */
  | 'in-doubt'
  /** Completed on its path with a status a retry may pass: waits out the status's retry
   * delay, to be sent again on that path. */
  | 'delayed'
  /** Completed to the caller. Terminal. */
  | 'done';

const COMMAND_STATES: Record<CommandState, readonly CommandState[]> = {
  new: [],
  'in-flight': ['new', 'in-flight', 'waiting', 'in-doubt', 'delayed'],
  waiting: ['new', 'in-flight', 'in-doubt', 'delayed'],
  'in-doubt': ['in-flight', 'delayed'],
  delayed: ['in-flight'],
  done: ['new', 'in-flight', 'waiting', 'in-doubt', 'delayed'],
};

export class Command {
  readonly sm = new StateMachine<CommandState>('multipath command', 'new', COMMAND_STATES);
  /** Attempts that count toward maxAttempts (not those refused with an ANA status). */
  attempts = 0;
  /** Times it was sent again on its path after a status a retry may pass ('again'). */
  statusRetries = 0;
  /** Some attempt may have been executed (sticky). */
  maybeExecuted = false;
  path: Path | null = null;
  /** The path's epoch when the current attempt was sent. */
  epoch = 0;
  attempt: NvmeRequest | null = null;
  /** Time it spent waiting for a usable path, ms (rule 5): its earlier parks, the
   * attempts a path refused with an ANA status (that path was not usable either), and the
   * retry delays it waited out (rule 4: waiting to be sent all the same). */
  parkedMs = 0;
  /** The part of parkedMs spent waiting out retry delays, for messages. */
  delayedMs = 0;
  /** When the current attempt was sent (performance.now()). */
  sentAt = 0;
  /** When its current park began (performance.now()); meaningful while 'waiting' or
   * 'delayed'. */
  parkedAt = 0;
  lastError: Error | null = null;
  /** The block after the last one it names (0: none, as a flush): paths whose namespace
   * ends before it are not sent it (choosePath). */
  readonly end: number;

  constructor(
    readonly template: NvmeRequest,
    readonly what: string,
    /** Changes data: held, not resent, after a transport error (rule 3). */
    readonly mutating: boolean,
    readonly queue: number,
    readonly done: (err: Error | null, req: NvmeRequest | null) => void,
  ) {
    this.end = blocksEnd(template);
  }
}

/** The block after the last one `r` names: its SLBA + NLB, or its ranges' furthest end. */
function blocksEnd(r: NvmeRequest): number {
  switch (r.opcode) {
    case IO.READ:
    case IO.WRITE:
    case IO.COMPARE:
    case IO.WRITE_ZEROES:
      return r.cdw11 * 2 ** 32 + r.cdw10 + (r.cdw12 & 0xffff) + 1;
    case IO.DSM: {
      // Ranges of 16 bytes: context attributes, NLB (1's based), SLBA.
      let end = 0;
      for (let at = 0; at + 16 <= (r.dataOut?.length ?? 0); at += 16) {
        const d = r.dataOut!;
        const slba = d.readUInt32LE(at + 12) * 2 ** 32 + d.readUInt32LE(at + 8);
        end = Math.max(end, slba + d.readUInt32LE(at + 4));
      }
      return end;
    }
    default:
      return 0;
  }
}

/** A fresh request with the command's SQE fields and buffers, for one attempt. */
export function copyRequest(t: NvmeRequest): NvmeRequest {
  const r = new NvmeRequest();
  r.opcode = t.opcode;
  r.nsid = t.nsid;
  r.cdw2 = t.cdw2;
  r.cdw3 = t.cdw3;
  r.cdw10 = t.cdw10;
  r.cdw11 = t.cdw11;
  r.cdw12 = t.cdw12;
  r.cdw13 = t.cdw13;
  r.cdw14 = t.cdw14;
  r.cdw15 = t.cdw15;
  r.dataOut = t.dataOut;
  r.readLength = t.readLength;
  r.into = t.into;
  r.timeoutMs = t.timeoutMs;
  return r;
}
