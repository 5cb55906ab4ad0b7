/**
 * The management API on a local Unix socket: newline-delimited JSON-RPC, mode 0660
 * (root and the admin group). Used by the Electron shell, the CLI and tests.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ErrorCode } from '../../../contract/api.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { MAX_MESSAGE_BYTES, ID_PREFIX_CHARS, oversizeRefusal, type RpcDispatcher } from './rpc.js';
import { MAX_CLIENT_BACKLOG, type SessionHub } from './sessions.js';

export interface SocketServerOptions {
  path: string;
  /** File mode of the socket (default 0o660). */
  mode?: number;
  /** Group that may use the socket (gid); root always can. */
  gid?: number;
  /**
   * Names the user at the other end of a connection (`root@local`) for the audit
   * trail; null, or no namer: the connection is named by its number (`local#4`).
   */
  namePeer?: (sock: net.Socket) => string | null;
}

export class SocketServer {
  private server?: net.Server;
  /** Open connections: close() ends them, also those the hub was not asked to close. */
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly opts: SocketServerOptions,
    private readonly rpc: RpcDispatcher,
    private readonly hub: SessionHub,
    private readonly log: Logger,
  ) {}

  async listen(): Promise<void> {
    await clearStaleSocket(this.opts.path);
    // Half-open: a client may send its requests and end its side (`nc -N`, socat); its
    // replies still go out, and the engine ends the connection once they have.
    const server = net.createServer({ allowHalfOpen: true }, (sock) => this.accept(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // umask-safe: create with no access, then chmod to the intended mode. The umask is
      // the whole process's (the database's worker threads create files too): it is put
      // back as soon as listen() returns, which is once the socket is bound (bind is
      // synchronous; an error is only reported later), whether or not that worked.
      const oldMask = process.umask(0o177);
      try {
        server.listen(this.opts.path, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(oldMask);
      }
    }).catch((err: NodeJS.ErrnoException) => {
      // libuv reports a missing directory as EACCES: say which it is
      const dir = path.dirname(this.opts.path);
      if (!fs.existsSync(dir)) {
        throw new UserError(
          `Cannot listen on the API socket ${this.opts.path}: the directory ${dir} does not exist.`,
          'Create that directory, or pass --socket PATH in one that exists.',
        );
      }
      throw new UserError(
        `Cannot listen on the API socket ${this.opts.path}: ${err.message}`,
        'Check that its directory is writable by the engine, or pass --socket PATH.',
      );
    });
    try {
      fs.chmodSync(this.opts.path, this.opts.mode ?? 0o660);
      if (this.opts.gid !== undefined)
        fs.chownSync(this.opts.path, process.getuid?.() ?? 0, this.opts.gid);
    } catch (err) {
      // not left listening: nothing would close it, and the process would not exit
      server.close();
      throw new UserError(
        `Cannot set the access of the API socket ${this.opts.path}: ${(err as Error).message}`,
        'Check that its directory is on a local file system the engine may change.',
      );
    }
    server.on('error', (err) => this.log.error('API socket error', { err }));
    this.server = server;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    // server.close() waits for every connection to end: one made after the engine told
    // its clients it is stopping (hub.closeAll) would keep the stop waiting for ever
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const sock of this.sockets) sock.destroy();
    await closed;
    fs.rmSync(this.opts.path, { force: true });
  }

  private accept(sock: net.Socket): void {
    this.sockets.add(sock);
    sock.once('close', () => this.sockets.delete(sock));
    const id = this.hub.newId();
    const peer = `unix#${id}`;
    const actor = this.opts.namePeer?.(sock) ?? `local#${id}`;
    let buffered = '';
    // the bytes `buffered` came as: the limit is in bytes, and a character of UTF-8 is
    // up to 3 of them for each of its UTF-16 units that `length` counts
    let bufferedBytes = 0;
    let discarding = false; // inside an over-long line: drop until its newline
    let pending = 0; // requests not answered yet
    let ended = false; // the client sends nothing more
    let refusing = false; // an answer did not fit: the connection is being closed
    const endIfDone = () => {
      if (ended && pending === 0 && sock.writable) sock.end();
    };
    const session = {
      id,
      kind: 'socket' as const,
      peer,
      send: (text: string) => {
        if (sock.destroyed || !sock.writable) return true;
        if (sock.writableLength > MAX_CLIENT_BACKLOG) return false;
        sock.write(text + '\n');
        return true;
      },
      close: (reason: string) => {
        this.log.debug('closing API client', { peer, reason });
        sock.destroy();
      },
    };
    this.hub.add(session);
    // An answer that does not fit the backlog is not dropped without a word (its caller
    // would wait for it for ever, or until its timeout and then read that the engine may
    // be stuck): that call is answered with why, and the connection is closed.
    const overflow = (request: string, reply: string) => {
      if (refusing) return;
      refusing = true;
      const unread = sock.writableLength;
      this.log.warn('closing API client: it is not reading its answers', { peer, unread });
      sock.write(JSON.stringify(backlogRefusal(request, reply, unread)) + '\n');
      sock.end();
      // a client that reads nothing more does not hold its backlog for ever
      const timer = setTimeout(() => sock.destroy(), CLOSE_GRACE_MS);
      timer.unref();
      sock.once('close', () => clearTimeout(timer));
    };
    // A request line past the limit is answered at once, under its id when the line's
    // start names one (its caller fails now rather than at its timeout); the rest of
    // the line is dropped as it arrives.
    const tooLarge = (start: string) => {
      if (refusing) return;
      const reply = JSON.stringify(oversizeRefusal(start, null));
      if (!session.send(reply)) overflow(start, reply);
    };
    const respond = (line: string) => {
      if (refusing) return;
      pending++;
      void this.respond(line, session, actor, overflow).finally(() => {
        pending--;
        endIfDone();
      });
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buffered += chunk;
      bufferedBytes += Buffer.byteLength(chunk);
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        bufferedBytes -= Buffer.byteLength(line) + 1;
        if (discarding) {
          discarding = false;
          continue;
        }
        if (line.trim()) respond(line);
      }
      if (bufferedBytes > MAX_MESSAGE_BYTES) {
        if (!discarding) tooLarge(buffered.slice(0, ID_PREFIX_CHARS));
        buffered = '';
        bufferedBytes = 0;
        discarding = true;
      }
    });
    sock.on('end', () => {
      ended = true;
      // a last request without its newline (`printf '{…}' | nc -NU …`)
      if (!discarding && buffered.trim()) respond(buffered);
      buffered = '';
      bufferedBytes = 0;
      endIfDone();
    });
    sock.on('error', () => undefined); // a client vanishing is not an engine problem
    sock.on('close', () => this.hub.remove(session));
  }

  private respond(
    line: string,
    session: { peer: string; send(t: string): boolean },
    actor: string,
    overflow: (request: string, reply: string) => void,
  ): Promise<unknown> {
    return this.rpc
      .handle(line, { transport: 'socket', peer: session.peer, actor })
      .then((reply) => {
        if (!session.send(reply)) overflow(line, reply);
      })
      .catch((err) => this.log.error('API reply failed', { err }));
  }
}

