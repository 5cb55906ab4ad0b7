/** A Unix-socket API client for the CLI: newline-delimited JSON-RPC. */
import fs from 'node:fs';
import net from 'node:net';
import type { MethodName, MethodParams, MethodResult } from '../../../contract/api.js';
import { DEFAULT_CALL_TIMEOUT_MS, RpcSession } from '../../../contract/rpc-client.js';
import { engineSocketPath } from '../service/instance-lock.js';
import { UserError } from '../util/errors.js';
import { directoryProblem, requireDataDir } from './command.js';

export interface SocketClient {
  call<M extends MethodName>(method: M, params: MethodParams<M>): Promise<MethodResult<M>>;
  session: RpcSession;
  /** Settles when the connection ends, whoever ended it. */
  readonly ended: Promise<void>;
  close(): void;
}

/** How long close() waits for queued requests to be handed to the engine's socket. */
const CLOSE_GRACE_MS = 1_000;

export async function connectSocket(
  path: string,
  timeoutMs = DEFAULT_CALL_TIMEOUT_MS,
): Promise<SocketClient> {
  const sock = net.connect(path);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', (err: NodeJS.ErrnoException) => {
      // connect() to a file or directory says ECONNREFUSED, as to a stopped engine's socket
      const other = notASocket(path);
      reject(
        new UserError(
          `Cannot reach the BranchSAN engine at ${path} (${err.code ?? err.message}${other ? `: it is ${other}, not a socket` : ''}).`,
          other === 'a directory'
            ? `Pass a data directory with --data ${path}, or the engine's API socket with --socket PATH (DIR/engine.sock).`
            : other
              ? "Pass the engine's API socket with --socket PATH (DIR/engine.sock), or its data directory with --data DIR."
              : err.code === 'EACCES'
                ? 'Run as root or as a member of the branchsan-admin group.'
                : 'Start it with `branchsan serve --data DIR` (or systemctl start branchsan), or pass --socket PATH.',
          'unavailable',
        ),
      );
    });
  });
  const session = new RpcSession({
    // a closed connection fails the call at once (not after its timeout)
    send: (text) => sock.writable && sock.write(text + '\n') !== undefined,
    timeoutMs,
    notConnectedHint:
      'The engine closed the connection: it may be stopping or restarting. Check `branchsan status`, then try again.',
  });
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      session.receive(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
    }
  });
  const ended = new Promise<void>((resolve) =>
    sock.on('close', () => {
      session.failAll();
      resolve();
    }),
  );
  sock.on('error', () => undefined);
  return {
    session,
    ended,
    call: (method, params) => session.call(method, params) as never,
    close: () => {
      // end() alone leaves the socket open until the engine closes its side: a hung
      // (stopped) engine never does, and the command would never exit after its
      // "did not answer" error. Send what is queued, then let go of the socket.
      sock.end(() => sock.destroy());
      setTimeout(() => sock.destroy(), CLOSE_GRACE_MS).unref();
    },
  };
}

/** What is at `path` when it is there and not a socket ('a directory', 'a file'), else null. */
function notASocket(path: string): string | null {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(path, { throwIfNoEntry: false });
  } catch {
    return null; // a directory above it this user may not enter: connect's error says so
  }
  if (!st || st.isSocket()) return null;
  return st.isDirectory() ? 'a directory' : st.isFile() ? 'a file' : 'a special file';
}

/**
 * The API socket a command talks to: --socket PATH, or that of the engine running on
 * --data DIR. Neither, or both: a usage error naming the command.
 */
export function engineSocket(command: string, data?: string, socket?: string): string {
  // which of the two was meant is not known: the other may be another engine
  if (data !== undefined && socket !== undefined)
    throw new UserError(
      `${command}: give --data DIR or --socket PATH, not both: they may name two engines.`,
      `--data ${data} asks the engine whose data directory that is (at its usual socket); --socket ${socket} asks the one listening there.`,
      'usage',
    );
  // --data read as serve reads it (`--data=~/lab`: no shell expands that ~)
  const dir = data ? requireDataDir(command, data) : undefined;
  // a mistyped --data names no engine: say that, not 'cannot reach … engine.sock (ENOENT)'
  const problem = dir === undefined ? null : directoryProblem(dir);
  if (problem)
    throw new UserError(
      `${command}: the data directory ${dir} ${problem}, so no engine runs on it.`,
      'Pass the directory the engine runs with (the systemd service uses /var/lib/branchsan), or start one on it with `branchsan serve --data DIR`.',
    );
  const sock = socket ?? (dir ? engineSocketPath(dir) : undefined);
  if (!sock)
    throw new UserError(
      `${command}: say which engine: --data DIR or --socket PATH.`,
      undefined,
      'usage',
    );
  return sock;
}
