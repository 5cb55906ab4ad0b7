/**
 * NvmeNamespace: block I/O on one namespace of one controller, with promises, in logical
 * blocks of the namespace's format (the I/O methods are NamespaceIo's). A command the
 * controller completes with a status without DNR is sent again on the same controller,
 * after the status's retry delay (a short backoff for a path status), a few times
 * (status-retry.ts) before its caller sees it; a delay longer than what is left of the
 * command's timeout (the delays it waited out add up against it) is not waited out, and
 * the controller's close() ends a command waiting one at once.
 */
import type { NamespaceIdentity, NamespaceIds } from './admin.js';
import { NvmeStatusError } from './errors.js';
import { NamespaceIo } from './namespace-io.js';
import { NO_TIMEOUT, type NvmeRequest } from './request.js';
import {
  retriedNote,
  retryDelayRefusal,
  statusRetryDelayMs,
  statusRetryable,
} from './status-retry.js';

/** What a namespace needs from its controller (NvmeController implements it). */
export interface IoController {
  submitIo(req: NvmeRequest, queue?: number): void;
  /** submitIo() after `delayMs`; a close() meanwhile ends the command at once. */
  submitIoAfter(req: NvmeRequest, delayMs: number, queue?: number): void;
  readonly maxTransferBytes: number;
  /** CRDT1..3, 100 ms units (status-retry.ts). */
  readonly crdt: readonly number[];
  /** Default I/O command timeout, ms (0 or Infinity: none). */
  readonly ioTimeoutMs: number;
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

  protected submit(req: NvmeRequest, what: string, _mutating: boolean, queue?: number) {
    return new Promise<NvmeRequest>((resolve, reject) => {
      let retries = 0;
      // The delays waited out add up against the command's timeout (status-retry.ts).
      const budget = this.timeoutOf(req);
      let delayed = 0;
      req.onDone = (r) => {
        if (r.error) return reject(r.error);
        if (r.status === 0) return resolve(r);
        const tried = what + retriedNote(retries);
        if (!statusRetryable(r.status, retries)) {
          return reject(new NvmeStatusError(r.status, tried, r.dw0));
        }
        // The same controller, so no reordering against another path's writes: it
        // answered, so nothing of this command is left in flight there. A path status
        // waits a backoff (status-retry.ts).
        const ms = statusRetryDelayMs(r.status, this.ctrl.crdt, retries++);
        const who = 'the controller';
        const why = retryDelayRefusal(who, ms, budget - delayed, 'ioTimeoutMs', budget);
        if (why) {
          return reject(new NvmeStatusError(r.status, `${tried} (not sent again: ${why})`, r.dw0));
        }
        delayed += ms;
        this.ctrl.submitIoAfter(req, ms, queue);
      };
      this.ctrl.submitIo(req, queue);
    });
  }

  /** The command's timeout, ms: its own, else the controller's; Infinity for none. */
  private timeoutOf(req: NvmeRequest): number {
    const t = req.timeoutMs < 0 ? this.ctrl.ioTimeoutMs : req.timeoutMs;
    return t === NO_TIMEOUT ? Infinity : t;
  }
}
