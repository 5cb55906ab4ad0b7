/**
 * Brute-force brakes for the console login (and the first-run setup token), per
 * client address:
 * - a lockout after `maxFailures` consecutive failures, for `lockoutMs`, doubling with
 *   each further lockout up to `maxLockoutMs`; a success resets it;
 * - a rate limit on attempts of any outcome, which bounds the scrypt work one address
 *   can ask for.
 * State is in memory; an address quiet for a day is forgotten.
 */
export interface ThrottleLimits {
  /** Consecutive failures that lock the address (default 5). */
  maxFailures: number;
  /** First lockout (default 60 s); each further one doubles it. */
  lockoutMs: number;
  /** Longest lockout (default 1 h). */
  maxLockoutMs: number;
  /** Attempts allowed per address per minute, whatever their outcome (default 30). */
  attemptsPerMinute: number;
}

export const DEFAULT_THROTTLE_LIMITS: ThrottleLimits = {
  maxFailures: 5,
  lockoutMs: 60_000,
  maxLockoutMs: 3_600_000,
  attemptsPerMinute: 30,
};

const FORGET_AFTER_MS = 24 * 3_600_000;
const MAX_TRACKED = 10_000;

interface AddressState {
  failures: number;
  lockouts: number;
  lockedUntil: number;
  /** Start times of recent attempts, oldest first (at most attemptsPerMinute). */
  attempts: number[];
  lastSeen: number;
}

export type ThrottleVerdict =
  | { allowed: true }
  | { allowed: false; reason: 'locked' | 'rate'; retryAfterMs: number; message: string };

export class LoginThrottle {
  private readonly byAddress = new Map<string, AddressState>();

  constructor(readonly limits: ThrottleLimits = DEFAULT_THROTTLE_LIMITS) {}

  /** Whether `address` may try now; an allowed attempt is counted against the rate. */
  attempt(address: string, now = Date.now()): ThrottleVerdict {
    const s = this.state(address, now);
    if (s.lockedUntil > now) {
      const retryAfterMs = s.lockedUntil - now;
      return {
        allowed: false,
        reason: 'locked',
        retryAfterMs,
        message: `Too many failed logins from ${address}; try again in ${seconds(retryAfterMs)} s.`,
      };
    }
    while (s.attempts.length && s.attempts[0]! <= now - 60_000) s.attempts.shift();
    if (s.attempts.length >= this.limits.attemptsPerMinute) {
      const retryAfterMs = s.attempts[0]! + 60_000 - now;
      return {
        allowed: false,
        reason: 'rate',
        retryAfterMs,
        message: `Too many login attempts from ${address}; try again in ${seconds(retryAfterMs)} s.`,
      };
    }
    s.attempts.push(now);
    return { allowed: true };
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
    const s = this.byAddress.get(address);
    if (!s) return;
    s.failures = 0;
    s.lockouts = 0;
    s.lockedUntil = 0;
  }

  private state(address: string, now: number): AddressState {
    let s = this.byAddress.get(address);
    if (!s) {
      if (this.byAddress.size >= MAX_TRACKED) this.forgetQuiet(now);
      s = { failures: 0, lockouts: 0, lockedUntil: 0, attempts: [], lastSeen: now };
      this.byAddress.set(address, s);
    }
    s.lastSeen = now;
    return s;
  }

  private forgetQuiet(now: number): void {
    for (const [addr, s] of this.byAddress) {
      if (s.lockedUntil <= now && now - s.lastSeen > FORGET_AFTER_MS) this.byAddress.delete(addr);
    }
    // Still full (an address flood): drop the oldest unlocked entries rather than grow.
    for (const [addr, s] of this.byAddress) {
      if (this.byAddress.size < MAX_TRACKED) break;
      if (s.lockedUntil <= now) this.byAddress.delete(addr);
    }
  }
}

function seconds(ms: number): number {
  return Math.max(1, Math.ceil(ms / 1000));
}
