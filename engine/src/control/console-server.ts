/**
 * The local web console: the renderer bundle as static files and the API over a
 * WebSocket at /api. Binds to 127.0.0.1 by default. The WebSocket upgrade needs the
 * per-install access token, sent as a subprotocol ("branchsan.token.<token>") so it
 * never appears in a URL the server logs; cross-origin upgrades are refused.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { timingSafeEqual } from 'node:crypto';
import { WebSocketServer, type WebSocket } from 'ws';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { MAX_MESSAGE_BYTES, type RpcDispatcher } from './rpc.js';
import { MAX_CLIENT_BACKLOG, type SessionHub } from './sessions.js';

export const WS_PROTOCOL = 'branchsan.v1';
const TOKEN_PREFIX = 'branchsan.token.';

export interface ConsoleServerOptions {
  host: string;
  port: number;
  /** Directory holding the built renderer (index.html + assets). */
  root: string;
  token: string;
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
  '.map': 'application/json',
  '.woff2': 'font/woff2',
};

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

  constructor(
    private readonly opts: ConsoleServerOptions,
    private readonly rpc: RpcDispatcher,
    private readonly hub: SessionHub,
    private readonly log: Logger,
  ) {}

  get port(): number {
    return this.boundPort;
  }

  /** The URL a person opens, token included. */
  get url(): string {
    const host = this.opts.host.includes(':') ? `[${this.opts.host}]` : this.opts.host;
    return `http://${host}:${this.boundPort}/?token=${this.opts.token}`;
  }

  async listen(): Promise<void> {
    const wss = new WebSocketServer({
      noServer: true,
      maxPayload: MAX_MESSAGE_BYTES,
      handleProtocols: (protocols) => (protocols.has(WS_PROTOCOL) ? WS_PROTOCOL : false),
    });
    const server = http.createServer((req, res) => this.serveStatic(req, res));
    server.on('upgrade', (req, socket, head) => {
      const refusal = this.checkUpgrade(req);
      if (refusal) {
        socket.end(`HTTP/1.1 ${refusal}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => this.accept(ws, req));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.opts.port, this.opts.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      throw new UserError(
        `Cannot start the web console on ${this.opts.host}:${this.opts.port}: ${err.code ?? err.message}`,
        err.code === 'EADDRINUSE'
          ? 'Another program uses that port: pass --console-port with a free port (0 picks one).'
          : 'Check the --console-host address.',
      );
    });
    server.on('error', (err) => this.log.error('console server error', { err }));
    this.boundPort = (server.address() as { port: number }).port;
    this.server = server;
    this.wss = wss;
  }

  async close(): Promise<void> {
    for (const ws of this.wss?.clients ?? []) ws.terminate();
    this.wss?.close();
    const server = this.server;
    this.server = undefined;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }

  /** Returns an HTTP status line when the upgrade must be refused. */
  private checkUpgrade(req: http.IncomingMessage): string | null {
    const url = new URL(req.url ?? '/', 'http://console');
    if (url.pathname !== '/api') return '404 Not Found';
    const origin = req.headers.origin;
    if (
      origin !== undefined &&
      req.headers.host !== undefined &&
      new URL(origin).host !== req.headers.host
    ) {
      return '403 Forbidden';
    }
    const offered = String(req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim());
    const token = offered.find((p) => p.startsWith(TOKEN_PREFIX))?.slice(TOKEN_PREFIX.length);
    if (!token || !sameSecret(token, this.opts.token)) return '401 Unauthorized';
    return null;
  }

  private accept(ws: WebSocket, req: http.IncomingMessage): void {
    const id = this.hub.newId();
    const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
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
      const text = isBinary ? '' : data.toString();
      this.rpc
        .handle(text, { transport: 'console', peer })
        .then((reply) => session.send(reply))
        .catch((err) => this.log.error('console reply failed', { err }));
    });
    ws.on('error', () => undefined);
    ws.on('close', () => this.hub.remove(session));
  }

  private serveStatic(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', ...SECURITY_HEADERS }).end();
      return;
    }
    const url = new URL(req.url ?? '/', 'http://console');
    let rel: string;
    try {
      rel = decodeURIComponent(url.pathname);
    } catch {
      res.writeHead(400, SECURITY_HEADERS).end();
      return;
    }
    if (rel.endsWith('/')) rel += 'index.html';
    const root = path.resolve(this.opts.root);
    const file = path.resolve(root, '.' + rel);
    if (!file.startsWith(root + path.sep) || rel.includes('\0')) {
      res.writeHead(404, SECURITY_HEADERS).end();
      return;
    }
    fs.readFile(file, (err, body) => {
      if (err) {
        const missingBundle = rel === '/index.html';
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', ...SECURITY_HEADERS });
        res.end(
          missingBundle
            ? 'The console bundle is not built. Run `npm run build` in the BranchSAN checkout, then reload.\n'
            : 'Not found\n',
        );
        return;
      }
      const type = CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream';
      res.writeHead(200, {
        'Content-Type': type,
        'Content-Length': body.length,
        ...SECURITY_HEADERS,
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  }
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
