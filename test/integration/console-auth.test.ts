/**
 * Console access control against real engine processes: first-run setup with the
 * printed token, password sign-in, session cookies on the WebSocket, sign-out,
 * expiry, lockout, CSRF and DNS-rebinding refusals, TLS with a pinned self-signed
 * certificate, remote access refused without TLS, the API socket's group and mode,
 * and hosts' DH-HMAC-CHAP secrets. Build first (npm test does).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Database from 'better-sqlite3';
import WebSocket from 'ws';
import { parseDhchapSecret } from '../../engine/src/service/host-secrets.js';
import { apiError, connectSocket } from '../helpers/api.js';
import { BIN, runCli, startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { until } from '../helpers/wait.js';

const PASSWORD = 'correct horse battery';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Record<string, any>;
}

/** One HTTP(S) request to the console; `ca` pins the self-signed certificate. */
function request(
  base: string,
  method: string,
  route: string,
  opts: { body?: unknown; headers?: Record<string, string>; ca?: string } = {},
): Promise<Reply> {
  const url = new URL(route, base);
  const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  const headers: Record<string, string> = {
    ...(payload !== undefined ? { 'Content-Type': 'application/json' } : {}),
    ...opts.headers,
  };
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(
      url,
      { method, headers, ...(opts.ca ? { ca: opts.ca, servername: 'localhost' } : {}) },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: text ? JSON.parse(text) : {},
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** What a browser keeps of a sign-in: the cookie pair ("name=value") and the page key. */
interface Session {
  cookie: string;
  key: string;
}

/** The session a sign-in (or setup) answered: its Set-Cookie and its page key. */
function cookieOf(reply: Reply): Session {
  const set = reply.headers['set-cookie']?.[0];
  if (!set) throw new Error(`no Set-Cookie in ${reply.status} ${JSON.stringify(reply.body)}`);
  expect(reply.body.pageKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
  return { cookie: set.split(';')[0]!, key: reply.body.pageKey as string };
}

/** The headers the console page sends with a request that uses its session. */
function sessionHeaders(s: Session): Record<string, string> {
  return { Cookie: s.cookie, 'X-BranchSAN-Key': s.key };
}

function baseOf(engine: RunningEngine): string {
  return engine.consoleUrl!.replace(/\?.*$/, '');
}

function tokenOf(engine: RunningEngine): string {
  return new URL(engine.consoleUrl!).searchParams.get('token')!;
}

/** Opens the console WebSocket; rejects with "HTTP <status>" when the upgrade is refused. */
function openSocket(
  base: string,
  /** A Session as the page sends it (cookie and key), or a bare cookie string. */
  opts: { cookie?: Session | string; protocols?: string[]; origin?: string; ca?: string } = {},
): Promise<WebSocket> {
  const url = base.replace(/^http/, 'ws') + 'api';
  const c = opts.cookie;
  const key = typeof c === 'object' ? [`branchsan.key.${c.key}`] : [];
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts.protocols ?? ['branchsan.v1', ...key], {
      headers: c ? { Cookie: typeof c === 'string' ? c : c.cookie } : {},
      ...(opts.origin ? { origin: opts.origin } : {}),
      ...(opts.ca ? { ca: opts.ca, servername: 'localhost' } : {}),
    });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

function call(ws: WebSocket, method: string, params: unknown = {}): Promise<Record<string, any>> {
  const id = Math.floor(Math.random() * 1e9);
  return new Promise((resolve) => {
    const on = (d: WebSocket.RawData) => {
      const m = JSON.parse(d.toString());
      if (m.id !== id) return;
      ws.off('message', on);
      resolve(m);
    };
    ws.on('message', on);
    ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
  });
}

function closed(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => ws.once('close', (code) => resolve(code)));
}

/** `branchsan passwd --password-stdin`, as a provisioning script would run it. */
function setPassword(
  dataDir: string,
  password: string,
): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, 'passwd', '--data', dataDir, '--password-stdin']);
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d));
    p.stderr.on('data', (d: Buffer) => (out += d));
    p.on('exit', (code) => resolve({ code, out }));
    p.stdin.end(password + '\n');
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('console sign-in on loopback (plain http)', () => {
  let engine: RunningEngine;
  let base: string;
  let cookie: Session;

  beforeAll(async () => {
    engine = await startEngine({ args: ['--session-idle', '1.5', '--login-lockout', '1'] });
    base = baseOf(engine);
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('a fresh install needs the printed setup token: nobody who only reaches the port gets in', async () => {
    expect(engine.consoleUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=/);
    const s = await request(base, 'GET', '/api/session');
    expect(s.body).toMatchObject({ authenticated: false, setupRequired: true });
    const login = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    expect(login.status).toBe(409);
    expect(login.body.error).toBe('No admin password is set yet.');
    await expect(openSocket(base)).rejects.toThrow(/HTTP 401/);
    const guess = await request(base, 'POST', '/api/setup', {
      body: { token: 'not-the-token', password: PASSWORD },
    });
    expect(guess.status).toBe(401);
    expect(guess.body.error).toBe('The access token is not valid for this engine.');
    const weak = await request(base, 'POST', '/api/setup', {
      body: { token: tokenOf(engine), password: 'short' },
    });
    expect(weak.status).toBe(400);
    expect(weak.body.error).toMatch(/at least 8 characters/);
  });

  it('the setup token sets the first password once and signs in; the hash is scrypt in a 0600 file', async () => {
    const setup = await request(base, 'POST', '/api/setup', {
      body: { token: tokenOf(engine), password: PASSWORD },
    });
    expect(setup.status).toBe(201);
    const set = setup.headers['set-cookie']![0]!;
    expect(set).toMatch(
      /^branchsan_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict$/,
    );
    cookie = cookieOf(setup);
    const again = await request(base, 'POST', '/api/setup', {
      body: { token: tokenOf(engine), password: 'another password' },
    });
    expect(again.status).toBe(409);
    const file = path.join(engine.dataDir, 'secrets', 'console-password');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(file, 'utf8')).toMatch(
      /^\$scrypt\$ln=15,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}\n$/,
    );
  });

  it('a session cookie opens the WebSocket; the token subprotocol alone does not', async () => {
    const ws = await openSocket(base, { cookie });
    const r = await call(ws, 'system.status');
    expect(r.result.pid).toBe(engine.pid);
    ws.close();
    await expect(openSocket(base)).rejects.toThrow(/HTTP 401/);
    await expect(
      openSocket(base, { protocols: ['branchsan.v1', `branchsan.token.${tokenOf(engine)}`] }),
    ).rejects.toThrow(/HTTP 401/);
    await expect(
      openSocket(base, { cookie: 'branchsan_session=' + 'A'.repeat(43) }),
    ).rejects.toThrow(/HTTP 401/);
  });

  // Browsers send a host's cookies to every port of it: another program on this host
  // (another user's, on localhost:8080) that a signed-in admin's browser visits gets the
  // cookie. Without the page key, which the console's origin alone can read, it opens
  // nothing and ends nothing.
  it('the cookie alone opens nothing: the page key must come with it', async () => {
    const login = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    const mine = cookieOf(login);
    await expect(openSocket(base, { cookie: mine.cookie })).rejects.toThrow(/HTTP 401/);
    const other = { ...mine, key: 'B'.repeat(43) }; // another session's key, or a guess
    await expect(openSocket(base, { cookie: other })).rejects.toThrow(/HTTP 401/);
    const bare = await request(base, 'GET', '/api/session', { headers: { Cookie: mine.cookie } });
    expect(bare.body.authenticated).toBe(false);
    const ws = await openSocket(base, { cookie: mine });
    // a sign-out with the cookie alone clears that cookie, and ends no session
    const out = await request(base, 'POST', '/api/logout', {
      body: {},
      headers: { Cookie: mine.cookie },
    });
    expect(out.status).toBe(200);
    expect((await call(ws, 'system.status')).result.pid).toBe(engine.pid);
    const still = await request(base, 'GET', '/api/session', { headers: sessionHeaders(mine) });
    expect(still.body.authenticated).toBe(true);
    ws.close();
  });

  it('signs in with the password, refuses a wrong one with 401', async () => {
    const bad = await request(base, 'POST', '/api/login', { body: { password: 'wrong password' } });
    expect(bad.status).toBe(401);
    expect(bad.body.error).toBe('Wrong password.');
    expect(bad.headers['set-cookie']).toBeUndefined();
    const ok = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ authenticated: true, idleTimeoutSec: 1.5 });
    const s = await request(base, 'GET', '/api/session', { headers: sessionHeaders(cookieOf(ok)) });
    expect(s.body).toMatchObject({ authenticated: true, setupRequired: false });
  });

  // The attempt limits are shared (per client, and by all clients together); a request
  // with no password to check must not use them up at no cost, or a few senders of
  // `{}` would lock everyone out of sign-in without ever failing a password.
  it('a login request with no password is refused 400 and uses none of the attempt budget', async () => {
    for (let i = 0; i < 31; i++) {
      const junk = await request(base, 'POST', '/api/login', {
        body: i % 2 ? {} : { password: '' },
      });
      expect(junk.status).toBe(400);
      expect(junk.body.error).toBe('The request has no password.');
    }
    const ok = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    expect(ok.status).toBe(200);
  });

  it('refuses cross-origin and cross-site POSTs, non-JSON bodies, rebinding Host names and foreign WebSocket origins', async () => {
    const body = { password: PASSWORD };
    const evil = await request(base, 'POST', '/api/login', {
      body,
      headers: { Origin: 'http://evil.example' },
    });
    expect(evil.status).toBe(403);
    expect(evil.body.error).toMatch(/http:\/\/evil\.example are refused/);
    const site = await request(base, 'POST', '/api/login', {
      body,
      headers: { 'Sec-Fetch-Site': 'cross-site' },
    });
    expect(site.status).toBe(403);
    const form = await request(base, 'POST', '/api/login', {
      headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
    });
    expect(form.status).toBe(415);
    const rebinding = await request(base, 'POST', '/api/login', {
      body,
      headers: {
        Host: `evil.example:${new URL(base).port}`,
        Origin: `http://evil.example:${new URL(base).port}`,
      },
    });
    expect(rebinding.status).toBe(403);
    const sameOrigin = await request(base, 'POST', '/api/login', {
      body,
      headers: { Origin: base.replace(/\/$/, '') },
    });
    expect(sameOrigin.status).toBe(200);
    await expect(openSocket(base, { cookie, origin: 'http://evil.example' })).rejects.toThrow(
      /HTTP 403/,
    );
  });

  it('answers only at the address it listens on (not localhost, another 127.x), at any port', async () => {
    // The engine holds 127.0.0.1 only: any local user may listen on [::1] at the same
    // port, and a browser sent to http://localhost:PORT (which tries ::1 first) would
    // give that program the session cookie, and its page the page key in localStorage.
    const port = new URL(base).port;
    const s = cookieOf(await request(base, 'POST', '/api/login', { body: { password: PASSWORD } }));
    for (const host of [`localhost:${port}`, `127.0.0.2:${port}`, `[::1]:${port}`, 'localhost']) {
      const r = await request(base, 'GET', '/api/session', {
        headers: { ...sessionHeaders(s), Host: host },
      });
      expect(r.status, host).toBe(403);
      expect(r.body.error).toBe(
        `The console answers only at its own address, 127.0.0.1, not at "${host}".`,
      );
      expect(r.body.hint).toBe(
        `Open the console at http://127.0.0.1:${port}/ (through an SSH tunnel: 127.0.0.1 with the tunnel's local port, not localhost).`,
      );
    }
    // Its own address at its port, with none, or at an SSH tunnel's local port.
    for (const host of [`127.0.0.1:${port}`, '127.0.0.1', '127.0.0.1:9001']) {
      const page = await request(base, 'GET', '/api/session', {
        headers: { ...sessionHeaders(s), Host: host },
      });
      expect(page.body.authenticated, host).toBe(true);
    }
  });

  it("finds the admin's own session cookie among others a program on another port set", async () => {
    // Such a cookie with a longer Path comes first in the browser's Cookie header; only
    // the first was looked at, so the admin stayed signed out, signing in again or not.
    const s = cookieOf(await request(base, 'POST', '/api/login', { body: { password: PASSWORD } }));
    const tossed = `branchsan_session=${'J'.repeat(43)}; ${s.cookie}`;
    const r = await request(base, 'GET', '/api/session', {
      headers: { Cookie: tossed, 'X-BranchSAN-Key': s.key },
    });
    expect(r.body.authenticated).toBe(true);
    const ws = await openSocket(base, { cookie: { cookie: tossed, key: s.key } });
    expect((await call(ws, 'system.status')).result.pid).toBe(engine.pid);
    ws.close();
    // The junk cookie alone, with the real key, opens nothing.
    const junk = await request(base, 'GET', '/api/session', {
      headers: { Cookie: `branchsan_session=${'J'.repeat(43)}`, 'X-BranchSAN-Key': s.key },
    });
    expect(junk.body.authenticated).toBe(false);
  });

  it('sign-out ends the session and closes its WebSocket with 4401', async () => {
    const login = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    const mine = cookieOf(login);
    const ws = await openSocket(base, { cookie: mine });
    const code = closed(ws);
    const out = await request(base, 'POST', '/api/logout', {
      body: {},
      headers: sessionHeaders(mine),
    });
    expect(out.status).toBe(200);
    expect(out.headers['set-cookie']![0]).toMatch(/^branchsan_session=; .*Max-Age=0/);
    expect(await code).toBe(4401);
    await expect(openSocket(base, { cookie: mine })).rejects.toThrow(/HTTP 401/);
  });

  it('an idle session expires: refused at upgrade, and an open socket is closed', async () => {
    const login = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    const mine = cookieOf(login);
    const ws = await openSocket(base, { cookie: mine });
    const code = closed(ws);
    expect(await code).toBe(4401); // nothing sent for 1.5 s
    await expect(openSocket(base, { cookie: mine })).rejects.toThrow(/HTTP 401/);
    const s = await request(base, 'GET', '/api/session', { headers: sessionHeaders(mine) });
    expect(s.body.authenticated).toBe(false);
  });

  // The page (GET /api/session) can be the first to meet the expired session: the
  // store then drops it, and the sweeper never sees it. The socket must close anyway,
  // or it goes on receiving the engine's events after the session ended.
  it('an expired session found by a session check first still closes its open socket', async () => {
    const login = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    const mine = cookieOf(login);
    const ws = await openSocket(base, { cookie: mine });
    const end: { code?: number } = {};
    ws.once('close', (code) => (end.code = code));
    for (;;) {
      const s = await request(base, 'GET', '/api/session', { headers: sessionHeaders(mine) });
      if (!s.body.authenticated) break;
      await sleep(5);
    }
    expect(await until(() => end.code, 2000)).toBe(4401);
  });

  it('a socket in use keeps its session alive', async () => {
    const login = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    const ws = await openSocket(base, { cookie: cookieOf(login) });
    for (let i = 0; i < 5; i++) {
      await sleep(500);
      expect((await call(ws, 'system.status')).result.pid).toBe(engine.pid);
    }
    ws.close();
  });
});

