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

describe('SessionStore tells which sessions it ended, whichever call ended them', () => {
  const limits = { idleMs: 1000, absoluteMs: 60_000 };

  it('a lookup that meets an expired session or a replaced password reports it', () => {
    const ended: string[][] = [];
    const store = new SessionStore(limits, (keys) => ended.push(keys));
    const idle = store.create('a', 'cred', 0);
    const old = store.create('b', 'cred', 0);
    store.touch(old.session, 900);
    expect(store.find(idle.id, 'cred', 1000)).toBeNull();
    expect(ended).toEqual([[idle.session.key]]);
    expect(store.live(old.session.key, 'new', 1001)).toBeNull();
    expect(ended).toEqual([[idle.session.key], [old.session.key]]);
    expect(store.size).toBe(0);
  });

  it('evicting the least recently used of too many sessions reports it', () => {
    const ended: string[][] = [];
    const store = new SessionStore(limits, (keys) => ended.push(keys));
    const first = store.create('a', 'cred', 0);
    for (let i = 1; i <= 256; i++) store.create('a', 'cred', i);
    expect(ended).toEqual([[first.session.key]]);
    expect(store.size).toBe(256);
  });

  it('revoke and sweep report what they ended, once', () => {
    const ended: string[][] = [];
    const store = new SessionStore(limits, (keys) => ended.push(keys));
    const a = store.create('a', 'cred', 0);
    const b = store.create('b', 'cred', 0);
    expect(store.revoke(a.id)).toBe(a.session);
    expect(store.revoke(a.id)).toBeNull();
    expect(store.sweep('cred', 1000)).toEqual([b.session.key]);
    expect(store.sweep('cred', 1001)).toEqual([]);
    expect(ended).toEqual([[a.session.key], [b.session.key]]);
  });
});

describe('LoginThrottle', () => {
  const limits = {
    maxFailures: 5,
    lockoutMs: 60_000,
    maxLockoutMs: 3_600_000,
    attemptsPerMinute: 30,
    totalAttemptsPerMinute: 120,
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

  it('counts a sign-in being checked as a failure until it settles: a burst checks no more than a lockout allows', () => {
    const t = new LoginThrottle(limits);
    // 30 requests sent at once, all waiting for their body or their scrypt check.
    const verdicts = Array.from({ length: 30 }, () => t.attempt('10.0.0.9', 0));
    expect(verdicts.filter((v) => v.allowed)).toHaveLength(5);
    expect(verdicts[5]).toMatchObject({ allowed: false, reason: 'busy' });
    // They fail: the lockout starts; settling lets nothing more through.
    for (let i = 0; i < 5; i++) {
      t.fail('10.0.0.9', 1);
      t.settle('10.0.0.9');
    }
    expect(t.attempt('10.0.0.9', 2)).toMatchObject({ allowed: false, reason: 'locked' });
    // A success settles too: the next attempt is allowed.
    const u = new LoginThrottle(limits);
    for (let i = 0; i < 5; i++) expect(u.attempt('10.0.0.7', 0).allowed).toBe(true);
    u.succeed('10.0.0.7');
    for (let i = 0; i < 5; i++) u.settle('10.0.0.7');
    expect(u.attempt('10.0.0.7', 1).allowed).toBe(true);
  });

  it('treats all of loopback as one client and an IPv6 client as its /64', () => {
    const t = new LoginThrottle(limits);
    const failFrom = (a: string) => {
      expect(t.attempt(a, 0).allowed, a).toBe(true);
      const ms = t.fail(a, 0);
      t.settle(a);
      return ms;
    };
    ['127.0.0.1', '127.0.0.2', '127.1.2.3', '::ffff:127.0.0.9'].forEach((a) =>
      expect(failFrom(a)).toBe(0),
    );
    expect(failFrom('::1')).toBe(60_000);
    const v = t.attempt('127.0.0.5', 1);
    expect(v).toMatchObject({ allowed: false, reason: 'locked' });
    expect(v.allowed === false && v.message).toBe(
      'Too many failed logins from this machine (loopback); try again in 60 s.',
    );
    [
      '2001:db8:1:2::1',
      '2001:db8:1:2:aaaa::2',
      '2001:0db8:0001:0002::3',
      '2001:db8:1:2::4',
    ].forEach((a) => expect(failFrom(a)).toBe(0));
    expect(failFrom('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBe(60_000);
    const w = t.attempt('2001:db8:1:2::99', 1);
    expect(w.allowed === false && w.message).toBe(
      'Too many failed logins from 2001:db8:1:2::/64; try again in 60 s.',
    );
    expect(t.attempt('2001:db8:1:3::1', 1).allowed).toBe(true); // another /64
    expect(t.attempt('10.0.0.1', 1).allowed).toBe(true);
  });

  it('limits attempts from all clients together', () => {
    const t = new LoginThrottle({ ...limits, totalAttemptsPerMinute: 10 });
    for (let i = 0; i < 10; i++) {
      expect(t.attempt(`10.0.${i}.1`, i).allowed).toBe(true);
      t.settle(`10.0.${i}.1`);
    }
    const v = t.attempt('10.0.99.1', 20);
    expect(v).toMatchObject({ allowed: false, reason: 'total', retryAfterMs: 59_980 });
    expect(v.allowed === false && v.message).toBe(
      'Too many login attempts on this engine from many addresses; try again in 60 s.',
    );
    expect(t.attempt('10.0.99.1', 60_001).allowed).toBe(true);
  });
});
