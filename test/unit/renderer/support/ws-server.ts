/** A real WebSocket server on loopback that plays the engine's console endpoint. */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket as ServerSocket } from 'ws';

export interface TestEngineSocket {
  url: string;
  port: number;
  /** Every upgrade request that reached the server, accepted or not. */
  handshakes: IncomingMessage[];
  /** Accepted connections, oldest first. */
  sockets: ServerSocket[];
  /** Resolves with the n-th accepted connection (1-based). */
  connection(n: number): Promise<ServerSocket>;
  /** Resolves with the next text frame received on `socket`, parsed. */
  nextMessage(socket: ServerSocket): Promise<Record<string, unknown>>;
  /** Answers HTTP requests other than upgrades (the console page), like the engine. */
  http: Server;
  close(): Promise<void>;
}

export async function startTestEngineSocket(
  opts: { acceptToken?: (token: string | null) => boolean; port?: number } = {},
): Promise<TestEngineSocket> {
  const http = createServer((_req, res) => res.writeHead(200).end('console'));
  const handshakes: IncomingMessage[] = [];
  const sockets: ServerSocket[] = [];
  const waiters: { n: number; resolve: (s: ServerSocket) => void }[] = [];
  const wss = new WebSocketServer({
    server: http,
    path: '/api',
    handleProtocols: (protocols) => (protocols.has('branchsan.v1') ? 'branchsan.v1' : false),
    verifyClient: (info, done) => {
      handshakes.push(info.req);
      const header = String(info.req.headers['sec-websocket-protocol'] ?? '');
      const token =
        header
          .split(',')
          .map((p) => p.trim())
          .find((p) => p.startsWith('branchsan.token.'))
          ?.slice('branchsan.token.'.length) ?? null;
      const ok = opts.acceptToken ? opts.acceptToken(token) : true;
      if (ok) done(true);
      else done(false, 401, 'Unauthorized');
    },
  });
  wss.on('connection', (socket) => {
    sockets.push(socket);
    for (const w of waiters.filter((w) => w.n === sockets.length)) w.resolve(socket);
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(opts.port ?? 0, '127.0.0.1', resolve);
  });
  const port = (http.address() as AddressInfo).port;

  return {
    url: `ws://127.0.0.1:${port}/api`,
    port,
    handshakes,
    sockets,
    http,
    connection(n) {
      const existing = sockets[n - 1];
      if (existing) return Promise.resolve(existing);
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
    nextMessage(socket) {
      return new Promise((resolve) =>
        socket.once('message', (data, isBinary) => {
          if (isBinary) throw new Error('the client sent a binary frame');
          resolve(JSON.parse(String(data)) as Record<string, unknown>);
        }),
      );
    },
    async close() {
      for (const s of wss.clients) s.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

/** Polls `check` until it holds (or fails after `timeoutMs`). */
export async function until(check: () => boolean, timeoutMs = 3_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}
