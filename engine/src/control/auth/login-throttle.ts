/**
 * Brute-force brakes for the console login (and the first-run setup token), per
 * client (clientBucket: all of loopback is one client, an IPv6 client its /64):
 * - a lockout after `maxFailures` consecutive failures, for `lockoutMs`, doubling with
 *   each further lockout up to `maxLockoutMs`; a success resets it. Attempts still
 *   being checked count as failures until they succeed, so a burst of requests sent
 *   at once cannot have more passwords checked than a lockout allows;
 * - a rate limit on attempts of any outcome, which bounds the scrypt work one client
 *   can ask for;
 * - a rate limit on all attempts together, which bounds guessing from many addresses.
 * State is in memory; a client quiet for a day is forgotten.
 */
import { clientBucket } from '../http-request.js';

export interface ThrottleLimits {
  /** Consecutive failures that lock the address (default 5). */
  maxFailures: number;
  /** First lockout (default 60 s); each further one doubles it. */
  lockoutMs: number;
  /** Longest lockout (default 1 h). */
  maxLockoutMs: number;
  /** Attempts allowed per client per minute, whatever their outcome (default 30). */
  attemptsPerMinute: number;
  /** Attempts allowed per minute from all clients together (default 120). */
  totalAttemptsPerMinute: number;
}

export const DEFAULT_THROTTLE_LIMITS: ThrottleLimits = {
  maxFailures: 5,
  lockoutMs: 60_000,
  maxLockoutMs: 3_600_000,
  attemptsPerMinute: 30,
  totalAttemptsPerMinute: 120,
};

const FORGET_AFTER_MS = 24 * 3_600_000;
const MAX_TRACKED = 10_000;

interface AddressState {
  failures: number;
  lockouts: number;
  lockedUntil: number;
  /** Start times of recent attempts, oldest first (at most attemptsPerMinute). */
  attempts: number[];
  /** Attempts allowed and not yet settled (their password is being checked). */
  pending: number;
  lastSeen: number;
}

export type ThrottleVerdict =
  | { allowed: true }
  | {
      allowed: false;
      reason: 'locked' | 'rate' | 'busy' | 'total';
      retryAfterMs: number;
      message: string;
    };

export class LoginThrottle {
  private readonly byAddress = new Map<string, AddressState>();
  /** Start times of recent attempts from all clients, oldest first. */
  private readonly attempts: number[] = [];

  constructor(readonly limits: ThrottleLimits = DEFAULT_THROTTLE_LIMITS) {}

  /**
   * Whether `address` may try now. An allowed attempt counts against the rates, and
   * as a failure until settle(): the caller settles every allowed attempt, whatever
   * its outcome, after fail() or succeed().
   */
  attempt(address: string, now = Date.now()): ThrottleVerdict {
    const { label } = clientBucket(address);
    const s = this.state(address, now);
    const refuse = (reason: 'locked' | 'rate' | 'busy' | 'total', ms: number, what: string) =>
      ({
        allowed: false,
        reason,
        retryAfterMs: ms,
        message: `${what}; try again in ${seconds(ms)} s.`,
      }) as const;
    if (s.lockedUntil > now)
      return refuse('locked', s.lockedUntil - now, `Too many failed logins from ${label}`);
    if (s.failures + s.pending >= this.limits.maxFailures)
      return refuse('busy', 1000, `Too many sign-ins from ${label} are being checked at once`);
    dropOld(s.attempts, now);
    if (s.attempts.length >= this.limits.attemptsPerMinute)
      return refuse('rate', s.attempts[0]! + 60_000 - now, `Too many login attempts from ${label}`);
    dropOld(this.attempts, now);
    if (this.attempts.length >= this.limits.totalAttemptsPerMinute)
      return refuse(
        'total',
        this.attempts[0]! + 60_000 - now,
        'Too many login attempts on this engine from many addresses',
      );
    s.attempts.push(now);
    this.attempts.push(now);
    s.pending++;
    return { allowed: true };
  }

  /** An allowed attempt has its outcome (fail or succeed was called, or it never got that far). */
  settle(address: string): void {
    const s = this.byAddress.get(clientBucket(address).key);
    if (s && s.pending > 0) s.pending--;
  }

  /** Records a failure; returns the lockout it started in ms, or 0. */
  fail(address: string, now = Date.now()): number {
    const s = this.state(address, now);
    s.failures++;
    if (s.failures < this.limits.maxFailures) return 0;
    const ms = Math.min(this.limits.lockoutMs * 2 ** s.lockouts, this.limits.maxLockoutMs);
    s.failures = 0;
    s.lockouts++;
    s.lockedUntil = now + ms;
    return ms;
  }

  succeed(address: string): void {
    const s = this.byAddress.get(clientBucket(address).key);
    if (!s) return;
    s.failures = 0;
    s.lockouts = 0;
    s.lockedUntil = 0;
  }

  private state(address: string, now: number): AddressState {
    const { key } = clientBucket(address);
    let s = this.byAddress.get(key);
    if (!s) {
      if (this.byAddress.size >= MAX_TRACKED) this.forgetQuiet(now);
      s = { failures: 0, lockouts: 0, lockedUntil: 0, attempts: [], pending: 0, lastSeen: now };
      this.byAddress.set(key, s);
    }
    s.lastSeen = now;
    return s;
  }

  private forgetQuiet(now: number): void {
    for (const [addr, s] of this.byAddress) {
      if (s.lockedUntil <= now && s.pending === 0 && now - s.lastSeen > FORGET_AFTER_MS)
        this.byAddress.delete(addr);
    }
    // Still full (an address flood): drop the oldest unlocked entries rather than grow.
    for (const [addr, s] of this.byAddress) {
      if (this.byAddress.size < MAX_TRACKED) break;
      if (s.lockedUntil <= now && s.pending === 0) this.byAddress.delete(addr);
    }
  }
}

/** Drops the start times older than a minute. */
function dropOld(times: number[], now: number): void {
  let n = 0;
  while (n < times.length && times[n]! <= now - 60_000) n++;
  if (n > 0) times.splice(0, n);
}

function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}
