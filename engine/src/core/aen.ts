/**
 * Asynchronous events of one controller, as nvmet keeps them: outstanding AER
 * commands, events waiting for an AER, the host's enable mask (Set Features 0x0B)
 * and a per-type mask set when an event is sent and cleared when the host reads the
 * matching log page with RAE=0, so one unread change produces one event.
 */
import type { Completion } from './seam.js';
import { DNR, SC } from '../protocol/status.js';

export class AsyncEvents {
  /** Outstanding Asynchronous Event Request commands, oldest first. */
  private readonly pending: Completion[] = [];
  /** Event dw0 values waiting for an AER. */
  private readonly queued: number[] = [];
  /** Event bits sent and not yet acknowledged by a log read (RAE=0). */
  private masked = 0;

  /**
   * @param limit AERL + 1: how many AERs may be outstanding.
   * @param enabled initial AEN configuration (nvmet enables the optional notices by default).
   */
  constructor(
    readonly limit: number,
    public enabled: number,
  ) {}

  get outstanding(): number {
    return this.pending.length;
  }

  /** An AER arrived (parse checked the limit; checked again in case two raced). */
  submit(done: Completion): void {
    if (this.pending.length >= this.limit) return done(SC.AER_LIMIT | DNR);
    this.pending.push(done);
    this.drain();
  }

  /** Raise event `bit` (OAES/AEN bit number) with completion dw0; dropped if disabled or masked. */
  notify(bit: number, dw0: number): void {
    const m = 2 ** bit; // bit 31 does not fit a signed 32-bit shift
    if (!(Math.floor(this.enabled / m) % 2)) return;
    if (Math.floor(this.masked / m) % 2) return;
    this.masked += m;
    this.queued.push(dw0);
    this.drain();
  }

  /** The host read the log page for `bit` with RAE=0: events of that type may flow again. */
  unmask(bit: number): void {
    const m = 2 ** bit;
    if (Math.floor(this.masked / m) % 2) this.masked -= m;
  }

  /** Controller teardown: nvmet fails outstanding AERs with Internal Error + DNR (facts §9.6). */
  failAll(): void {
    const cmds = this.pending.splice(0);
    this.queued.length = 0;
    for (const done of cmds) done(SC.INTERNAL | DNR);
  }

  private drain(): void {
    while (this.pending.length > 0 && this.queued.length > 0) {
      const done = this.pending.shift()!;
      done(SC.SUCCESS, this.queued.shift()!);
    }
  }
}
