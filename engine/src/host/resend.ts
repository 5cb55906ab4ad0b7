/**
 * The I/O commands a controller holds to send again (NvmeController.submitIoAfter): one
 * waiting out a status's retry delay (status-retry.ts), and one whose association was lost
 * under it, to go out on the next one once the controller is live again. Held here, they
 * end with the controller: close() fails them at once, and so does giving up reconnecting,
 * rather than when a delay runs out or never.
 */
import { callDone } from './callback.js';
import type { HostError } from './errors.js';
import type { NvmeRequest } from './request.js';

interface Held {
  readonly queue: number;
  /** Its delay, while it runs. */
  timer: NodeJS.Timeout | null;
}

export class Resends {
  private readonly held = new Map<NvmeRequest, Held>();

  constructor(
    /** Sends a command on an I/O queue (submitIo; refused there when not live). */
    private readonly send: (req: NvmeRequest, queue: number) => void,
  ) {}

  /**
   * Send `req` on `queue` once `delayMs` have passed, or, with no delay, once the
   * controller is live again (release). A delay that ends while the controller is not
   * live sends it all the same, so it is refused as not connected: a status's delay is
   * no reason to hold a command for a reconnect (its caller gets a definite answer).
   */
  hold(req: NvmeRequest, delayMs: number, queue: number): void {
    const h: Held = { queue, timer: null };
    this.held.set(req, h);
    if (delayMs > 0) h.timer = setTimeout(() => this.sendOne(req, h), delayMs);
  }

  /** The controller is live again: send every command waiting for that. */
  release(): void {
    for (const [req, h] of [...this.held]) if (!h.timer) this.sendOne(req, h);
  }

  /** End every command held with `err`, not sent again. */
  failAll(err: HostError): void {
    for (const [req, h] of [...this.held]) {
      if (h.timer) clearTimeout(h.timer);
      this.held.delete(req);
      req.error = err.forCommand(false);
      callDone(req);
    }
  }

  private sendOne(req: NvmeRequest, h: Held): void {
    this.held.delete(req);
    this.send(req, h.queue);
  }
}