describe('console sign-in lockout', () => {
  let engine: RunningEngine;
  let base: string;

  beforeAll(async () => {
    const dataDir = tempDir();
    expect((await setPassword(dataDir, PASSWORD)).code).toBe(0);
    // 2 s rather than 1 s: the "still locked" check must beat the clock on a busy machine
    engine = await startEngine({ dataDir, args: ['--login-lockout', '2'] });
    base = baseOf(engine);
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('a password set with `branchsan passwd` before the first start: no setup token in the URL', () => {
    expect(engine.consoleUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
  });

  it('locks an address after 5 failures in a row, even for the right password, then unlocks; the next lockout doubles', async () => {
    const wrong = () => request(base, 'POST', '/api/login', { body: { password: 'guess guess' } });
    const right = () => request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    for (let i = 0; i < 4; i++) expect((await wrong()).status).toBe(401);
    const fifth = await wrong();
    expect(fifth.status).toBe(429);
    expect(fifth.body.error).toBe(
      'Wrong password. Too many failed logins from this machine (loopback); try again in 2 s.',
    );
    const locked = await right();
    expect(locked.status).toBe(429);
    expect(locked.body.error).toBe(
      'Too many failed logins from this machine (loopback); try again in 2 s.',
    );
    expect(locked.headers['retry-after']).toBe('2');
    await sleep(2_100);
    for (let i = 0; i < 4; i++) expect((await wrong()).status).toBe(401);
    expect((await wrong()).body.error).toMatch(/try again in 4 s\.$/);
    await sleep(4_100);
    expect((await right()).status).toBe(200);
    // a success resets the count: four more failures do not lock
    for (let i = 0; i < 4; i++) expect((await wrong()).status).toBe(401);
    expect((await right()).status).toBe(200);
  });

  it('`branchsan passwd` while the engine runs replaces the password and signs everyone out', async () => {
    const login = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    const ws = await openSocket(base, { cookie: cookieOf(login) });
    const code = closed(ws);
    const r = await setPassword(engine.dataDir, 'a brand new password');
    expect(r.code).toBe(0);
    expect(await code).toBe(4401);
    const old = await request(base, 'POST', '/api/login', { body: { password: PASSWORD } });
    expect(old.status).toBe(401);
    const fresh = await request(base, 'POST', '/api/login', {
      body: { password: 'a brand new password' },
    });
    expect(fresh.status).toBe(200);
  });
});

describe('console over TLS', () => {
  let engine: RunningEngine;
  let base: string;
  let ca: string;

  beforeAll(async () => {
    const dataDir = tempDir();
    expect((await setPassword(dataDir, PASSWORD)).code).toBe(0);
    engine = await startEngine({ dataDir, args: ['--console-tls', 'on'] });
    base = baseOf(engine);
    ca = fs.readFileSync(path.join(dataDir, 'secrets', 'console-tls.crt'), 'utf8');
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('keeps the key and certificate as 0600 secret files, a valid self-signed ECDSA certificate', () => {
    expect(base).toMatch(/^https:\/\/127\.0\.0\.1:\d+\/$/);
    for (const f of ['console-tls.key', 'console-tls.crt'])
      expect(fs.statSync(path.join(engine.dataDir, 'secrets', f)).mode & 0o777).toBe(0o600);
    const x509 = new X509Certificate(ca);
    expect(x509.verify(x509.publicKey)).toBe(true);
    expect(x509.publicKey.asymmetricKeyType).toBe('ec');
    expect(x509.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(x509.checkHost('localhost')).toBe('localhost');
  });

  it('serves https with the pinned certificate, whose fingerprint the API reports', async () => {
    const peer = await new Promise<X509Certificate>((resolve, reject) => {
      const req = https.get(base, { ca, servername: 'localhost' }, (res) => {
        resolve((res.socket as TLSSocket).getPeerX509Certificate()!);
        res.resume();
      });
      req.on('error', reject);
    });
    const api = await connectSocket(engine.socketPath);
    try {
      const info = await api.call('system.console', {});
      expect(info).toMatchObject({ enabled: true, tls: true, remoteAccess: false, url: base });
      expect(info.certificateFingerprint).toBe(peer.fingerprint256);
      expect(info.certificateFingerprint).toBe(new X509Certificate(ca).fingerprint256);
    } finally {
      api.close();
    }
    // An unpinned client refuses the self-signed certificate, as a browser warns.
    await expect(request(base, 'GET', '/api/session')).rejects.toThrow(/self[- ]signed/);
  });

  it('signs in over https with a Secure __Host- cookie, and wss works with it', async () => {
    const login = await request(base, 'POST', '/api/login', { body: { password: PASSWORD }, ca });
    expect(login.status).toBe(200);
    expect(login.headers['set-cookie']![0]).toMatch(
      /^__Host-branchsan_session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; SameSite=Strict; Secure$/,
    );
    const ws = await openSocket(base, { cookie: cookieOf(login), ca });
    expect((await call(ws, 'system.status')).result.pid).toBe(engine.pid);
    ws.close();
    await expect(openSocket(base, { ca })).rejects.toThrow(/HTTP 401/);
  });

  it('keeps the same certificate across restarts', async () => {
    const before = new X509Certificate(ca).fingerprint256;
    await engine.stop();
    engine = await startEngine({ dataDir: engine.dataDir, args: ['--console-tls', 'on'] });
    const after = new X509Certificate(
      fs.readFileSync(path.join(engine.dataDir, 'secrets', 'console-tls.crt'), 'utf8'),
    ).fingerprint256;
    expect(after).toBe(before);
  });
});

describe('console host names', () => {
  it('--console-host localhost serves, and prints, 127.0.0.1: the address it answers at', async () => {
    // 'localhost' names 127.0.0.1 and ::1; the console answers only at the one it holds.
    const e = await startEngine({ args: ['--console-host', 'localhost'] });
    try {
      const base = baseOf(e);
      expect(new URL(base).hostname).toBe('127.0.0.1');
      const r = await request(base, 'GET', '/api/session');
      expect(r.status).toBe(200);
    } finally {
      await e.stop();
    }
  });
});

describe('remote console access', () => {
  it('is refused at start without TLS, with a message saying what to do', async () => {
    const r = await runCli([
      'serve',
      '--data',
      tempDir(),
      '--console-port',
      '0',
      '--console-host',
      '0.0.0.0',
      '--console-tls',
      'off',
    ]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Refusing to serve the web console on 0.0.0.0 without TLS');
    expect(r.stderr).toContain('Drop --console-tls off');
  });

  it('uses TLS by itself on a non-loopback address', async () => {
    const engine = await startEngine({ args: ['--console-host', '0.0.0.0'] });
    try {
      expect(engine.consoleUrl).toMatch(/^https:\/\/0\.0\.0\.0:\d+\/\?token=/);
      const port = new URL(engine.consoleUrl!).port;
      const ca = fs.readFileSync(path.join(engine.dataDir, 'secrets', 'console-tls.crt'), 'utf8');
      const s = await request(`https://127.0.0.1:${port}/`, 'GET', '/api/session', { ca });
      expect(s.body).toMatchObject({ authenticated: false, setupRequired: true });
      const api = await connectSocket(engine.socketPath);
      try {
        expect(await api.call('system.console', {})).toMatchObject({
          remoteAccess: true,
          tls: true,
        });
      } finally {
        api.close();
      }
    } finally {
      await engine.stop();
    }
  });
});

const HAVE_GROUPADD = spawnSync('groupadd', ['--help']).status === 0 && process.getuid?.() === 0;

describe('API socket access', () => {
  it('is root-only (0600) without the admin group, and the engine says how to create it', async () => {
    const engine = await startEngine({ args: ['--admin-group', 'bsan-no-such-group'] });
    try {
      const st = fs.statSync(engine.socketPath);
      expect(st.mode & 0o777).toBe(0o600);
      expect(st.uid).toBe(process.getuid!());
      const warning = engine.lines.find((l) =>
        String(l.msg).startsWith('No group "bsan-no-such-group"'),
      );
      expect(warning?.msg).toContain(
        'groupadd --system bsan-no-such-group && usermod -aG bsan-no-such-group USER',
      );
    } finally {
      await engine.stop();
    }
  });

  it.skipIf(!HAVE_GROUPADD)(
    'belongs to root and the admin group with mode 0660 when the group exists (needs root and groupadd)',
    async () => {
      const group = `bsan-t${process.pid}`;
      execFileSync('groupadd', [group]);
      try {
        const gid = Number(
          execFileSync('getent', ['group', group], { encoding: 'utf8' }).split(':')[2],
        );
        const engine = await startEngine({ args: ['--admin-group', group] });
        try {
          const st = fs.statSync(engine.socketPath);
          expect(st.mode & 0o777).toBe(0o660);
          expect(st.uid).toBe(0);
          expect(st.gid).toBe(gid);
          expect(engine.lines.some((l) => String(l.msg).startsWith('No group'))).toBe(false);
        } finally {
          await engine.stop();
        }
      } finally {
        execFileSync('groupdel', [group]);
      }
    },
  );
});

describe('hosts’ DH-HMAC-CHAP secrets over the API', () => {
  let engine: RunningEngine;
  const SUBNQN = 'nqn.2026-01.com.example:auth-test';
  const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:0c9f2d7e-1111-4a5b-9c3d-2e4f6a8b0c1d';

  beforeAll(async () => {
    engine = await startEngine();
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('creates, reads and rotates a secret for an allowed host, in nvme-cli’s format, 0600, never logged', async () => {
    const api = await connectSocket(engine.socketPath);
    try {
      const refused = await apiError(api.call('host.secret.create', { hostNqn: HOSTNQN }));
      expect(refused.message).toContain('is not allowed on any subsystem');
      expect(refused.data?.hint).toContain('target.host.allow');

      await api.call('target.subsystem.create', { nqn: SUBNQN, hosts: [HOSTNQN] });
      const made = await api.call('host.secret.create', { hostNqn: HOSTNQN, hash: 2 });
      expect(made).toMatchObject({ hostNqn: HOSTNQN, hash: 2, hashName: 'SHA-384' });
      const parsed = parseDhchapSecret(made.secret);
      expect(parsed.hash).toBe(2);
      expect(parsed.key).toHaveLength(48);

      const again = await apiError(api.call('host.secret.create', { hostNqn: HOSTNQN }));
      expect(again.message).toContain('already has a DH-HMAC-CHAP secret');
      expect((await api.call('host.secret.get', { hostNqn: HOSTNQN })).secret).toBe(made.secret);

      const rotated = await api.call('host.secret.rotate', { hostNqn: HOSTNQN });
      expect(rotated.secret).not.toBe(made.secret);
      expect(rotated.hash).toBe(2);
      const sha512 = await api.call('host.secret.rotate', { hostNqn: HOSTNQN, hash: 3 });
      expect(parseDhchapSecret(sha512.secret).key).toHaveLength(64);
      expect((await api.call('host.secret.get', { hostNqn: HOSTNQN })).secret).toBe(sha512.secret);

      const dir = path.join(engine.dataDir, 'secrets', 'hosts');
      expect(fs.statSync(dir).mode & 0o777).toBe(0o700);
      const files = fs.readdirSync(dir);
      expect(files).toHaveLength(1);
      expect(fs.statSync(path.join(dir, files[0]!)).mode & 0o777).toBe(0o600);
      expect(fs.readFileSync(path.join(dir, files[0]!), 'utf8')).toBe(sha512.secret + '\n');

      const missing = await apiError(
        api.call('host.secret.get', { hostNqn: 'nqn.2026-01.com.example:nobody' }),
      );
      expect(missing.message).toContain('has no DH-HMAC-CHAP secret');
      for (const s of [made.secret, rotated.secret, sha512.secret]) {
        const key = s.split(':')[2]!;
        expect(JSON.stringify(engine.lines)).not.toContain(key);
        expect(engine.stderr()).not.toContain(key);
      }
    } finally {
      api.close();
    }
  });

  it('a secret change whose audit row cannot be written changes nothing', async () => {
    const api = await connectSocket(engine.socketPath);
    const other = 'nqn.2014-08.org.nvmexpress:uuid:0c9f2d7e-2222-4a5b-9c3d-2e4f6a8b0c1d';
    // A real SQLite failure at the audit insert (as a full disk would give one).
    const db = new Database(path.join(engine.dataDir, 'branchsan.db'));
    try {
      await api.call('target.host.allow', { nqn: SUBNQN, hostNqn: other });
      const before = await api.call('host.secret.get', { hostNqn: HOSTNQN });
      const dir = path.join(engine.dataDir, 'secrets', 'hosts');
      const files = fs.readdirSync(dir).sort();
      db.exec(
        "CREATE TRIGGER no_audit BEFORE INSERT ON audit BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
      );
      await apiError(api.call('host.secret.rotate', { hostNqn: HOSTNQN }));
      await apiError(api.call('host.secret.create', { hostNqn: other }));
      // Before the fix the rotated secret had replaced the old one (and the new host had
      // one) with no audit row saying so.
      expect((await api.call('host.secret.get', { hostNqn: HOSTNQN })).secret).toBe(before.secret);
      const missing = await apiError(api.call('host.secret.get', { hostNqn: other }));
      expect(missing.message).toContain('has no DH-HMAC-CHAP secret');
      expect(fs.readdirSync(dir).sort()).toEqual(files); // no temporary file left behind
      db.exec('DROP TRIGGER no_audit');
      const made = await api.call('host.secret.create', { hostNqn: other });
      expect((await api.call('host.secret.get', { hostNqn: other })).secret).toBe(made.secret);
    } finally {
      db.exec('DROP TRIGGER IF EXISTS no_audit');
      db.close();
      api.close();
    }
  });
});