/** How long a closing client has to read what it was sent (as ws waits for a close). */
const CLOSE_GRACE_MS = 30_000;

/** The answer sent instead of one that did not fit the client's backlog. */
function backlogRefusal(request: string, reply: string, unread: number): object {
  const id = fieldOf(reply, 'id') ?? null;
  const method = fieldOf(request, 'method');
  const what = typeof method === 'string' ? method.slice(0, 100) : 'a call';
  const mib = MAX_CLIENT_BACKLOG / (1 << 20);
  return {
    jsonrpc: '2.0',
    id,
    error: {
      code: ErrorCode.Unavailable,
      message:
        `The engine closed this connection: it was not reading its answers, and the answer to ${what} ` +
        `(${Buffer.byteLength(reply)} bytes) did not fit the ${mib} MiB the engine holds for a client (${unread} bytes were unread).`,
      data: {
        hint: 'Read each answer before sending many more requests (or ask for less at a time), then connect again.',
      },
    },
  };
}

/** Removes a socket file nobody listens on; refuses if a live engine answers on it. */
async function clearStaleSocket(file: string): Promise<void> {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch {
    return;
  }
  if (!st.isSocket()) {
    throw new UserError(
      `${file} exists and is not a socket.`,
      'Remove it or choose another --socket path.',
    );
  }
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(file);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (live) {
    throw new UserError(
      `Another BranchSAN engine is already serving the API socket ${file}.`,
      'Stop it first, or start this engine with a different --socket path.',
      'already-running',
    );
  }
  fs.rmSync(file, { force: true });
}

function fieldOf(json: string, key: string): unknown {
  try {
    const v: unknown = JSON.parse(json);
    return v && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
  } catch {
    return undefined;
  }
}
