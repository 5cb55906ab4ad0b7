/**
 * An in-process loop transport: the "wire" is a method call. It does what a real
 * transport does around the core (parse, gather host data, exec, deliver the
 * completion, enforce the queue depth granted at Connect, report closure) without
 * sockets, so tests and tools can drive the core with hand-built SQEs.
 */
import type { CoreQueue, CoreTarget, PortInfo, TransportQueue } from '../core/seam.js';

export interface LoopCompletion {
  /** 15-bit status as in status.ts (SCT << 8 | SC | DNR | MORE). */
  readonly status: number;
  readonly dw0: number;
  readonly dw1: number;
  /** Controller-to-host data (reads), exactly the parsed length. */
  readonly data?: Buffer;
}

export interface LoopOptions {
  port?: PortInfo;
  peer?: string;
}

export const DEFAULT_LOOP_PORT: PortInfo = {
  portId: 1,
  trtype: 'loop',
  adrfam: 'ipv4',
  traddr: '127.0.0.1',
  trsvcid: '4420',
};

export class LoopQueue implements TransportQueue {
  readonly port: PortInfo;
  readonly peer: string;
  /** Queue depth granted at Connect (0 before). */
  queueSize = 0;
  /** Commands parsed and not yet completed. */
  outstanding = 0;
  /** Why the core closed this queue (or the host disconnected); null while open. */
  closedReason: string | null = null;
  /** Completions after the first one for a command: must stay 0. */
  doubleCompletions = 0;
  private readonly core: CoreQueue;

  constructor(target: CoreTarget, opts: LoopOptions = {}) {
    this.port = opts.port ?? DEFAULT_LOOP_PORT;
    this.peer = opts.peer ?? 'loop';
    this.core = target.openQueue(this);
  }

  get isClosed(): boolean {
    return this.closedReason !== null;
  }

  setQueueSize(entries: number): void {
    this.queueSize = entries;
  }

  /** The core tears the connection down; like a socket, the core hears about it afterwards. */
  close(reason: string): void {
    if (this.closedReason !== null) return;
    this.closedReason = reason;
    queueMicrotask(() => this.core.closed());
  }

  /** The host side drops the connection. */
  disconnect(): void {
    this.close('host disconnected');
  }

  /**
   * Submits one command. `data` is the host-to-controller payload (writes, Connect);
   * the SGL length defaults to data's length, else the SQE's own SGL length field.
   * `beforeData` runs between the parse and the execution, where a TCP transport waits
   * for data sent by R2T (what may change meanwhile).
   */
  submit(
    sqe: Buffer,
    data?: Buffer | null,
    sglLength?: number,
    beforeData?: () => void,
  ): Promise<LoopCompletion> {
    if (this.closedReason !== null)
      return Promise.reject(new Error(`queue closed: ${this.closedReason}`));
    if (this.queueSize > 0 && this.outstanding >= this.queueSize) {
      return Promise.reject(new Error(`queue full (${this.queueSize} outstanding)`));
    }
    const len = sglLength ?? data?.length ?? sqe.readUInt32LE(32);
    // The SQE is valid only during parse() (seam): the copy parse saw is poisoned after
    // it, as the TCP transport's next read overwrites it, so a core that reads it later
    // fails here.
    const seen = Buffer.from(sqe);
    const r = this.core.parse(seen, len);
    seen.fill(0xa5);
    if (r.kind === 'error') return Promise.resolve({ status: r.status, dw0: r.dw0 ?? 0, dw1: 0 });
    if (r.dir === 'h2c' && (!data || data.length < r.length)) {
      return Promise.reject(
        new Error(`command needs ${r.length} bytes of data, got ${data?.length ?? 0}`),
      );
    }
    this.outstanding++;
    beforeData?.();
    return new Promise((resolve) => {
      let completed = false;
      r.exec(
        r.dir === 'h2c' ? data!.subarray(0, r.length) : null,
        (status, dw0 = 0, dw1 = 0, readData) => {
          if (completed) {
            this.doubleCompletions++;
            return;
          }
          completed = true;
          this.outstanding--;
          resolve({ status, dw0, dw1, ...(readData ? { data: readData } : {}) });
        },
      );
    });
  }
}
