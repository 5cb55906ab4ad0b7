/**
 * The management API on a local Unix socket: newline-delimited JSON-RPC, mode 0660
 * (root and the admin group). Used by the Electron shell, the CLI and tests.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { MAX_MESSAGE_BYTES, type RpcDispatcher } from './rpc.js';
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
      // umask-safe: create with no access, then chmod to the intended mode
      const oldMask = process.umask(0o177);
      server.listen(this.opts.path, () => {
        process.umask(oldMask);
        server.off('error', reject);
        resolve();
      });
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
    await new Promise<void>((resolve) => server.close(() => resolve()));
    fs.rmSync(this.opts.path, { force: true });
  }

  private accept(sock: net.Socket): void {
    const id = this.hub.newId();
    const peer = `unix#${id}`;
    const actor = this.opts.namePeer?.(sock) ?? `local#${id}`;
    let buffered = '';
    let discarding = false; // inside an over-long line: drop until its newline
    let pending = 0; // requests not answered yet
    let ended = false; // the client sends nothing more
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
    const respond = (line: string) => {
      pending++;
      void this.respond(line, session, actor).finally(() => {
        pending--;
        endIfDone();
      });
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (discarding) {
          discarding = false;
          continue;
        }
        if (line.trim()) respond(line);
      }
      if (buffered.length > MAX_MESSAGE_BYTES) {
        buffered = '';
        if (!discarding) respond('x'.repeat(MAX_MESSAGE_BYTES + 1));
        discarding = true;
      }
    });
    sock.on('end', () => {
      ended = true;
      // a last request without its newline (`printf '{…}' | nc -NU …`)
      if (!discarding && buffered.trim()) respond(buffered);
      buffered = '';
      endIfDone();
    });
    sock.on('error', () => undefined); // a client vanishing is not an engine problem
    sock.on('close', () => this.hub.remove(session));
  }

  private respond(
    line: string,
    session: { peer: string; send(t: string): boolean },
    actor: string,
  ): Promise<unknown> {
    return this.rpc
      .handle(line, { transport: 'socket', peer: session.peer, actor })
      .then((reply) => session.send(reply))
      .catch((err) => this.log.error('API reply failed', { err }));
  }
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
