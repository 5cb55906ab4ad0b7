/**
 * The web console: the renderer bundle as static files, the sign-in endpoints
 * (auth/console-auth.ts) and the API over a WebSocket at /api. Binds to 127.0.0.1
 * by default; any other address only with TLS (the engine enforces that).
 * The WebSocket upgrade needs a live session cookie; cross-origin upgrades, and on
 * loopback any Host that is not loopback (DNS rebinding), are refused. A socket
 * whose session ends (sign-out, expiry, new password) is closed with code 4401.
 *
 * The console shares the engine's process, and so its file descriptors, with the
 * NVMe/TCP target: connections are capped (in all, and per client as
 * clientBucket counts them) and one that sends no request soon is closed, so
 * connections to the console can never starve the storage of descriptors.
 */
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { CONSOLE_SUBPROTOCOL } from '../../../contract/errors.js';
import { cannotListen, UserError } from '../util/errors.js';
import { joinHostPort } from '../util/host-port.js';
import type { Logger } from '../util/log.js';
import type { ConsoleAuth } from './auth/console-auth.js';
import { MAX_MESSAGE_BYTES, type RpcDispatcher } from './rpc.js';
import { MAX_CLIENT_BACKLOG, type SessionHub } from './sessions.js';
import type { HttpRoute } from './metrics-endpoint.js';
import { clientBucket, requestPath } from './http-request.js';
import type { Socket } from 'node:net';
import { RENDERER_CONTENT_TYPES } from '../../../contract/renderer-files.js';

/** WebSocket close code: the session behind this socket ended; sign in again. */
export const CLOSE_SESSION_ENDED = 4401;

export interface ConsoleServerOptions {
  host: string;
  port: number;
  /** Directory holding the built renderer (index.html + assets). */
  root: string;
  /** The per-install token: the printed URL carries it until an admin password is set. */
  token: string;
  auth: ConsoleAuth;
  /** Serve https/wss with this key and certificate (PEM). */
  tls?: { key: string; cert: string };
  /** Connection limits; the defaults are the exported constants (tests shorten them). */
  limits?: Partial<ConnectionLimits>;
}

export interface ConnectionLimits {
  maxConnections: number;
  perClient: number;
  firstRequestMs: number;
}

/** The bundle's types, plus its source maps (the desktop window serves none). */
const CONTENT_TYPES: Record<string, string> = {
  ...RENDERER_CONTENT_TYPES,
  '.map': 'application/json',
};

/**
 * Connections to the console at once, in all and from one client (see clientBucket);
 * a connection (or, with TLS, a completed handshake) must send its first request
 * within firstRequestMs.
 */
export const CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 256,
  perClient: 64,
  firstRequestMs: 10_000,
};
/** Request headers, and whole requests, must arrive within these. */
const HEADERS_TIMEOUT_MS = 15_000;
const REQUEST_TIMEOUT_MS = 30_000;

const SECURITY_HEADERS = {
  'Content-Security-Policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cache-Control': 'no-store',
};

export class ConsoleServer {
  private server?: http.Server;
  private wss?: WebSocketServer;
  private boundPort = 0;
  /** Rejects the bind attempt under way with the server's error. */
  private failBind?: (err: Error) => void;
  private bindProblem: { error: UserError; since: number } | null = null;
  private retryTimer?: NodeJS.Timeout;
  private closed = false;
  /** Session key of each open socket. */
  private readonly socketSessions = new Map<WebSocket, string>();
  private offSessionsEnded?: () => void;
  /** Extra HTTP routes (GET /metrics), consulted before sign-in and static files. */
  private readonly routes: HttpRoute[] = [];
  /** Open connections per client (clientBucket key). */
  private readonly perClient = new Map<string, number>();
  /** Connections that have not sent their first request yet, and their deadline. */
  private readonly firstRequestTimers = new WeakMap<Socket, NodeJS.Timeout>();
  private readonly limits: ConnectionLimits;

