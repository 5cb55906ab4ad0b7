import { describe, expect, it } from 'vitest';
import { LoginThrottle } from '../../../engine/src/control/auth/login-throttle.js';
import { SessionStore } from '../../../engine/src/control/auth/session-store.js';

describe('SessionStore', () => {
  const limits = { idleMs: 30 * 60_000, absoluteMs: 12 * 3_600_000 };

  it('issues 256-bit ids and keeps only their hashes', () => {
    const store = new SessionStore(limits);
    const { id, session } = store.create('127.0.0.1', 'cred', 0);
    expect(Buffer.from(id, 'base64url')).toHaveLength(32);
    expect(session.key).toMatch(/^[0-9a-f]{64}$/);
    expect(session.key).not.toContain(id);
    expect(store.find(id, 'cred', 1)).toBe(session);
    expect(store.find(id.slice(0, -1) + (id.endsWith('A') ? 'B' : 'A'), 'cred', 1)).toBeNull();
  });

  it('ends a session after 30 min idle, or 12 h after sign-in however busy', () => {
    const store = new SessionStore(limits);
    const idle = store.create('a', 'cred', 0);
    expect(store.find(idle.id, 'cred', 30 * 60_000 - 1)).not.toBeNull();
    expect(store.find(idle.id, 'cred', 30 * 60_000)).toBeNull();

    const busy = store.create('a', 'cred', 0);
    for (let t = 0; t < 12 * 3_600_000; t += 20 * 60_000) {
      const s = store.find(busy.id, 'cred', t);
      expect(s).not.toBeNull();
      store.touch(s!, t);
    }
    expect(store.find(busy.id, 'cred', 12 * 3_600_000)).toBeNull();
  });

  it('a new password (credential) ends every session; sweep reports what ended', () => {
    const store = new SessionStore(limits);
    const a = store.create('a', 'old', 0);
    store.create('b', 'old', 0);
    expect(store.sweep('old', 1)).toEqual([]);
    expect(store.sweep('new', 2)).toHaveLength(2);
    expect(store.find(a.id, 'old', 3)).toBeNull();
  });
});

describe('LoginThrottle', () => {
  const limits = {
    maxFailures: 5,
    lockoutMs: 60_000,
    maxLockoutMs: 3_600_000,
    attemptsPerMinute: 30,
  };

  it('locks after 5 failures in a row for 60 s, doubling up to an hour; a success resets', () => {
    const t = new LoginThrottle(limits);
    let now = 0;
    for (let i = 0; i < 4; i++) expect(t.fail('10.0.0.9', now)).toBe(0);
    expect(t.fail('10.0.0.9', now)).toBe(60_000);
    const v = t.attempt('10.0.0.9', now + 1);
    expect(v).toMatchObject({ allowed: false, reason: 'locked' });
    expect(v.allowed === false && v.message).toBe(
      'Too many failed logins from 10.0.0.9; try again in 60 s.',
    );
    expect(t.attempt('10.0.0.8', now + 1).allowed).toBe(true); // per address
    const lockouts = [];
    for (let n = 0; n < 8; n++) {
      now += 3_600_000;
      for (let i = 0; i < 4; i++) t.fail('10.0.0.9', now);
      lockouts.push(t.fail('10.0.0.9', now));
    }
    expect(lockouts).toEqual([
      120_000, 240_000, 480_000, 960_000, 1_920_000, 3_600_000, 3_600_000, 3_600_000,
    ]);
    t.succeed('10.0.0.9');
    for (let i = 0; i < 4; i++) t.fail('10.0.0.9', now + 4_000_000);
    expect(t.fail('10.0.0.9', now + 4_000_000)).toBe(60_000);
  });

  it('limits attempts of any outcome per address per minute', () => {
    const t = new LoginThrottle({ ...limits, attemptsPerMinute: 3 });
    for (let i = 0; i < 3; i++) expect(t.attempt('h', i * 1000).allowed).toBe(true);
    const v = t.attempt('h', 3000);
    expect(v).toMatchObject({ allowed: false, reason: 'rate', retryAfterMs: 57_000 });
    expect(t.attempt('h', 60_001).allowed).toBe(true);
  });
});
