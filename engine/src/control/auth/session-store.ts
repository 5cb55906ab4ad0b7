/**
 * Console sessions, kept in memory only: an engine restart signs everyone out, which
 * is the safe default for an appliance. The cookie carries a random 256-bit id; the
 * store keys sessions by the SHA-256 of it, so nothing in memory is a usable cookie.
 */
import { createHash, randomBytes } from 'node:crypto';

export interface SessionLimits {
  /** A session unused for this long ends (default 30 min). */
  idleMs: number;
  /** A session ends this long after sign-in, used or not (default 12 h). */
  absoluteMs: number;
}

export const DEFAULT_SESSION_LIMITS: SessionLimits = {
  idleMs: 30 * 60_000,
  absoluteMs: 12 * 3_600_000,
};

/** More live sessions than this: the least recently used one is dropped. */
const MAX_SESSIONS = 256;

export interface Session {
  /** SHA-256 of the cookie value (hex); also how WebSockets name their session. */
  readonly key: string;
  readonly peer: string;
  readonly createdAt: number;
  lastUsedAt: number;
  /** Salt of the password hash it was opened with: a new password ends the session. */
  readonly credential: string;
}

export class SessionStore {
  private readonly sessions = new Map<string, Session>();

  /**
   * @param onEnded told the keys of sessions this store ended, whichever call found
   *   them over (a lookup that met an expired one, eviction, revoke, sweep), so the
   *   console can close their WebSockets at once: a lookup that quietly dropped a
   *   session would leave its sockets receiving events after sign-out or expiry.
   */
  constructor(
    readonly limits: SessionLimits = DEFAULT_SESSION_LIMITS,
    private readonly onEnded: (keys: string[]) => void = () => {},
  ) {}

  /** Opens a session; returns the cookie value (shown once, never stored). */
  create(peer: string, credential: string, now = Date.now()): { id: string; session: Session } {
    const id = randomBytes(32).toString('base64url');
    const session: Session = {
      key: keyOf(id),
      peer,
      createdAt: now,
      lastUsedAt: now,
      credential,
    };
    this.sessions.set(session.key, session);
    if (this.sessions.size > MAX_SESSIONS) {
      const oldest = [...this.sessions.values()].sort((a, b) => a.lastUsedAt - b.lastUsedAt)[0]!;
      this.end([oldest.key]);
    }
    return { id, session };
  }

  /** The live session for a cookie value, or null (unknown, idle too long, too old, stale password). */
  find(id: string, credential: string | null, now = Date.now()): Session | null {
    return this.live(keyOf(id), credential, now);
  }

  /** Same as find(), by store key (for WebSockets, which hold the key, not the cookie). */
  live(key: string, credential: string | null, now = Date.now()): Session | null {
    const s = this.sessions.get(key);
    if (!s) return null;
    if (credential !== s.credential || this.expired(s, now)) {
      this.end([key]);
      return null;
    }
    return s;
  }

  touch(session: Session, now = Date.now()): void {
    session.lastUsedAt = now;
  }

  /** When the session ends if nothing else uses it. */
  expiresAt(session: Session): number {
    return Math.min(
      session.lastUsedAt + this.limits.idleMs,
      session.createdAt + this.limits.absoluteMs,
    );
  }

  revoke(id: string): Session | null {
    const s = this.sessions.get(keyOf(id)) ?? null;
    if (s) this.end([s.key]);
    return s;
  }

  /** Drops expired sessions (and those of a replaced password); returns their keys. */
  sweep(credential: string | null, now = Date.now()): string[] {
    const ended: string[] = [];
    for (const s of this.sessions.values()) {
      if (credential !== s.credential || this.expired(s, now)) ended.push(s.key);
    }
    if (ended.length > 0) this.end(ended);
    return ended;
  }

  get size(): number {
    return this.sessions.size;
  }

  private end(keys: string[]): void {
    for (const k of keys) this.sessions.delete(k);
    this.onEnded(keys);
  }

  private expired(s: Session, now: number): boolean {
    return now >= this.expiresAt(s);
  }
}

function keyOf(id: string): string {
  return createHash('sha256').update(id).digest('hex');
}
