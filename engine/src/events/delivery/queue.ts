/**
 * A bounded, in-memory delivery queue for one channel (mail, webhook): one message
 * in flight, in order, retried with exponential backoff, given up after maxAttempts,
 * or at once when the server refused it for good (PermanentFailure). When the server
 * refuses who we are (LoginRefused) the queue pauses: it keeps its messages and tries
 * nothing until retryNow (the settings changed, a test message was asked for).
 * It never blocks the engine: pushing returns at once, timers are unref'd, and a
 * full queue drops its oldest waiting message rather than growing (never the one
 * being sent).
 */

export interface QueueOptions {
  maxQueued: number;
  maxAttempts: number;
  /** First retry after this; doubles each attempt up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_QUEUE_OPTIONS: QueueOptions = {
  maxQueued: 200,
  maxAttempts: 8,
  baseDelayMs: 2_000,
  maxDelayMs: 5 * 60_000,
};

/**
 * A failure no retry can change: the server refused this very message for good (an
 * SMTP 5xx to its recipient or its content, an HTTP 4xx to its body). The queue gives
 * it up at once instead of holding every message behind it through its retries.
 * Refusals of the channel's own settings (a wrong password, a wrong URL) are not
 * permanent in this sense: every message would meet them, and a corrected setting
 * retries the waiting message at once.
 */
export interface PermanentFailure extends Error {
  permanent: true;
  /** What to do about it, for the "given up" event. */
  fix: string;
}

export function isPermanent(err: unknown): err is PermanentFailure {
  return err instanceof Error && (err as Partial<PermanentFailure>).permanent === true;
}

/**
 * The server refused the channel's credentials (SMTP 535 to AUTH, 530 "authentication
 * required", a relay denied for want of a login; HTTP 401/403/407): every message would
 * meet it until the settings change, and a relay behind fail2ban bans an address that
 * keeps failing to log in. The queue pauses instead of retrying: its messages wait,
 * neither given up nor sent, until retryNow.
 */
export interface LoginRefused extends Error {
  loginRefused: true;
  /** What to change, for the owner's alert. */
  fix: string;
  /**
   * What stops the channel when it is no server's refusal, for the alert's title: "its
   * password file cannot be used" (a settings problem of this server, as a wrong password
   * is: every message would meet it until it is fixed).
   */
  cause?: string;
}

export function isLoginRefused(err: unknown): err is LoginRefused {
  return err instanceof Error && (err as Partial<LoginRefused>).loginRefused === true;
}

/**
 * The message is not to be sent any more: its channel was switched off while it
 * waited. The queue drops it with this error's message as the reason, at once and
 * without a "failing" event.
 */
export interface Cancelled extends Error {
  cancelled: true;
}

export function isCancelled(err: unknown): err is Cancelled {
  return err instanceof Error && (err as Partial<Cancelled>).cancelled === true;
}

/** Why and since when a queue is paused. */
export interface Paused {
  error: LoginRefused;
  since: number;
}

/** What the owner hears about, to record as events. */
export interface QueueHooks<T> {
  /** The first failure after a success (or at the start): the channel is failing. */
  failing(err: Error, item: T): void;
  /** The first success after failures. */
  recovered(): void;
  /** The server refused the channel's login: the queue waits for retryNow (once per pause). */
  paused?(err: LoginRefused): void;
  /** A message given up after its attempts, refused for good, or pushed out of a full queue. */
  dropped(item: T, reason: string): void;
}

export class DeliveryQueue<T> {
  private readonly items: { item: T; attempts: number }[] = [];
  private busy = false;
  private timer?: NodeJS.Timeout;
  private failing = false;
  private closed = false;
  private idle?: () => void;
  /** retryNow() came while a send was in progress. */
  private retryAtOnce = false;
  /** clear() came while a send was in progress: the channel was switched off. */
  private clearedWhileSending = false;
  private pausedBy?: Paused;
  /** An attempt has ended since the queue was made (or switched off and on). */
  private tried = false;

  constructor(
    private readonly send: (item: T) => Promise<void>,
    private readonly hooks: QueueHooks<T>,
    private readonly opts: QueueOptions = DEFAULT_QUEUE_OPTIONS,
  ) {}

  get length(): number {
    return this.items.length;
  }

  /** Why the queue waits for retryNow (the server refused the login), or undefined. */
  get paused(): Paused | undefined {
    return this.pausedBy;
  }

  /** Whether an attempt has ended since the queue was made. */
  get hasTried(): boolean {
    return this.tried;
  }

  push(item: T): void {
    if (this.closed) return;
    const full = `the queue holds at most ${this.opts.maxQueued} messages`;
    if (this.items.length >= this.opts.maxQueued) {
      // the oldest waiting one goes: the one being sent may arrive yet, and to say it
      // was given up would be untrue
      const oldest = this.busy ? 1 : 0;
      if (oldest >= this.items.length) return this.hooks.dropped(item, full);
      const [old] = this.items.splice(oldest, 1);
      this.hooks.dropped(old!.item, full);
    }
    this.items.push({ item, attempts: 0 });
    this.kick();
  }

