/**
 * The browser transport: JSON-RPC over one WebSocket to the engine's console endpoint,
 * one message per text frame. RpcSession (contract/) does ids, pending calls, timeouts
 * and event fan-out; this file adds the socket, authentication and reconnection.
 */
import type {
  EventData,
  EventName,
  MethodName,
  MethodParams,
  MethodResult,
} from '../../../contract/api.js';
import { RpcSession } from '../../../contract/rpc-client.js';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import { createLinkStatus, type ConsoleClient } from './client.js';
import { isUsableToken } from './token.js';

/** The API version subprotocol; the engine selects it when it speaks this contract. */
export const SUBPROTOCOL = 'branchsan.v1';
/** The access token travels as a second subprotocol: browsers cannot set headers on a WebSocket. */
export const TOKEN_SUBPROTOCOL_PREFIX = 'branchsan.token.';

/** A connection that stayed up this long resets the backoff to its shortest delay. */
const STABLE_MS = 5_000;

export interface WebSocketClientOptions {
  /** ws:// or wss:// URL of the console endpoint (see consoleSocketUrl). */
  url: string;
  /** The console access token, or null when the console was opened without one. */
  token: string | null;
  /** WebSocket constructor (default globalThis.WebSocket). */
  WebSocket?: typeof WebSocket;
  /** Reconnect delays (default 0.5 s doubling to 10 s, with jitter). */
  backoff?: BackoffOptions;
  /** Per-call timeout in ms (default RpcSession's 15 s). */
  callTimeoutMs?: number;
  /**
   * A link that brings no frame for this long is treated as dead and replaced, in ms
   * (default 15000; 0 disables). The engine pushes a heartbeat every second, so silence
   * means a half-open TCP connection, which the browser would otherwise notice only
   * after minutes.
   */
  idleTimeoutMs?: number;
  /**
   * Asked after a handshake fails before the socket opened: resolves true when the
   * console's web server answers. The browser hides the HTTP status of a refused
   * WebSocket, so "server up, socket refused" is how a refused token shows (default:
   * none, so refusals are reported as plain disconnects).
   */
  probeServer?: () => Promise<boolean>;
}

/** The endpoint beside the page: https pages use wss, http pages use ws. */
export function consoleSocketUrl(pageHref: string): string {
  const url = new URL('api', pageHref);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = '';
  url.hash = '';
  return url.href;
}

export function createWebSocketClient(opts: WebSocketClientOptions): ConsoleClient {
  const WS = opts.WebSocket ?? globalThis.WebSocket;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 15_000;
  const link = createLinkStatus('connecting');
  let socket: WebSocket | null = null;
  let attempt = 0;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let idleTimer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;

  const session = new RpcSession({
    send(text) {
      if (!socket || socket.readyState !== WS.OPEN) return false;
      socket.send(text);
      return true;
    },
    timeoutMs: opts.callTimeoutMs,
  });

  function connect(): void {
    retryTimer = undefined;
    if (closed) return;
    const token = opts.token;
    if (token === null || token === '') return giveUp('no-token');
    if (!isUsableToken(token)) return giveUp('token-refused');
    const ws = new WS(opts.url, [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + token]);
    let openedAt = 0;
    socket = ws;

    const drop = () => {
      if (socket !== ws) return;
      socket = null;
      clearTimeout(idleTimer);
      lost(openedAt);
    };
    const armIdleTimer = () => {
      if (idleTimeoutMs <= 0) return;
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => {
        // Do not wait for a closing handshake on a dead link: drop it and reconnect now.
        drop();
        ws.close(4000, 'no frame from the engine');
      }, idleTimeoutMs);
    };

    ws.addEventListener('open', () => {
      if (socket !== ws) return;
      openedAt = Date.now();
      link.setProblem(null);
      link.setState('connected');
      armIdleTimer();
    });
    ws.addEventListener('message', (ev: MessageEvent) => {
      if (socket !== ws) return;
      armIdleTimer();
      if (typeof ev.data === 'string') session.receive(ev.data);
    });
    // 'error' is always followed by 'close', which is where the link is declared lost.
    ws.addEventListener('close', drop);
  }

  /** The socket is gone: fail what waits on it, tell the UI, try again after a delay. */
  function lost(openedAt: number): void {
    session.failAll();
    link.setState('disconnected');
    if (openedAt === 0) void checkForRefusal();
    else if (Date.now() - openedAt >= STABLE_MS) attempt = 0;
    // While the token is refused, retry at the slowest pace: the engine logs every refusal.
    const delay = backoffDelay(link.problem ? Number.POSITIVE_INFINITY : attempt++, opts.backoff);
    retryTimer = setTimeout(connect, delay);
  }

  /** A problem no retry can fix: say so and stop (the user reopens the console's URL). */
  function giveUp(problem: 'no-token' | 'token-refused'): void {
    link.setProblem(problem);
    link.setState('disconnected');
  }

  async function checkForRefusal(): Promise<void> {
    if (!opts.probeServer) return;
    const serverUp = await opts.probeServer().catch(() => false);
    if (serverUp && !closed && link.state !== 'connected') link.setProblem('token-refused');
  }

  connect();

  return {
    transport: 'websocket',
    get state() {
      return link.state;
    },
    get problem() {
      return link.problem;
    },
    call<M extends MethodName>(method: M, params: MethodParams<M>) {
      return session.call(method, params) as Promise<MethodResult<M>>;
    },
    on<E extends EventName>(event: E, handler: (data: EventData<E>) => void) {
      return session.on(event, handler as (data: unknown) => void);
    },
    onState: link.onState,
    onProblem: link.onProblem,
    close() {
      if (closed) return;
      closed = true;
      clearTimeout(retryTimer);
      clearTimeout(idleTimer);
      const ws = socket;
      socket = null;
      ws?.close(1000, 'console closed');
      session.failAll();
      link.setState('disconnected');
      link.clear();
    },
  };
}
