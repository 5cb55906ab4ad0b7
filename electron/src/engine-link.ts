/**
 * The link from Electron main to the engine's management socket: owner check, line
 * framing, JSON-RPC through the shared RpcSession, and a connecting → connected →
 * disconnected state machine that reconnects on bounded, jittered backoff.
 * Electron-free, so it is tested under plain Node against real Unix sockets.
 */
import { createConnection, type Socket } from 'node:net';
import {
  ApiError,
  ErrorCode,
  type ApiClient,
  type ConnectionState,
  type EventData,
  type EventName,
  type MethodName,
  type MethodParams,
  type MethodResult,
} from '../../contract/api.js';
import { RpcSession } from '../../contract/rpc-client.js';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import { LineFramer } from './line-framer.js';
import {
  SocketTrustError,
  sameSocket,
  verifySocketOwner,
  type SocketIdentity,
} from './socket-owner.js';

/** Why the link is not connected, worded for the operator. */
export interface LinkError {
  /** errno (ENOENT, ECONNREFUSED, EACCES, ...), UNTRUSTED, ELINETOOLONG, EHANDSHAKE, ... */
  code: string;
  message: string;
}

export interface LinkStatus {
  state: ConnectionState;
  /** The last failure, kept while not connected; cleared on connect. */
  error?: LinkError;
  /** While disconnected: when the next attempt starts, in ms. */
  retryInMs?: number;
  /** Failed attempts since the last successful connection. */
  attempt: number;
  /** close() ended the link on purpose (the app quits): no failure, no retry. */
  closed?: true;
}

export interface EngineLinkOptions {
  socketPath: string;
  backoff?: Partial<BackoffOptions>;
  /** Longest accepted line from the engine, in characters (default 8 Mi). */
  maxLineLength?: number;
  /** Per-call timeout in ms (default 15000). */
  callTimeoutMs?: number;
  /** Gives up on a connect that hangs, in ms (default 5000). */
  connectTimeoutMs?: number;
  /** The trust check run before every connect (default: verifySocketOwner). */
  verify?: (path: string) => SocketIdentity;
  /** Runs after connecting and before `connected` is announced; throwing drops the link. */
  handshake?: (call: (method: string, params: unknown) => Promise<unknown>) => Promise<void>;
  /** Source of jitter (tests pin it). */
  random?: () => number;
  /**
   * An event or state listener threw (default: logged to stderr); the link carries on,
   * and the other listeners hear of it all the same.
   */
  onListenerError?: (err: unknown, event: string) => void;
}

type StateHandler = (state: ConnectionState, status: LinkStatus) => void;

export class EngineLink implements ApiClient {
  private status: LinkStatus = { state: 'disconnected', attempt: 0 };
  private socket: Socket | undefined;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private started = false;
  private readonly session: RpcSession;
  private readonly framer: LineFramer;
  private readonly backoff: BackoffOptions;
  private readonly stateHandlers = new Set<StateHandler>();

  constructor(private readonly opts: EngineLinkOptions) {
    this.backoff = { ...DEFAULT_BACKOFF, ...opts.backoff };
    this.framer = new LineFramer(opts.maxLineLength ?? 8 * 1024 * 1024);
    this.session = new RpcSession({
      send: (text) => this.write(text),
      timeoutMs: opts.callTimeoutMs ?? 15_000,
      ...(opts.onListenerError ? { onListenerError: opts.onListenerError } : {}),
    });
  }

  get state(): ConnectionState {
    return this.status.state;
  }

  /** A copy of the current state, last error and retry schedule. */
  get info(): LinkStatus {
    return { ...this.status };
  }

  get socketPath(): string {
    return this.opts.socketPath;
  }

  /** Starts connecting; idempotent. */
  start(): void {
    if (this.started || this.closed) return;
    this.started = true;
    this.attempt();
  }

  /** Skips the backoff wait (e.g. right after the engine was started). */
  reconnectNow(): void {
    if (this.closed || !this.started || this.status.state !== 'disconnected') return;
    clearTimeout(this.retryTimer);
    this.attempt();
  }

  call<M extends MethodName>(method: M, params: MethodParams<M>): Promise<MethodResult<M>> {
    return this.callRaw(method, params) as Promise<MethodResult<M>>;
  }

  /** Calls without compile-time typing (for main's IPC, which validated the name already). */
  callRaw(method: string, params: unknown): Promise<unknown> {
    if (this.status.state !== 'connected') return Promise.reject(notConnected(this.status.error));
    return this.session.call(method, params);
  }

  on<E extends EventName>(event: E, handler: (data: EventData<E>) => void): () => void {
    return this.session.on(event, handler as (data: unknown) => void);
  }

  onState(handler: StateHandler): () => void {
    this.stateHandlers.add(handler);
    return () => this.stateHandlers.delete(handler);
  }

