/**
 * createApiClient(): the one place that picks a transport.
 * Inside the desktop app the preload defines window.branchsan and we use it; anywhere
 * else (the web console in a browser) we open a WebSocket to the engine that served
 * this page, authenticated with the console's access token.
 */
import { BRIDGE_GLOBAL, type BridgeApi } from '../../../contract/bridge.js';
import { createBridgeClient } from './bridge.js';
import type { ConsoleClient } from './client.js';
import { takeAccessToken } from './token.js';
import { consoleSocketUrl, createWebSocketClient } from './websocket.js';

export type { ConsoleClient, LinkProblem, TransportKind } from './client.js';

/** What createApiClient reads from its page; a browser window has all of it. */
export interface ClientHost {
  location: Pick<Location, 'href'>;
  history: Pick<History, 'replaceState' | 'state'>;
  sessionStorage: Pick<Storage, 'getItem' | 'setItem'> | null;
  fetch: typeof fetch;
  WebSocket: typeof WebSocket;
}

export function createApiClient(host: ClientHost = window): ConsoleClient {
  const bridge = (host as unknown as Record<string, BridgeApi | undefined>)[BRIDGE_GLOBAL];
  if (bridge) return createBridgeClient(bridge);

  const pageHref = host.location.href;
  return createWebSocketClient({
    url: consoleSocketUrl(pageHref),
    token: takeAccessToken(host.location, host.history, host.sessionStorage),
    WebSocket: host.WebSocket,
    probeServer: () => probeConsolePage(host, pageHref),
  });
}

/** True when the web server that served this page answers for it (2xx) right now. */
async function probeConsolePage(
  host: Pick<ClientHost, 'fetch'>,
  pageHref: string,
): Promise<boolean> {
  const url = new URL('./', pageHref);
  url.search = '';
  url.hash = '';
  try {
    const res = await host.fetch(url.href, { method: 'HEAD', cache: 'no-store' });
    return res.ok;
  } catch {
    return false;
  }
}