  constructor(
    private readonly opts: ConsoleServerOptions,
    private readonly rpc: RpcDispatcher,
    private readonly hub: SessionHub,
    private readonly log: Logger,
  ) {
    this.limits = { ...CONNECTION_LIMITS, ...opts.limits };
  }

  /** Adds a route with its own authentication (the Prometheus scrape). */
  addRoute(route: HttpRoute): void {
    this.routes.push(route);
  }

  get port(): number {
    return this.boundPort;
  }

  /** host:port it listens on (or, not listening yet, will), IPv6 in brackets. */
  get address(): string {
    return joinHostPort(this.opts.host, this.boundPort || this.opts.port);
  }

  /** The console's address, without the token. */
  get baseUrl(): string {
    return `${this.opts.tls ? 'https' : 'http'}://${this.address}/`;
  }

  /** The URL a person opens: with the setup token while no admin password is set. */
  get url(): string {
    return this.opts.auth.setupRequired ? `${this.baseUrl}?token=${this.opts.token}` : this.baseUrl;
  }

  /** Why no one can sign in now (the admin password file cannot be used), or null. */
  get signInProblem(): UserError | null {
    return this.opts.auth.passwordProblem;
  }

  /** Listens now, or throws the UserError that says why it cannot. */
  async listen(): Promise<void> {
    await this.bind(this.prepare());
  }

  /**
   * Listens like listen(), but an address it cannot have now (another program holds the
   * port, the address comes with a network still coming up) does not stop the caller:
   * the console tries again every retryMs until it listens or closes. `onChange` hears
   * when it starts failing (the error) and when it listens after failing (null).
   */
  async start(retryMs: number, onChange: (problem: UserError | null) => void): Promise<void> {
    const server = this.prepare();
    const attempt = async (): Promise<void> => {
      try {
        await this.bind(server);
      } catch (err) {
        if (this.closed) return;
        const problem = err as UserError; // bind() says why
        const first = this.bindProblem === null;
        this.bindProblem = { error: problem, since: this.bindProblem?.since ?? Date.now() };
        if (first) onChange(problem);
        this.retryTimer = setTimeout(() => void attempt(), retryMs);
        this.retryTimer.unref();
        return;
      }
      if (this.closed) {
        await this.closeServer(server);
        return;
      }
      if (this.bindProblem) {
        this.bindProblem = null;
        onChange(null);
      }
    };
    await attempt();
  }

  /** Whether the console listens now. */
  get listening(): boolean {
    return this.server?.listening === true;
  }

  /** Why the console does not listen, and since when; null once it listens. */
  get problem(): { error: UserError; since: number } | null {
    return this.bindProblem;
  }

