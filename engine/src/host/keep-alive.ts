/**
 * The host's side of the keep-alive timer (facts §8): a Keep Alive every KATO/2 on the
 * admin queue, in a slot the queue reserves for it, so slow admin commands filling the
 * queue never hold it back while the controller's timer runs. A Keep Alive the
 * controller does not answer within KATO fails the admin queue (the queue's timeout),
 * and with it the association. So does one answered with an error status: the
 * controller did not take it as a Keep Alive, so its timer may not have been restarted
 * and it could end the association at KATO under the commands in flight. Linux logs it
 * and sends no more Keep Alives (nvme_keep_alive_end_io), which lets the target end the
 * association and starts error recovery when it does; the host starts it at once.
 */
import { statusName } from '../protocol/status.js';
import { fillKeepAlive } from './commands.js';
import { HostError } from './errors.js';
import type { NvmeTcpQueue } from './queue.js';
import { NvmeRequest } from './request.js';

export class KeepAlive {
  private timer: NodeJS.Timeout | null = null;
  private readonly req = new NvmeRequest();
  /** A Keep Alive is in flight: the next tick waits for it (one reserved slot). */
  private busy = false;
  /** A Keep Alive was answered with success on this association (whenAnswered). */
  private answered = false;
  private onAnswered: (() => void) | null = null;

  constructor(
    private readonly admin: NvmeTcpQueue,
    /** host:port, for the messages. */
    private readonly where: string,
  ) {}

  /** (Re)start with this KATO in ms, as the controller now has it; 0 stops. */
  start(kato: number): void {
    this.stop();
    if (kato <= 0) return;
    this.timer = setInterval(() => this.send(kato), Math.max(1, Math.floor(kato / 2)));
    this.timer.unref();
  }

  /**
   * Calls `fn` once a Keep Alive has been answered with success (now, if one was): the
   * controller keeps this association, rather than taking the connection and then
   * refusing (or never answering) its Keep Alives. One waiter; a later call replaces it.
   */
  whenAnswered(fn: () => void): void {
    if (this.answered) return fn();
    this.onAnswered = fn;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private send(kato: number): void {
    if (this.busy || this.admin.state !== 'live') return;
    this.busy = true;
    fillKeepAlive(this.req.reset()).timeoutMs = kato;
    // A failure without a status surfaces as a queue failure (timeout, lost connection).
    this.req.onDone = (r) => {
      this.busy = false;
      if (!r.error && r.status !== 0 && this.timer) this.refused(r.status, kato);
      else if (!r.error && r.status === 0) this.noteAnswered();
    };
    this.admin.submitReserved(this.req);
  }

  /**
   * A Keep Alive on this association was answered with success: this one's, or one the
   * caller sent (NvmeController.submit()), which proves as much.
   */
  noteAnswered(): void {
    if (this.answered) return;
    this.answered = true;
    const fn = this.onAnswered;
    this.onAnswered = null;
    fn?.();
  }

  /** Answered with `status`: end the association (error recovery), saying why. */
  private refused(status: number, kato: number): void {
    this.stop();
    const why =
      `${this.where}: the controller answered Keep Alive with status ${statusName(status)} ` +
      `(0x${status.toString(16)}): its keep-alive timer may not have been restarted, so it ` +
      `could end this association without warning once KATO (${kato} ms) runs out; the ` +
      `host ends it now (error recovery). If this happens on every association, check the ` +
      `target's log for why it refuses Keep Alive`;
    this.admin.fail(new HostError('transport', why));
  }
}
