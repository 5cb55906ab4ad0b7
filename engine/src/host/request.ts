/**
 * One NVMe command as the host library carries it: the SQE fields to send, the data to
 * move, and (after completion) the result. This is the callback-level API: a caller
 * that wants no per-I/O allocation (the benchmark) keeps a pool of requests, calls
 * reset() and fills them again; the promise helpers in controller.ts/namespace.ts wrap
 * the same object.
 */
import type { HostError } from './errors.js';

/** Called exactly once per submission, with the request itself (no closure needed). A
 * throw in it is reported as a process warning (callback.ts), never thrown on. */
export type RequestDone = (req: NvmeRequest) => void;

/** Timeout value meaning "never time out" (the Async Event Request waits indefinitely). */
export const NO_TIMEOUT = 0;

export class NvmeRequest {
  // ---- what to send (SQE fields; absent ones are zero) ----
  opcode = 0;
  /** Fabrics command type (byte 4, where other commands hold nsid); -1 = not fabrics. */
  fctype = -1;
  nsid = 0;
  cdw2 = 0;
  cdw3 = 0;
  cdw10 = 0;
  cdw11 = 0;
  cdw12 = 0;
  cdw13 = 0;
  cdw14 = 0;
  cdw15 = 0;
  /** Host-to-controller data (write, compare, DSM ranges, Connect data). Caller keeps it
   * unchanged until onDone: it goes to the socket without a copy. */
  dataOut: Buffer | null = null;
  /** Controller-to-host bytes expected (read, identify, log page); 0 = none. */
  readLength = 0;
  /** Optional destination for read data; otherwise `data` is a Buffer of the read's own. */
  into: Buffer | null = null;
  /** Per-command timeout in ms; -1 = the queue's default, NO_TIMEOUT = never. */
  timeoutMs = -1;
  /**
   * When the command times out (performance.now() ms), counted from its submission, or 0:
   * the queue counts timeoutMs from when it sends it. NvmeController.submitIo() sets it,
   * so the time a command waits (held while the controller reconnects, or for a free
   * slot on its queue) counts against its timeout; the queue clears it once the command
   * is sent, so a command sent again gets its whole timeout again.
   */
  deadline = 0;
  /** Completion callback; see RequestDone. */
  onDone: RequestDone = noop;
  /** Free slot for the submitter (a promise's resolve, a benchmark's context). */
  context: unknown = null;

  // ---- the result, valid in onDone ----
  /** 15-bit NVMe status (status.ts); 0 = success. Meaningless when `error` is set. */
  status = 0;
  /** CQE dw0/dw1 (command specific: Connect's cntlid, Property Get value, features). */
  dw0 = 0;
  dw1 = 0;
  /**
   * Read data: `into` when given (the data is copied there once, from the queue's
   * receive buffer); else a Buffer of the read's own, which the caller may keep and
   * write (a copy out of the receive buffer, or the one the pieces were gathered into).
   */
  data: Buffer | null = null;
  /** Set when the command ended without a completion from the controller. */
  error: HostError | null = null;

  /** Clear every field for reuse (onDone and context are kept). */
  reset(): this {
    this.opcode = 0;
    this.fctype = -1;
    this.nsid = 0;
    this.cdw2 = this.cdw3 = 0;
    this.cdw10 = this.cdw11 = this.cdw12 = this.cdw13 = this.cdw14 = this.cdw15 = 0;
    this.dataOut = null;
    this.readLength = 0;
    this.into = null;
    this.timeoutMs = -1;
    this.deadline = 0;
    this.status = this.dw0 = this.dw1 = 0;
    this.data = null;
    this.error = null;
    return this;
  }

  /** True for fabrics commands (Connect, Property Get/Set, ...). */
  get isFabrics(): boolean {
    return this.fctype >= 0;
  }

  /** Bytes this command moves in either direction. */
  get transferLength(): number {
    return this.dataOut ? this.dataOut.length : this.readLength;
  }
}

function noop(): void {}
