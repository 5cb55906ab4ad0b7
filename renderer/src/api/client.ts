/**
 * The renderer's view of the API client: the contract's ApiClient plus what the UI
 * needs to explain a link that is down (which transport, whether access was refused).
 */
import type { ApiClient, ConnectionState } from '../../../contract/api.js';
import { createEmitter } from './emitter.js';

/** Which transport carries the calls. */
export type TransportKind =
  /** Inside the desktop app: window.branchsan from the Electron preload. */
  | 'bridge'
  /** In a browser: a WebSocket to the engine's console endpoint. */
  | 'websocket';

/** Why the link cannot come up by itself; null while nothing blocks it. */
export type LinkProblem =
  /** The web console has no session (never signed in, signed out, or it expired). */
  | 'signed-out'
  /** The engine has no admin password yet: the first-run setup must set one. */
  | 'setup-required'
  /** The engine answered with a refusal of its own (see ConsoleClient.refusal). */
  | 'refused'
  | null;

/** What the engine said when it refused the console, and what to do. */
export interface Refusal {
  message: string;
  hint?: string;
}

/** Signing in and out of the web console; absent in the desktop app (the socket needs none). */
export interface ConsoleAuthApi {
  /** The setup token from the URL `branchsan serve` printed, or null. */
  readonly setupToken: string | null;
  /** Signs in, then connects. Throws SignInError with the engine's message. */
  signIn(password: string): Promise<void>;
  /** First run: sets the admin password with the setup token, signs in, connects. */
  setUp(password: string): Promise<void>;
  /**
   * Signs out here at once (the socket closes, the sign-in page shows), and asks the
   * engine to end the session. Throws SignInError when the engine could not be told:
   * its session then ends only when it expires.
   */
  signOut(): Promise<void>;
  /** Asks the engine again (after `branchsan passwd` on the server, for example). */
  refresh(): Promise<void>;
}

export interface ConsoleClient extends ApiClient {
  readonly transport: TransportKind;
  readonly problem: LinkProblem;
  /** The engine's words while `problem` is 'refused', else null. */
  readonly refusal: Refusal | null;
  onProblem(handler: (problem: LinkProblem) => void): () => void;
  /**
   * While the link is down: why it failed, in the words of the side that saw it fail,
   * saying what to do (the desktop app's main process: not in the admin group, a socket
   * it does not trust, an engine of another API version). Null while connected, and
   * in a browser, which hides why a WebSocket failed.
   */
  readonly failure: string | null;
  onFailure(handler: (failure: string | null) => void): () => void;
  readonly auth?: ConsoleAuthApi;
}

/** State and problem of one link, with change notifications; shared by both transports. */
export function createLinkStatus(initial: ConnectionState) {
  const stateChanged = createEmitter<ConnectionState>('the connection state');
  const problemChanged = createEmitter<LinkProblem>('the link problem');
  let state = initial;
  let problem: LinkProblem = null;
  return {
    get state() {
      return state;
    },
    get problem() {
      return problem;
    },
    setState(next: ConnectionState) {
      if (next === state) return;
      state = next;
      stateChanged.emit(next);
    },
    /** `reworded`: the same problem, told again because its words (the refusal) changed. */
    setProblem(next: LinkProblem, reworded = false) {
      if (next === problem && !reworded) return;
      problem = next;
      problemChanged.emit(next);
    },
    onState: stateChanged.on,
    onProblem: problemChanged.on,
    clear() {
      stateChanged.clear();
      problemChanged.clear();
    },
  };
}
