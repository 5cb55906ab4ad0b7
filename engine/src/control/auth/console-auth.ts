/**
 * Who may use the web console. Plain HTTP endpoints beside the WebSocket:
 *
 *   GET  /api/session  {authenticated, setupRequired, expiresAt, idleTimeoutSec}
 *   POST /api/setup    {token, password}  first run only: the per-install token that
 *                      `branchsan serve` prints authorises setting the admin password
 *   POST /api/login    {password}         → session cookie
 *   POST /api/logout                      → cookie cleared, the session's sockets closed
 *
 * The WebSocket at /api then needs the session cookie (authenticateUpgrade). The token
 * opens nothing but the first-run setup: once a password exists it is useless, so a
 * copy of the printed URL in a log or a browser history grants nothing.
 *
 * CSRF: the cookie is SameSite=Strict, POSTs must carry JSON (a cross-site form
 * cannot) and, when the browser sends an Origin, it must be this console's. When
 * bound to loopback, the Host must name loopback too, which defeats DNS rebinding.
 *
 * The page key. Browsers keep cookies per host, not per port: the console's cookie is
 * also sent to any other server on the same host name (another user's program on
 * localhost:8080, say), which could then use it from a script that sends no Origin.
 * So the cookie alone opens nothing: sign-in also answers a page key (an HMAC of the
 * session id under a secret of this engine run), which the page keeps in its origin's
 * storage (scheme, host and port) and sends with every request that uses the session:
 * the `X-BranchSAN-Key` header on /api/session and /api/logout, and a
 * `branchsan.key.KEY` subprotocol offer on the WebSocket upgrade.
 */
import type http from 'node:http';
import { PAGE_KEY_HEADER, PAGE_KEY_PROTOCOL } from '../../../../contract/errors.js';
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { UserError } from '../../util/errors.js';
import { urlHost } from '../../util/host-port.js';
import type { Logger } from '../../util/log.js';
import { clientAddress, clientBucket, requestPath } from '../http-request.js';
import { LoginThrottle, type ThrottleLimits, DEFAULT_THROTTLE_LIMITS } from './login-throttle.js';
import {
  passwordProblem,
  verifyPassword,
  type PasswordFile,
  type PasswordHash,
} from './password.js';
import { DEFAULT_SESSION_LIMITS, SessionStore, type SessionLimits } from './session-store.js';

export interface ConsoleAuthOptions {
  passwords: PasswordFile;
  /** The per-install token that authorises the first-run setup. */
  setupToken: string;
  /** Served over TLS: the cookie gets Secure and the __Host- prefix. */
  tls: boolean;
  /** The console listens on loopback only: refuse requests whose Host is not loopback. */
  loopbackOnly: boolean;
  sessions?: Partial<SessionLimits>;
  throttle?: Partial<ThrottleLimits>;
  log: Logger;
}

/** Password checks running at once; more wait for nothing and get a 503 (scrypt is CPU-bound). */
const MAX_CONCURRENT_CHECKS = 4;
const MAX_BODY_BYTES = 4096;

interface Reply {
  status: number;
  body?: Record<string, unknown>;
  headers?: Record<string, string>;
}

export class ConsoleAuth {
  readonly sessions: SessionStore;
  readonly throttle: LoginThrottle;
  private readonly cookieName: string;
  private readonly endedListeners = new Set<(keys: string[]) => void>();
  private readonly sweeper: NodeJS.Timeout;
  private checking = 0;
  /** Signs page keys (see above); new each run, as the sessions are. */
  private readonly keySecret = randomBytes(32);