  /**
   * Tries the head again now rather than after its backoff (up to maxDelayMs): the
   * channel's settings changed, or a test message waits behind it. A send in progress
   * that fails is retried at once instead of backing off (it may have used the old
   * settings). Such a retry does not use up one of the message's attempts: saving the
   * settings a few times while the server is still down must not give it up sooner.
   * A paused queue tries its head again (it stays paused, and its alert up, until that
   * try is answered with something else than the same refusal).
   */
  retryNow(): void {
    if (this.closed) return;
    if (this.busy) {
      this.retryAtOnce = true;
      return;
    }
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.kick(true);
  }

  /**
   * Takes out every waiting message (not the one being sent, which may arrive yet) and
   * returns them, for the owner to report: the channel was switched off. A send in
   * progress that fails is tried again at once, without a "failing" event, where it meets
   * the switch (Cancelled).
   */
  clear(): T[] {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pausedBy = undefined;
    this.failing = false;
    if (this.busy) this.retryAtOnce = this.clearedWhileSending = true;
    return this.items.splice(this.busy ? 1 : 0).map((x) => x.item);
  }

  /**
   * Stops retrying; waits up to graceMs for a send in progress, then takes out what is
   * left and returns it, for the owner to report: `unsent` never reached the server
   * (waiting, paused, or tried and failed), `sending` was still being sent when the
   * grace ran out (it may arrive yet).
   */
  async close(graceMs = 2_000): Promise<{ unsent: T[]; sending?: T }> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.busy) {
      let grace: NodeJS.Timeout | undefined;
      await new Promise<void>((resolve) => {
        this.idle = resolve;
        grace = setTimeout(resolve, graceMs); // ref'd: the engine's stop waits for it
      });
      // the send ended first: its timer would keep the process alive for the rest of the grace
      clearTimeout(grace);
    }
    const left = this.items.splice(0).map((x) => x.item);
    const sending = this.busy ? left.shift() : undefined;
    return sending === undefined ? { unsent: left } : { unsent: left, sending };
  }

  /** `extra`: asked for by retryNow, not counted among the message's attempts. */
  private kick(extra = false): void {
    if (this.busy || this.timer || this.closed || this.items.length === 0) return;
    if (this.pausedBy && !extra) return;
    this.busy = true;
    void this.attempt(this.items[0]!, extra);
  }

  private async attempt(head: { item: T; attempts: number }, extra: boolean): Promise<void> {
    const counted = !extra || head.attempts === 0;
    if (counted) head.attempts++;
    let error: Error | undefined;
    try {
      await this.send(head.item);
    } catch (err) {
      error = err instanceof Error ? err : new Error(String(err));
    }
    this.busy = false;
    const atOnce = this.retryAtOnce;
    const cleared = this.clearedWhileSending;
    this.retryAtOnce = this.clearedWhileSending = false;
    this.idle?.();
    if (this.items[0] !== head) return; // emptied by close()
    this.tried = true;
    const wasPaused = this.pausedBy !== undefined;
    if (!error || !isLoginRefused(error)) this.pausedBy = undefined;
    if (!error) {
      this.items.shift();
      if (this.failing || wasPaused) {
        this.failing = false;
        this.hooks.recovered();
      }
      return this.kick();
    }
    if (isCancelled(error)) {
      this.items.shift();
      this.hooks.dropped(head.item, error.message);
      return this.kick();
    }
    if (isPermanent(error)) {
      // this message's fault, not the channel's: no "failing, retrying" event for it
      this.items.shift();
      this.hooks.dropped(
        head.item,
        `the server refused it for good, so it is not retried: ${error.message}; ${error.fix}`,
      );
      return this.kick();
    }
    if (isLoginRefused(error)) {
      if (counted) head.attempts--; // not this message's fault: none of its attempts used
      if (atOnce) return this.kick(true); // the settings changed while it was being tried
      if (!this.pausedBy) {
        this.pausedBy = { error, since: Date.now() };
        this.hooks.paused?.(error);
      } else this.pausedBy.error = error;
      return;
    }
    // switched off while it was being sent: tried again at once, where it meets the
    // switch (Cancelled); a "cannot be delivered" now would be of a channel just
    // switched off, and another follows anyway if it was switched on again meanwhile
    if (cleared && !this.closed) return this.kick(true);
    if (!this.failing) {
      this.failing = true;
      this.hooks.failing(error, head.item);
    }
    if (head.attempts >= this.opts.maxAttempts) {
      this.items.shift();
      this.hooks.dropped(head.item, `${head.attempts} attempts failed; the last: ${error.message}`);
      return this.kick();
    }
    if (this.closed) return;
    if (atOnce) return this.kick(true);
    const delay = Math.min(this.opts.maxDelayMs, this.opts.baseDelayMs * 2 ** (head.attempts - 1));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.kick();
    }, delay);
    this.timer.unref();
  }
}
