/**
 * The browser transport: JSON-RPC over one WebSocket to the engine's console endpoint,
 * one message per text frame. RpcSession (contract/) does ids, pending calls, timeouts
 * and event fan-out; this file adds the socket, the sign-in state and reconnection.
 *
 * The engine accepts the upgrade only with a session cookie, which the browser sends
 * by itself, and that session's page key, offered as a subprotocol (session.ts). A browser hides why a handshake failed, so after every failure or loss
 * the client asks /api/session: signed out (or no password yet) stops the retries and
 * the UI shows the sign-in page; a refusal in the engine's own words (a Host it does not
 * serve, say) stops them too and is shown as it is; anything else is a link problem and
 * is retried.
 */
import type {
  EventData,
  EventName,
  MethodName,
  MethodParams,
  MethodResult,
} from '../../../contract/api.js';
import { CONSOLE_SUBPROTOCOL, PAGE_KEY_PROTOCOL } from '../../../contract/errors.js';
import { RpcSession } from '../../../contract/rpc-client.js';
import { backoffDelay, type BackoffOptions } from './backoff.js';
import {
  createLinkStatus,
  type ConsoleAuthApi,
  type ConsoleClient,
  type Refusal,
} from './client.js';
import { SignInError, type SessionApi, type SessionState } from './session.js';

/**
 * Close code the engine uses when the socket's session ended (sign-out, expiry, new
 * password). The client does not trust the code alone: it asks /api/session after any loss.
 */
export const CLOSE_SESSION_ENDED = 4401;

/** A connection that stayed up this long resets the backoff to its shortest delay. */
const STABLE_MS = 5_000;

/** The longest gap between keep-alive calls of a watched page (a third of it when the
 * session's idle timeout is shorter than three times this). */
const KEEP_ALIVE_MAX_MS = 5 * 60_000;

/** Whether someone can see the page: a hidden tab or minimised window is not watched. */
function documentVisible(): boolean {
  return typeof document === 'undefined' || document.visibilityState !== 'hidden';
}

export interface WebSocketClientOptions {
  /** ws:// or wss:// URL of the console endpoint (see consoleSocketUrl). */
  url: string;
  /** WebSocket constructor (default globalThis.WebSocket). */
  WebSocket?: typeof WebSocket;
  /**
   * The sign-in endpoints. Without them the client just connects and retries (tests of
   * the framing); with them it checks the session first and offers `auth`.
   */
  session?: SessionApi;
  /** The first-run setup token from the page URL, if any. */
  setupToken?: string | null;
  /** Reconnect delays (default 0.5 s doubling to 10 s, with jitter). */
  backoff?: BackoffOptions;
  /** Per-call timeout in ms (default RpcSession's 15 s). */
  callTimeoutMs?: number;
  /**
   * A link that brings no frame for this long is treated as dead and replaced, in ms
   * (default 15000; 0 disables). The engine pushes a heartbeat every second, so silence
   * means a half-open TCP connection, which the browser would otherwise notice only
   * after minutes. A handshake unanswered for this long is given up the same way: a host
   * that takes the connection and says nothing would keep it waiting as long.
   */
  idleTimeoutMs?: number;
  /**
   * Whether the page is being watched (default: the document is not hidden). Only the
   * engine's pushes reach a dashboard nobody clicks in, and they are no use of the
   * session: while this says yes, a cheap call every third of the session's idle
   * timeout (at most every 5 min) keeps it. A hidden or closed page keeps nothing,
   * so its session still ends when idle; the engine's absolute limit always holds.
   */
  pageVisible?: () => boolean;
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
  let keepAliveTimer: ReturnType<typeof setInterval> | undefined;
  /** From the last session check: how often a watched page keeps its session. */
  let keepAliveMs = 0;
  const pageVisible = opts.pageVisible ?? documentVisible;
  let closed = false;
  /** Bumped by resume(): a session check that started before it no longer decides. */
  let epoch = 0;
  let refusal: Refusal | null = null;

  const session = new RpcSession({
    send(text) {
      if (!socket || socket.readyState !== WS.OPEN) return false;
      socket.send(text);
      return true;
    },
    timeoutMs: opts.callTimeoutMs,
  });