  constructor(private readonly opts: ConsoleAuthOptions) {
    this.sessions = new SessionStore({ ...DEFAULT_SESSION_LIMITS, ...opts.sessions }, (keys) =>
      this.emitEnded(keys),
    );
    this.throttle = new LoginThrottle({ ...DEFAULT_THROTTLE_LIMITS, ...opts.throttle });
    // __Host-: the browser keeps it only from a secure origin, for this host, on Path=/.
    this.cookieName = opts.tls ? '__Host-branchsan_session' : 'branchsan_session';
    const every = Math.min(Math.max(this.sessions.limits.idleMs / 4, 250), 10_000);
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  close(): void {
    clearInterval(this.sweeper);
    this.endedListeners.clear();
  }

  /**
   * No admin password yet: the console offers the first-run setup. A password file that
   * cannot be used now is not "none" (a setup is refused too, saying why, and the
   * sweeper logs it), and never an exception: the URL of the "engine ready" line asks.
   */
  get setupRequired(): boolean {
    try {
      return this.opts.passwords.current() === null;
    } catch (err) {
      if (err instanceof UserError) return false;
      throw err;
    }
  }

  /**
   * Why no one can sign in now, or null: the password file cannot be used (a directory
   * or named pipe put in its place since the start, a chmod), with what to run.
   */
  get passwordProblem(): UserError | null {
    try {
      this.opts.passwords.current();
      return null;
    } catch (err) {
      if (err instanceof UserError) return err;
      throw err;
    }
  }

  /** Called with the keys of sessions that ended (logout, expiry, new password). */
  onSessionsEnded(listener: (keys: string[]) => void): () => void {
    this.endedListeners.add(listener);
    return () => this.endedListeners.delete(listener);
  }

  /** Whether this request is one of the auth endpoints (then it is answered here). */
  handles(req: http.IncomingMessage): boolean {
    const p = requestPath(req);
    return p === '/api/session' || p === '/api/login' || p === '/api/logout' || p === '/api/setup';
  }

  async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let reply: Reply;
    try {
      reply = await this.route(req);
    } catch (err) {
      if (err instanceof UserError) {
        reply = fault(err.code === 'already-exists' ? 409 : 400, err.message, err.hint);
      } else {
        this.opts.log.error('console auth request failed', { err });
        reply = fault(
          500,
          'The engine could not process the sign-in request.',
          'Retry; if it keeps failing, check the engine log (journalctl -u branchsan).',
        );
      }
    }
    const body = reply.body ? JSON.stringify(reply.body) : '';
    res.writeHead(reply.status, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
      ...reply.headers,
    });
    res.end(body);
  }

  /**
   * The session key for a WebSocket upgrade, or null when it carries no live session.
   * The caller checks path, Host and Origin first (hostProblem / originProblem).
   */
  authenticateUpgrade(req: http.IncomingMessage): string | null {
    const id = this.sessionIdOf(req);
    if (!id) return null;
    const session = this.sessions.find(id, this.credentialOrNone());
    if (!session) return null;
    this.sessions.touch(session);
    return session.key;
  }

  /** Whether a WebSocket's session is still live; counts as use of it. */
  use(key: string): boolean {
    const session = this.sessions.live(key, this.credentialOrNone());
    if (!session) return false;
    this.sessions.touch(session);
    return true;
  }

  /**
   * While the console listens on loopback only, a request must name the very address it
   * came in on. Not 'localhost': the engine holds only one of 127.0.0.1 and ::1, and any
   * local user may listen on the other; a browser that then reaches that program at
   * http://localhost:PORT sends it the session cookie, and, the origin being the same,
   * lets its page read the page key (both were reproduced). Any port is taken: an SSH
   * tunnel's local port is the browser's, not the console's.
   */
  hostProblem(req: http.IncomingMessage): string | null {
    if (!this.opts.loopbackOnly) return null;
    const host = req.headers.host ?? '';
    const m = /^(?:\[([^\]]*)\]|([^:[\]]*))(?::\d+)?$/.exec(host);
    const name = (m?.[1] ?? m?.[2] ?? '').toLowerCase();
    if (m && name === localAddressOf(req)) return null;
    return `The console answers only at its own address, ${urlHostOf(req)}, not at "${host}".`;
  }

  /** A browser request from another site (or a rebinding DNS name) is refused. */
  originProblem(req: http.IncomingMessage): string | null {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin' && site !== 'none')
      return 'Cross-site requests to the console are refused.';
    const origin = req.headers.origin;
    if (origin === undefined) return null;
    const expected = `${this.opts.tls ? 'https' : 'http'}://${req.headers.host ?? ''}`;
    return origin.toLowerCase() === expected.toLowerCase()
      ? null
      : `Requests from ${origin} are refused: only the console's own pages may use it.`;
  }

  private async route(req: http.IncomingMessage): Promise<Reply> {
    const hostProblem = this.hostProblem(req);
    if (hostProblem) {
      const url = consoleUrlOf(req, this.opts.tls);
      return fault(
        403,
        hostProblem,
        `Open the console at ${url}/ (through an SSH tunnel: ${urlHostOf(req)} with the tunnel's local port, not localhost).`,
      );
    }
    const p = requestPath(req);
    if (p === '/api/session') {
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return { ...fault(405, 'Use GET.'), headers: { Allow: 'GET, HEAD' } };
      return { status: 200, body: this.sessionInfo(req) };
    }
    if (req.method !== 'POST') return { ...fault(405, 'Use POST.'), headers: { Allow: 'POST' } };
    const originProblem = this.originProblem(req);
    if (originProblem) return fault(403, originProblem, 'Open the console from its own address.');
    if (!/^application\/json\b/i.test(req.headers['content-type'] ?? ''))
      return fault(415, 'Send the request as JSON (Content-Type: application/json).');
    if (p === '/api/logout') return this.logout(req);
    if (p === '/api/login') return this.login(req);
    return this.setup(req);
  }

  private sessionInfo(req: http.IncomingMessage): Record<string, unknown> {
    const id = this.sessionIdOf(req);
    const session = id ? this.sessions.find(id, this.credential()) : null;
    return {
      authenticated: session !== null,
      setupRequired: this.opts.passwords.current() === null,
      expiresAt: session ? this.sessions.expiresAt(session) : null,
      idleTimeoutSec: this.sessions.limits.idleMs / 1000,
    };
  }

  private async login(req: http.IncomingMessage): Promise<Reply> {
    const stored = this.opts.passwords.current(Date.now(), 0);
    if (!stored) {
      return fault(
        409,
        'No admin password is set yet.',
        'Open the console with the URL printed by `branchsan serve` (it ends in ?token=…) to set one, or run `branchsan passwd --data DIR` on the server.',
        { setupRequired: true },
      );
    }
    const peer = clientAddress(req);
    // The body first: a request with no password to check (or no JSON) is answered
    // 400 without using the throttle's budget, which is shared by every address and
    // would otherwise let junk requests, never counted as failures, lock out sign-in.
    const password = (await readJson(req)).password;
    if (typeof password !== 'string' || password === '')
      return fault(400, 'The request has no password.', 'Send {"password": "…"}.');
    const verdict = this.throttle.attempt(peer);
    if (!verdict.allowed) return tooMany(verdict.message, verdict.retryAfterMs);
    try {
      return await this.checkLogin(password, peer, stored);
    } finally {
      this.throttle.settle(peer);
    }
  }

  /** A login the throttle allowed: its password is checked. */
  private async checkLogin(
    password: string,
    peer: string,
    stored: NonNullable<ReturnType<PasswordFile['current']>>,
  ): Promise<Reply> {
    if (this.checking >= MAX_CONCURRENT_CHECKS)
      return fault(
        503,
        'The engine is busy checking other sign-ins.',
        'Try again in a few seconds.',
      );
    this.checking++;
    let ok: boolean;
    try {
      ok = password.length <= 1024 && (await verifyPassword(password, stored));
    } finally {
      this.checking--;
    }
    if (!ok) return this.failed(peer, 'Wrong password.');
    this.throttle.succeed(peer);
    this.opts.log.info('console sign-in', { peer });
    // The password it was checked against, not the file's now: one replaced meanwhile
    // (`branchsan passwd`) must end this session as it ends the others.
    return this.openSession(peer, 200, credentialOf(stored));
  }

  private async setup(req: http.IncomingMessage): Promise<Reply> {
    const peer = clientAddress(req);
    if (this.opts.passwords.current(Date.now(), 0) !== null) {
      return fault(
        409,
        'An admin password is already set.',
        'Sign in with it; to replace it, run `branchsan passwd --data DIR` as root on the server.',
      );
    }
    // The body first, as for a login: a request with no token to check (or no password
    // to set, or no JSON) is answered 400 without using the throttle's budget, shared
    // by every address, and without counting as a failure that locks the client out.
    const body = await readJson(req);
    if (typeof body.token !== 'string' || body.token === '')
      return fault(
        400,
        'The request has no access token.',
        'Open the console with the URL printed by `branchsan serve` (it ends in ?token=…), or set the password on the server with `branchsan passwd --data DIR`.',
      );
    if (typeof body.password !== 'string')
      return fault(400, 'The request has no password.', 'Send {"token": "…", "password": "…"}.');
    const verdict = this.throttle.attempt(peer);
    if (!verdict.allowed) return tooMany(verdict.message, verdict.retryAfterMs);
    try {
      return await this.checkSetup(body.token, body.password, peer);
    } finally {
      this.throttle.settle(peer);
    }
  }

  /** A first-run setup the throttle allowed: its token is checked. */
  private async checkSetup(token: string, password: string, peer: string): Promise<Reply> {
    if (!sameSecret(token, this.opts.setupToken)) {
      return this.failed(
        peer,
        'The access token is not valid for this engine.',
        'Open the console with the URL printed by `branchsan serve` (it ends in ?token=…), or set the password on the server with `branchsan passwd --data DIR`.',
      );
    }
    const problem = passwordProblem(password);
    if (problem) return fault(400, problem, 'Choose another password.', { field: 'password' });
    const set = await this.opts.passwords.set(password, { exclusive: true });
    this.throttle.succeed(peer);
    this.opts.log.info('console admin password set (first-run setup)', { peer });
    return this.openSession(peer, 201, credentialOf(set));
  }

  private logout(req: http.IncomingMessage): Reply {
    const id = this.sessionIdOf(req); // the cookie is cleared whatever the key says
    if (id) this.sessions.revoke(id); // the store tells the console to close its sockets
    return {
      status: 200,
      body: { authenticated: false },
      headers: { 'Set-Cookie': this.cookie('', 0) },
    };
  }

  private failed(peer: string, message: string, hint?: string): Reply {
    const lockedMs = this.throttle.fail(peer);
    if (lockedMs > 0) {
      this.opts.log.warn('console sign-in locked', { peer, lockedMs });
      return tooMany(
        `${message} Too many failed logins from ${clientBucket(peer).label}; try again in ${Math.ceil(lockedMs / 1000)} s.`,
        lockedMs,
      );
    }
    this.opts.log.info('console sign-in refused', { peer });
    return fault(
      401,
      message,
      hint ??
        `Check the password and try again. After ${this.throttle.limits.maxFailures} failures in a row, sign-ins from ${clientBucket(peer).label} pause.`,
    );
  }

  /** `credential`: that of the password the client proved (credentialOf). */
  private openSession(peer: string, status: number, credential: string): Reply {
    const { id, session } = this.sessions.create(peer, credential);
    return {
      status,
      body: {
        authenticated: true,
        setupRequired: false,
        expiresAt: this.sessions.expiresAt(session),
        idleTimeoutSec: this.sessions.limits.idleMs / 1000,
        pageKey: this.pageKeyOf(id),
      },
      headers: { 'Set-Cookie': this.cookie(id) },
    };
  }

  private cookie(value: string, maxAgeSec?: number): string {
    return [
      `${this.cookieName}=${value}`,
      'Path=/',
      'HttpOnly',
      'SameSite=Strict',
      ...(this.opts.tls ? ['Secure'] : []),
      ...(maxAgeSec !== undefined ? [`Max-Age=${maxAgeSec}`] : []),
    ].join('; ');
  }

  /**
   * Every well-formed session cookie of the request. Not only the first: a program on
   * another port of this host may set one with a longer Path, which browsers send first,
   * and the admin's own would never be looked at (signed out, signing in again no help).
   */
  private cookiesOf(req: http.IncomingMessage): string[] {
    const found: string[] = [];
    for (const part of (req.headers.cookie ?? '').split(';')) {
      const eq = part.indexOf('=');
      if (eq < 0 || part.slice(0, eq).trim() !== this.cookieName) continue;
      const value = part.slice(eq + 1).trim();
      if (/^[A-Za-z0-9_-]{43}$/.test(value)) found.push(value);
    }
    return found;
  }

  /** The page key of a session (see above). */
  private pageKeyOf(id: string): string {
    return createHmac('sha256', this.keySecret).update(id).digest('base64url');
  }

  /** The session id of the cookie, when the request also carries that session's page key. */
  private sessionIdOf(req: http.IncomingMessage): string | null {
    const key = pageKeyIn(req) ?? '';
    // Each compared in full (constant time); at most a few cookies reach here (the
    // header's size is bounded).
    let match: string | null = null;
    for (const id of this.cookiesOf(req)) {
      if (sameSecret(key, this.pageKeyOf(id))) match ??= id;
    }
    return match;
  }

  /** Identifies the current password (credentialOf); null when none is set. */
  private credential(): string | null {
    const current = this.opts.passwords.current();
    return current ? credentialOf(current) : null;
  }

  /**
   * credential() for callers inside the server's event listeners: a password file
   * that cannot be used (damaged, readable by others) means no session is valid, and
   * the sweeper logs why. An exception there would stop the engine.
   */
  private credentialOrNone(): string | null {
    try {
      return this.credential();
    } catch {
      return null;
    }
  }

  private sweep(): void {
    let credential: string | null;
    try {
      credential = this.credential();
    } catch (err) {
      this.opts.log.error('cannot read the console password file', { err });
      credential = null; // unreadable password file: end every session
    }
    this.sessions.sweep(credential); // the store reports what ended (emitEnded)
  }

  private emitEnded(keys: string[]): void {
    for (const l of [...this.endedListeners]) l(keys);
  }
}