  /** Disconnects for good: no more retries; pending calls fail. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.socket?.destroy();
    this.socket = undefined;
    this.session.failAll(notConnected());
    this.setStatus({ state: 'disconnected', attempt: this.status.attempt, closed: true });
  }

  private attempt(): void {
    if (this.closed) return;
    this.setStatus({ state: 'connecting', attempt: this.status.attempt, error: this.status.error });
    const path = this.opts.socketPath;
    let identity: SocketIdentity;
    try {
      identity = (this.opts.verify ?? verifySocketOwner)(path);
    } catch (err) {
      this.scheduleRetry(describeFailure(err, path));
      return;
    }
    const socket = createConnection({ path });
    this.socket = socket;
    socket.setEncoding('utf8');
    let failure: LinkError | undefined;
    const connectTimer = setTimeout(() => {
      socket.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' }));
    }, this.opts.connectTimeoutMs ?? 5_000);
    socket.once('connect', () => {
      clearTimeout(connectTimer);
      if (!sameSocket(path, identity)) {
        failure = {
          code: 'UNTRUSTED',
          message: `the engine socket ${path} was replaced while connecting: refusing to talk to it`,
        };
        socket.destroy();
        return;
      }
      void this.handshake(socket).catch((err: unknown) => {
        failure = {
          code: 'EHANDSHAKE',
          message: `the engine at ${path} did not complete the handshake: ${errMessage(err)}`,
        };
        socket.destroy();
      });
    });
    socket.on('data', (chunk: string) => this.receive(socket, chunk, (e) => (failure = e)));
    socket.on('error', (err) => {
      failure ??= describeFailure(err, path);
    });
    socket.once('close', () => {
      clearTimeout(connectTimer);
      this.onClosed(socket, failure);
    });
  }

  private async handshake(socket: Socket): Promise<void> {
    if (this.opts.handshake) {
      await this.opts.handshake((method, params) => this.session.call(method, params));
    }
    if (this.socket !== socket || this.closed) return;
    this.setStatus({ state: 'connected', attempt: 0 });
  }

  private receive(socket: Socket, chunk: string, fail: (e: LinkError) => void): void {
    if (this.socket !== socket) return;
    let lines: string[];
    try {
      lines = this.framer.push(chunk);
    } catch (err) {
      fail({ code: 'ELINETOOLONG', message: errMessage(err) });
      socket.destroy();
      return;
    }
    for (const line of lines) this.session.receive(line);
  }

  private onClosed(socket: Socket, failure: LinkError | undefined): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    this.framer.reset();
    const lost = failure ?? {
      code: 'ECONNRESET',
      message: `the engine closed the connection on ${this.opts.socketPath}`,
    };
    this.session.failAll(notConnected(lost));
    if (this.closed) return;
    this.scheduleRetry(lost);
  }

  private scheduleRetry(error: LinkError): void {
    if (this.closed) return;
    const attempt = this.status.attempt;
    const retryInMs = backoffDelay(attempt, this.backoff, this.opts.random);
    this.setStatus({ state: 'disconnected', error, retryInMs, attempt: attempt + 1 });
    this.retryTimer = setTimeout(() => this.attempt(), retryInMs);
  }

  private write(text: string): boolean {
    const s = this.socket;
    if (!s || s.destroyed || !s.writable) return false;
    s.write(text + '\n'); // false only means "buffered": the message is still on its way
    return true;
  }

  private setStatus(next: LinkStatus): void {
    const changed = next.state !== this.status.state;
    this.status = next;
    if (!changed && next.state !== 'disconnected') return;
    // A handler that throws must not leave the caller half done (onClosed before its
    // retry is scheduled: the app would never reconnect), nor starve the others.
    for (const h of [...this.stateHandlers]) {
      try {
        h(next.state, { ...next });
      } catch (err) {
        (this.opts.onListenerError ?? reportListenerError)(err, 'the link state');
      }
    }
  }
}

/** Turns a socket or trust failure into a message that says what to do. */
export function describeFailure(err: unknown, path: string): LinkError {
  if (err instanceof SocketTrustError) return { code: 'UNTRUSTED', message: err.message };
  const code = (err as NodeJS.ErrnoException | undefined)?.code ?? 'EUNKNOWN';
  switch (code) {
    case 'ENOENT':
      return { code, message: `no engine socket at ${path}: the BranchSAN engine is not running` };
    case 'ECONNREFUSED':
      return { code, message: `nothing listens on ${path}: the BranchSAN engine is not running` };
    case 'EACCES':
    case 'EPERM':
      return {
        code,
        message:
          `you may not open ${path}: add your account to the branchsan-admin group ` +
          '(sudo usermod -aG branchsan-admin $USER) and log in again',
      };
    default:
      return { code, message: `cannot reach the engine at ${path}: ${errMessage(err)}` };
  }
}

function notConnected(why?: LinkError): ApiError {
  return new ApiError(
    ErrorCode.Unavailable,
    why
      ? `Not connected to the BranchSAN engine: ${why.message}.`
      : 'Not connected to the BranchSAN engine.',
    { hint: 'The engine service may be stopped or restarting; BranchSAN reconnects by itself.' },
  );
}

function reportListenerError(err: unknown, event: string): void {
  console.error(`BranchSAN: a listener of ${event} failed:`, err);
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
