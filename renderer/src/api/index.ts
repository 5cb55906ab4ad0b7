/**
 * createApiClient(): the one place that picks a transport.
 * Inside the desktop app the preload defines window.branchsan and we use it (the
 * engine's socket needs no sign-in). Anywhere else (the web console in a browser) we
 * open a WebSocket to the engine that served this page, with the session cookie and
 * page key the sign-in page obtained; the setup token from the URL is kept for the
 * first-run setup.
 */
import { BRIDGE_GLOBAL, type BridgeApi } from '../../../contract/bridge.js';
import { createBridgeClient } from './bridge.js';
import type { ConsoleClient } from './client.js';
import { createSessionApi, pageKeyStore, type StorageEvents } from './session.js';
import { takeAccessToken } from './token.js';
import { consoleSocketUrl, createWebSocketClient } from './websocket.js';

export type { ConsoleAuthApi, ConsoleClient, LinkProblem, TransportKind } from './client.js';
export { SignInError } from './session.js';

/** What createApiClient reads from its page; a browser window has all of it. */
export interface ClientHost {
  location: Pick<Location, 'href'>;
  history: Pick<History, 'replaceState' | 'state'>;
  sessionStorage: Pick<Storage, 'getItem' | 'setItem'> | null;
  localStorage: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null;
  /** Where the other tabs' changes to localStorage are heard ('storage' events). */
  addEventListener?: Window['addEventListener'];
  removeEventListener?: Window['removeEventListener'];
  fetch: typeof fetch;
  WebSocket: typeof WebSocket;
}

export function createApiClient(host: ClientHost = window): ConsoleClient {
  const bridge = (host as unknown as Record<string, BridgeApi | undefined>)[BRIDGE_GLOBAL];
  if (bridge) return createBridgeClient(bridge);

  const pageHref = host.location.href;
  // Read before anything else: it also takes the token out of the address bar.
  const setupToken = takeAccessToken(host.location, host.history, host.sessionStorage);
  return createWebSocketClient({
    url: consoleSocketUrl(pageHref),
    WebSocket: host.WebSocket,
    session: createSessionApi(
      host.fetch.bind(host),
      pageHref,
      pageKeyStore(host.localStorage, storageEvents(host)),
    ),
    setupToken,
  });
}

/** The host's storage events, when it has them (a window does). */
function storageEvents(host: ClientHost): StorageEvents | null {
  return host.addEventListener && host.removeEventListener ? (host as StorageEvents) : null;
}
