/**
 * A small stand-in for the engine's management socket: JSON-RPC 2.0, one object per
 * line, over a real Unix socket. It is outside the thing under test (the link).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';

export type Handler = (params: unknown, socket: Socket) => unknown | typeof NO_REPLY;
export const NO_REPLY = Symbol('no reply');

export class FakeEngine {
  server: Server | undefined;
  readonly sockets = new Set<Socket>();
  connections = 0;
  readonly received: { method: string; params: unknown }[] = [];
  readonly handlers = new Map<string, Handler>([
    [
      'system.status',
      () => ({
        version: '0.0.0-fake',
        apiVersion: 1,
        nodeId: 'fake',
        hostname: 'fake',
        pid: process.pid,
        startedAt: Date.now(),
        uptimeSec: 1,
        dataDir: '/nowhere',
        dbSchemaVersion: 1,
      }),
    ],
    ['test.echo', (params) => params],
    ['test.hang', () => NO_REPLY],
  ]);

  constructor(readonly path: string) {}

  async start(): Promise<void> {
    rmSync(this.path, { force: true });
    const server = createServer((socket) => this.accept(socket));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
  }

  /** Stops listening and drops every client (what an engine crash looks like). */
  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(this.path, { force: true });
  }

  /** Sends a notification to every client. */
  emit(name: string, data: unknown): void {
    this.broadcastRaw(
      JSON.stringify({ jsonrpc: '2.0', method: 'event', params: { name, data } }) + '\n',
    );
  }

  broadcastRaw(text: string): void {
    for (const s of this.sockets) s.write(text);
  }

  /** Resolves once `n` connections were accepted in total. */
  async waitForConnections(n: number, timeoutMs = 5000): Promise<void> {
    const until = Date.now() + timeoutMs;
    while (this.connections < n) {
      if (Date.now() > until) throw new Error(`only ${this.connections} of ${n} connections`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  private accept(socket: Socket): void {
    this.connections++;
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => undefined);
    socket.setEncoding('utf8');
    let buf = '';
    socket.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.answer(socket, line);
      }
    });
  }

  private answer(socket: Socket, line: string): void {
    const req = JSON.parse(line) as { id: number; method: string; params: unknown };
    this.received.push({ method: req.method, params: req.params });
    const handler = this.handlers.get(req.method);
    if (!handler) {
      socket.write(
        JSON.stringify({
          jsonrpc: '2.0',
          id: req.id,
          error: { code: -32601, message: `no method ${req.method}` },
        }) + '\n',
      );
      return;
    }
    const result = handler(req.params, socket);
    if (result === NO_REPLY) return;
    socket.write(JSON.stringify({ jsonrpc: '2.0', id: req.id, result }) + '\n');
  }
}

/** Polls until `predicate` holds. */
export async function until(
  predicate: () => boolean,
  timeoutMs = 5000,
  what = 'condition',
): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