  /**
   * Starts (or restarts) the link: ask for the session first, then open the socket.
   * Right after a sign-in the sign-in page stays until the engine confirms the session:
   * a browser that did not keep the session cookie gets an error that says so (thrown
   * as SignInError), not the sign-in page again without a word. Asked again while the
   * page shows why it cannot connect (refresh()), that page too stays until the answer:
   * nothing changed must not read as "Connecting…" and back (and lose what it showed).
   */
  async function begin(afterSignIn = false): Promise<void> {
    const mine = ++epoch;
    clearTimeout(retryTimer);
    retryTimer = undefined;
    const waitForAnswer = afterSignIn || link.problem !== null;
    if (!waitForAnswer) setConnecting();
    let state: SessionState | null = null;
    try {
      state = opts.session ? await opts.session.check() : null;
    } catch (err) {
      if (closed || mine !== epoch) return;
      return refused(err);
    }
    if (closed || mine !== epoch) return;
    if (state && !state.authenticated) {
      needSignIn(state);
      if (afterSignIn) throw cookieNotKept();
      return;
    }
    if (waitForAnswer) setConnecting();
    if (state?.idleTimeoutSec)
      keepAliveMs = Math.min(KEEP_ALIVE_MAX_MS, Math.max(1000, (state.idleTimeoutSec * 1000) / 3));
    if (!socket) connect();
  }

  function setConnecting(): void {
    setProblem(null);
    if (link.state !== 'connected') link.setState('connecting');
  }

  /** The engine took the password, yet the next request carried no session. */
  function cookieNotKept(): SignInError {
    return new SignInError(
      'The password was right, but this browser did not keep the console’s session cookie, so it is not signed in.',
      `Allow cookies for ${new URL(opts.url).host} in the browser’s settings (the console keeps its sign-in in one), then sign in again.`,
      200,
    );
  }

  /** While connected: a watched page uses its session now and then (see pageVisible). */
  function startKeepAlive(): void {
    stopKeepAlive();
    if (keepAliveMs <= 0) return;
    keepAliveTimer = setInterval(() => {
      if (link.state !== 'connected' || !pageVisible()) return;
      // any call counts as use; its answer does not matter (a lost link shows elsewhere)
      session.call('system.status', {}).catch(() => undefined);
    }, keepAliveMs);
  }

  function stopKeepAlive(): void {
    clearInterval(keepAliveTimer);
    keepAliveTimer = undefined;
  }

  function setProblem(problem: Parameters<typeof link.setProblem>[0], why: Refusal | null = null) {
    const reworded = why?.message !== refusal?.message || why?.hint !== refusal?.hint;
    refusal = why;
    link.setProblem(problem, reworded);
  }

  /** The engine refused in its own words: no retry changes that (refresh() asks again). */
  function refused(err: unknown): void {
    clearTimeout(retryTimer);
    retryTimer = undefined;
    const why =
      err instanceof SignInError
        ? { message: err.message, ...(err.hint ? { hint: err.hint } : {}) }
        : { message: 'The engine’s answer could not be read.', hint: 'Reload the page.' };
    setProblem('refused', why);
    link.setState('disconnected');
  }

