/**
 * The I/O commands a controller holds instead of sending them now (NvmeController): one
 * waiting out a status's retry delay (status-retry.ts); one whose association was lost
 * under it, to go out again on the next one; and one submitted while the controller is
 * reconnecting, never sent yet, as Linux requeues I/O until the controller is live again.
 * The last two wait for the controller to be live (release()), each at most its own bound
 * (the command's timeout). Held here, they end with the controller: close() fails them at
 * once, and so does giving up reconnecting or fastIoFailMs running out (failWaiting()).
 */
import { callDone } from './callback.js';
import type { HostError } from './errors.js';
import { MAX_TIMER_MS } from './queue.js';
import type { NvmeRequest } from './request.js';

/** One command held, as the controller's callbacks see it. */
export interface Held {
  readonly queue: number;
  /** It was sent before (a retry after a status, or after a lost association), so it is
   * "not sent again"; else it was never sent at all. */
  readonly again: boolean;
  /** Its bound while it waits for the controller to be live, ms (Infinity: none): what
   * is left of its timeout. */
  readonly boundMs: number;
  /** The command's timeout, ms (Infinity: none). */
  readonly timeoutMs: number;
}

interface Entry extends Held {
  /** Its status's delay, while that runs; null: it waits for the controller to be live. */
  delay: NodeJS.Timeout | null;
  /** Its bound, while it waits for the controller to be live. */
  bound: NodeJS.Timeout | null;
}

export class Resends {
  private readonly held = new Map<NvmeRequest, Entry>();

  constructor(
    /** Sends a command on an I/O queue (held again there while the controller reconnects). */
    private readonly send: (req: NvmeRequest, queue: number, again: boolean) => void,
    /** What a command whose bound ran out before the controller was live ends with. */
    private readonly expired: (h: Held) => HostError,
  ) {}

  /** Commands held now. */
  get size(): number {
    return this.held.size;
  }

  /**
   * Send `req` (sent before) on `queue` once `delayMs` have passed, whatever the
   * controller's state then: a status's delay is no reason to hold a command for a
   * reconnect beyond what send() does with it.
   */
  after(req: NvmeRequest, delayMs: number, queue: number): void {
    const e: Entry = {
      queue,
      again: true,
      boundMs: Infinity,
      timeoutMs: Infinity,
      delay: null,
      bound: null,
    };
    this.held.set(req, e);
    e.delay = setTimeout(() => this.sendOne(req, e), delayMs);
  }

  /**
   * Send `req` on `queue` once the controller is live again (release()), or end it with
   * expired() once `boundMs` have passed (Infinity, or beyond Node's timers: no bound):
   * what is left of its timeout (`timeoutMs`). `again`: it comes back after a failure
   * (a lost association); it was sent before unless it still has the deadline
   * submitIo() gave it, which the queue clears once it sends it (NvmeRequest.deadline):
   * one still waiting for a slot when its queue failed comes back never sent. (A
   * command with no timeout has no deadline to tell by: taken as sent.)
   */
  untilLive(
    req: NvmeRequest,
    queue: number,
    again: boolean,
    boundMs: number,
    timeoutMs: number,
  ): void {
    const sent = again && req.deadline === 0;
    const e: Entry = { queue, again: sent, boundMs, timeoutMs, delay: null, bound: null };
    this.held.set(req, e);
    if (boundMs <= MAX_TIMER_MS) {
      e.bound = setTimeout(() => this.end(req, this.expired(e)), boundMs);
    }
  }

  /** The controller is live again: send every command waiting for that. */
  release(): void {
    for (const [req, e] of [...this.held]) if (!e.delay) this.sendOne(req, e);
  }

  /** End every command held with what `err` gives for it, not sent (again). */
  failAll(err: (h: Held) => HostError): void {
    for (const [req, e] of [...this.held]) this.end(req, err(e));
  }

  /** End every command waiting for the controller to be live (not those in a delay). */
  failWaiting(err: (h: Held) => HostError): void {
    for (const [req, e] of [...this.held]) if (!e.delay) this.end(req, err(e));
  }

  private end(req: NvmeRequest, err: HostError): void {
    const e = this.held.get(req);
    if (!e) return;
    this.clear(req, e);
    req.error = err.forCommand(false);
    callDone(req);
  }

  private sendOne(req: NvmeRequest, e: Entry): void {
    this.clear(req, e);
    this.send(req, e.queue, e.again);
  }

  private clear(req: NvmeRequest, e: Entry): void {
    if (e.delay) clearTimeout(e.delay);
    if (e.bound) clearTimeout(e.bound);
    this.held.delete(req);
  }
}
