/**
 * The host's side of the keep-alive timer (facts §8): a Keep Alive every KATO/2 on the
 * admin queue, in a slot the queue reserves for it, so slow admin commands filling the
 * queue never hold it back while the controller's timer runs. A Keep Alive the
 * controller does not answer within KATO fails the admin queue (the queue's timeout),
 * and with it the association.
 */
import { fillKeepAlive } from './commands.js';
import type { NvmeTcpQueue } from './queue.js';
import { NvmeRequest } from './request.js';

export class KeepAlive {
  private timer: NodeJS.Timeout | null = null;
  private readonly req = new NvmeRequest();
  /** A Keep Alive is in flight: the next tick waits for it (one reserved slot). */
  private busy = false;

  constructor(private readonly admin: NvmeTcpQueue) {}

  /** (Re)start with this KATO in ms, as the controller now has it; 0 stops. */
  start(kato: number): void {
    this.stop();
    if (kato <= 0) return;
    this.timer = setInterval(() => this.send(kato), Math.max(1, Math.floor(kato / 2)));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private send(kato: number): void {
    if (this.busy || this.admin.state !== 'live') return;
    this.busy = true;
    fillKeepAlive(this.req.reset()).timeoutMs = kato;
    this.req.onDone = () => (this.busy = false); // failures surface as a queue failure
    this.admin.submitReserved(this.req);
  }
}