  function connect(): void {
    retryTimer = undefined;
    if (closed || link.problem) return;
    const key = opts.session?.pageKey();
    const ws = new WS(
      opts.url,
      key ? [CONSOLE_SUBPROTOCOL, `${PAGE_KEY_PROTOCOL}${key}`] : [CONSOLE_SUBPROTOCOL],
    );
    let openedAt = 0;
    socket = ws;

    const drop = () => {
      if (socket !== ws) return;
      socket = null;
      clearTimeout(idleTimer);
      stopKeepAlive();
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
      setProblem(null);
      link.setState('connected');
      armIdleTimer();
      startKeepAlive();
    });
    ws.addEventListener('message', (ev: MessageEvent) => {
      if (socket !== ws) return;
      armIdleTimer();
      if (typeof ev.data === 'string') session.receive(ev.data);
    });
    // 'error' is always followed by 'close', which is where the link is declared lost.
    ws.addEventListener('close', drop);
    armIdleTimer(); // the handshake too: the browser alone would wait minutes for it
  }

  /** The socket is gone: fail what waits on it, tell the UI, find out why, maybe retry. */
  function lost(openedAt: number): void {
    session.failAll();
    link.setState('disconnected');
    if (openedAt !== 0 && Date.now() - openedAt >= STABLE_MS) attempt = 0;
    const mine = epoch;
    const retry = () => {
      if (closed || mine !== epoch || link.problem) return;
      retryTimer = setTimeout(connect, backoffDelay(attempt++, opts.backoff));
    };
    if (!opts.session) return retry();
    // A refused handshake, an ended session (code 4401) or a lost link: ask which.
    opts.session.check().then(
      (state) => {
        if (closed || mine !== epoch) return;
        if (state && !state.authenticated) needSignIn(state);
        else retry(); // the engine is away, or it was a link problem: keep trying
      },
      (err: unknown) => {
        if (!closed && mine === epoch) refused(err);
      },
    );
  }

  /** No session: stop retrying until someone signs in (the UI shows the sign-in page). */
  function needSignIn(state: SessionState): void {
    clearTimeout(retryTimer);
    retryTimer = undefined;
    setProblem(state.setupRequired ? 'setup-required' : 'signed-out');
    link.setState('disconnected');
  }

  /** Signed in (or the state changed elsewhere): start over at once. */
  function resume(afterSignIn = false): Promise<void> {
    attempt = 0;
    return begin(afterSignIn);
  }

  const auth: ConsoleAuthApi | undefined = opts.session && {
    setupToken: opts.setupToken ?? null,
    async signIn(password) {
      await opts.session!.login(password);
      await resume(true);
    },
    async setUp(password) {
      const token = opts.setupToken;
      if (!token) {
        throw new SignInError(
          'This page was opened without the setup token.',
          'Open the console with the URL printed by `branchsan serve` (it ends in ?token=…).',
          0,
        );
      }
      await opts.session!.setup(token, password);
      await resume(true);
    },
    async signOut() {
      // Here at once, whatever the engine answers: someone leaving a shared machine must
      // not be left signed in by a slow or failed request. (The engine closes the
      // session's other sockets, in other tabs, when it ends the session.)
      epoch++;
      const ws = socket;
      socket = null;
      clearTimeout(idleTimer);
      clearTimeout(retryTimer);
      stopKeepAlive();
      ws?.close(1000, 'signed out');
      session.failAll();
      needSignIn({ authenticated: false, setupRequired: false });
      await opts.session!.logout();
    },
    refresh: () => resume(),
  };

  // Signed in (or a password set) in another tab: this one's sign-in page goes, as the
  // cookie and the key it uses are this browser's, not the tab's. Signed out there: the
  // engine closes this tab's socket too, and lost() finds out.
  const unwatch = opts.session?.watchOtherTabs?.(() => {
    if (link.problem === 'signed-out' || link.problem === 'setup-required') {
      resume().catch(() => undefined); // begin() throws only after a sign-in of its own
    }
  });

  void begin();

  return {
    transport: 'websocket',
    get state() {
      return link.state;
    },
    get problem() {
      return link.problem;
    },
    get refusal() {
      return refusal;
    },
    auth,
    call<M extends MethodName>(method: M, params: MethodParams<M>) {
      return session.call(method, params) as Promise<MethodResult<M>>;
    },
    on<E extends EventName>(event: E, handler: (data: EventData<E>) => void) {
      return session.on(event, handler as (data: unknown) => void);
    },
    onState: link.onState,
    onProblem: link.onProblem,
    failure: null,
    onFailure: () => () => {},
    close() {
      if (closed) return;
      closed = true;
      unwatch?.();
      clearTimeout(retryTimer);
      clearTimeout(idleTimer);
      stopKeepAlive();
      const ws = socket;
      socket = null;
      ws?.close(1000, 'console closed');
      session.failAll();
      link.setState('disconnected');
      link.clear();
    },
  };
}