/** Identifies one password: its salt, new with every password set. */
function credentialOf(hash: PasswordHash): string {
  return hash.salt.toString('base64');
}

function fault(
  status: number,
  message: string,
  hint?: string,
  extra: Record<string, unknown> = {},
): Reply {
  return { status, body: { error: message, ...(hint ? { hint } : {}), ...extra } };
}

function tooMany(message: string, retryAfterMs: number): Reply {
  const sec = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return {
    status: 429,
    body: { error: message, hint: 'Wait, then sign in again.', retryAfterSec: sec },
    headers: { 'Retry-After': String(sec) },
  };
}

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw new UserError(`The request body is too large (over ${MAX_BODY_BYTES} bytes).`);
    }
    chunks.push(chunk);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new UserError('The request body is not valid JSON.', 'Send a JSON object.');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value))
    throw new UserError('The request body is not a JSON object.', 'Send a JSON object.');
  return value as Record<string, unknown>;
}

export function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  // Compare equal lengths only, but always spend a comparison so timing says little.
  return timingSafeEqual(x.length === y.length ? x : y, y) && x.length === y.length;
}

/** The page key a request carries: its header, or a WebSocket subprotocol offer. */
function pageKeyIn(req: http.IncomingMessage): string | null {
  const header = req.headers[PAGE_KEY_HEADER.toLowerCase()];
  if (typeof header === 'string') return header.trim();
  for (const offer of (req.headers['sec-websocket-protocol'] ?? '').split(',')) {
    const p = offer.trim();
    if (p.startsWith(PAGE_KEY_PROTOCOL)) return p.slice(PAGE_KEY_PROTOCOL.length);
  }
  return null;
}

/** The address a request came in on, as written in a URL's host (no IPv4-mapped prefix). */
function localAddressOf(req: http.IncomingMessage): string {
  const a = (req.socket.localAddress ?? '').toLowerCase();
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}

/** The address a request came in on, as a URL writes it ([::1] for IPv6). */
function urlHostOf(req: http.IncomingMessage): string {
  return urlHost(localAddressOf(req) || '127.0.0.1');
}

/** The console's own URL as this request reached it: scheme, address and port. */
function consoleUrlOf(req: http.IncomingMessage, tls: boolean): string {
  return `${tls ? 'https' : 'http'}://${urlHostOf(req)}:${req.socket.localPort ?? 'PORT'}`;
}
