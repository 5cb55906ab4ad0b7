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
  /** The console was opened without an access token (no ?token=… in its URL). */
  | 'no-token'
  /** The engine answers but refuses this console's token. */
  | 'token-refused'
  | null;

export interface ConsoleClient extends ApiClient {
  readonly transport: TransportKind;
  readonly problem: LinkProblem;
  onProblem(handler: (problem: LinkProblem) => void): () => void;
}

/** State and problem of one link, with change notifications; shared by both transports. */
export function createLinkStatus(initial: ConnectionState) {
  const stateChanged = createEmitter<ConnectionState>();
  const problemChanged = createEmitter<LinkProblem>();
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
    setProblem(next: LinkProblem) {
      if (next === problem) return;
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