  /** The HTTP(S) server with every handler attached, not listening yet. */
  private prepare(): http.Server {
    if (this.server) throw new Error('console server already started');
    const wss = new WebSocketServer({
      noServer: true,
      maxPayload: MAX_MESSAGE_BYTES,
      handleProtocols: (protocols) =>
        protocols.has(CONSOLE_SUBPROTOCOL) ? CONSOLE_SUBPROTOCOL : false,
    });
    const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.firstRequestCame(req.socket);
      try {
        if (requestPath(req) === null) {
          res.writeHead(400, SECURITY_HEADERS).end();
          return;
        }
        const route = this.routes.find((r) => r.handles(req));
        if (route) route.handle(req, res);
        else if (this.opts.auth.handles(req)) void this.opts.auth.handle(req, res);
        else this.serveStatic(req, res);
      } catch (err) {
        // A fault of ours must cost this request, never the engine.
        this.log.error('console request failed', { err, url: req.url?.slice(0, 200) });
        if (res.headersSent) res.destroy();
        else res.writeHead(500, SECURITY_HEADERS).end();
      }
    };
    const server = this.opts.tls
      ? https.createServer(
          { ...this.opts.tls, minVersion: 'TLSv1.2', handshakeTimeout: this.limits.firstRequestMs },
          onRequest,
        )
      : http.createServer(onRequest);
    server.maxConnections = this.limits.maxConnections;
    server.headersTimeout = HEADERS_TIMEOUT_MS;
    server.requestTimeout = REQUEST_TIMEOUT_MS;
    server.on('connection', (socket: Socket) => this.admit(socket));
    if (this.opts.tls) server.on('secureConnection', (socket: Socket) => this.awaitRequest(socket));
    server.on('upgrade', (req, socket, head) => {
      this.firstRequestCame(req.socket);
      try {
        const checked = this.checkUpgrade(req);
        if (typeof checked !== 'object') {
          // Closed once written, not only half: an upgrade is out of reach of the HTTP
          // server's timeouts, and a client that kept its half open held a connection slot
          // for ever (256 such left every admin locked out of the console).
          socket.end(`HTTP/1.1 ${checked}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () =>
            socket.destroy(),
          );
          return;
        }
        wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req, checked.session));
      } catch (err) {
        this.log.error('console upgrade failed', { err, url: req.url?.slice(0, 200) });
        socket.destroy();
      }
    });
    // TLS handshakes that fail (a browser refusing the self-signed certificate) are not engine errors.
    server.on('tlsClientError', () => undefined);
    // A bind that fails is the attempt's to report; anything later is logged.
    server.on('error', (err) => {
      const failBind = this.failBind;
      this.failBind = undefined;
      if (failBind) failBind(err);
      else this.log.error('console server error', { err });
    });
    this.offSessionsEnded = this.opts.auth.onSessionsEnded((keys) => this.endSessions(keys));
    this.server = server;
    this.wss = wss;
    return server;
  }

  /** One attempt to listen; the UserError says why it failed. */
  private async bind(server: http.Server): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const listening = () => {
        this.failBind = undefined;
        resolve();
      };
      this.failBind = (err) => {
        server.off('listening', listening); // or every failed attempt would leave one behind
        reject(cannotListen('console', this.opts.host, this.opts.port, err));
      };
      server.listen(this.opts.port, this.opts.host, listening);
    });
    this.boundPort = (server.address() as { port: number }).port;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.offSessionsEnded?.();
    this.opts.auth.close();
    for (const ws of this.wss?.clients ?? []) ws.terminate();
    this.wss?.close();
    const server = this.server;
    if (server?.listening) await this.closeServer(server);
  }

  private async closeServer(server: http.Server): Promise<void> {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /**
   * A new TCP connection: refused when its client has too many open already; without
   * TLS it must then send a request within firstRequestMs (with TLS that clock starts
   * once the handshake, itself limited, is done).
   */
  private admit(socket: Socket): void {
    const { key } = clientBucket(socket.remoteAddress ?? 'unknown');
    const open = this.perClient.get(key) ?? 0;
    if (open >= this.limits.perClient) {
      socket.destroy();
      return;
    }
    this.perClient.set(key, open + 1);
    socket.once('close', () => {
      const left = (this.perClient.get(key) ?? 1) - 1;
      if (left > 0) this.perClient.set(key, left);
      else this.perClient.delete(key);
    });
    if (!this.opts.tls) this.awaitRequest(socket);
  }

  /** Closes `socket` unless a request (or an upgrade) arrives on it in time. */
  private awaitRequest(socket: Socket): void {
    const timer = setTimeout(() => socket.destroy(), this.limits.firstRequestMs);
    timer.unref();
    this.firstRequestTimers.set(socket, timer);
    socket.once('close', () => clearTimeout(timer));
  }

  /** After the first request, Node's keep-alive, header and request timeouts take over. */
  private firstRequestCame(socket: Socket): void {
    const timer = this.firstRequestTimers.get(socket);
    if (!timer) return;
    clearTimeout(timer);
    this.firstRequestTimers.delete(socket);
  }

  /** The upgrade's session, or the HTTP status line that refuses it. */
  private checkUpgrade(req: http.IncomingMessage): { session: string } | string {
    const p = requestPath(req);
    if (p === null) return '400 Bad Request';
    if (p !== '/api') return '404 Not Found';
    const auth = this.opts.auth;
    if (auth.hostProblem(req) || auth.originProblem(req)) return '403 Forbidden';
    const session = auth.authenticateUpgrade(req);
    return session ? { session } : '401 Unauthorized';
  }

  /** Closes the sockets of sessions that ended. */
  private endSessions(keys: string[]): void {
    const ended = new Set(keys);
    for (const [ws, key] of this.socketSessions) {
      if (ended.has(key)) ws.close(CLOSE_SESSION_ENDED, 'session ended: sign in again');
    }
  }

  private accept(ws: WebSocket, req: http.IncomingMessage, sessionKey: string): void {
    this.socketSessions.set(ws, sessionKey);
    const id = this.hub.newId();
    const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    const actor = `admin@${(req.socket.remoteAddress ?? 'unknown').replace(/^::ffff:/, '')}`;
    const session = {
      id,
      kind: 'console' as const,
      peer,
      send: (text: string) => {
        if (ws.readyState !== ws.OPEN) return true;
        if (ws.bufferedAmount > MAX_CLIENT_BACKLOG) return false;
        ws.send(text);
        return true;
      },
      close: (reason: string) => ws.close(1008, reason.slice(0, 100)),
    };
    this.hub.add(session);
    ws.on('message', (data, isBinary) => {
      if (!this.opts.auth.use(sessionKey)) {
        ws.close(CLOSE_SESSION_ENDED, 'session ended: sign in again');
        return;
      }
      const text = isBinary ? '' : data.toString();
      this.rpc
        .handle(text, { transport: 'console', peer, actor })
        .then((reply) => {
          // An answer that does not fit the backlog is not dropped without a word (its
          // caller would wait out its timeout and read that the engine may be stuck): the
          // socket is closed, so the page fails its calls at once, reconnects and reloads.
          if (!session.send(reply)) session.close('client is not reading its answers');
        })
        .catch((err) => this.log.error('console reply failed', { err }));
    });
    ws.on('error', () => undefined);
    ws.on('close', () => {
      this.socketSessions.delete(ws);
      this.hub.remove(session);
    });
  }

  private serveStatic(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', ...SECURITY_HEADERS }).end();
      return;
    }
    let rel: string;
    try {
      rel = decodeURIComponent(requestPath(req)!);
    } catch {
      res.writeHead(400, SECURITY_HEADERS).end();
      return;
    }
    if (rel.endsWith('/')) rel += 'index.html';
    const root = path.resolve(this.opts.root);
    const file = path.resolve(root, '.' + rel);
    const type = CONTENT_TYPES[path.extname(file).toLowerCase()];
    if (!file.startsWith(root + path.sep) || rel.includes('\0') || !type) {
      res.writeHead(404, SECURITY_HEADERS).end();
      return;
    }
    readBundleFile(root, file).then(
      (body) => {
        res.writeHead(200, {
          'Content-Type': type,
          'Content-Length': body.length,
          ...SECURITY_HEADERS,
        });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      () => {
        const missingBundle = rel === '/index.html';
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', ...SECURITY_HEADERS });
        res.end(
          missingBundle
            ? 'The console bundle is not built. Run `npm run build` in the BranchSAN checkout, then reload.\n'
            : 'Not found\n',
        );
      },
    );
  }
}

/**
 * Reads a file of the bundle, refusing (as missing) one whose real path leaves the
 * bundle: a symbolic link inside it must not serve other files of the machine, which
 * the engine, running as root, could read.
 */
async function readBundleFile(root: string, file: string): Promise<Buffer> {
  const [real, realRoot] = await Promise.all([
    fs.promises.realpath(file),
    fs.promises.realpath(root),
  ]);
  if (!real.startsWith(realRoot + path.sep)) throw new Error(`${file} leaves the bundle`);
  return fs.promises.readFile(real);
}
