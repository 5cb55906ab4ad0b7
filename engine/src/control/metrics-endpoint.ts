/**
 * GET /metrics on the console's HTTP server: the Prometheus scrape target a head
 * office polls over the WAN. Off by default (404, as if absent); when on, it needs
 * "Authorization: Bearer <token>" with the token from DATA/secrets/metrics-token.
 * That token only reads metrics; the console's own sign-in is never accepted here,
 * so a scraper's configuration cannot administer the node.
 *
 * Every refused scrape gets the same answer (REFUSED), whatever was wrong: no header, a
 * wrong token, or none usable on the node (deleted, its file unusable). Anyone who can
 * reach the port may ask, so the answer says what a scraper needs and where an
 * administrator gets it, and nothing of the node's state (whether a token exists, why
 * not) nor its paths; the node's own log and alerts (metrics.endpoint) say those.
 */
import type http from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { requestPath } from './http-request.js';

export const METRICS_PATH = '/metrics';
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface MetricsEndpointSource {
  enabled(): boolean;
  /** The bearer token; null when none is set up (then every scrape is refused). */
  token(): string | null;
  /** The exposition text. */
  render(): string;
}

/** A route the console server consults before its own ones. */
export interface HttpRoute {
  handles(req: http.IncomingMessage): boolean;
  handle(req: http.IncomingMessage, res: http.ServerResponse): void;
}

const HEADERS = { 'Cache-Control': 'no-store', 'X-Content-Type-Options': 'nosniff' };
/** The body of every 401: see the head of this file. */
export const REFUSED =
  "This endpoint needs the node's scrape token: 'Authorization: Bearer <token>'. " +
  "The node's administrator gets it from metrics.settings.set (rotateToken: true makes a new one).\n";

export function metricsRoute(src: MetricsEndpointSource): HttpRoute {
  return {
    handles: (req) => requestPath(req) === METRICS_PATH,
    handle(req, res) {
      if (!src.enabled()) {
        res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8', ...HEADERS });
        res.end('Not found\n');
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { Allow: 'GET, HEAD', ...HEADERS }).end();
        return;
      }
      const token = src.token();
      const offered = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
      if (!token || !offered || !sameSecret(offered, token)) {
        res.writeHead(401, {
          'WWW-Authenticate': 'Bearer realm="branchsan-metrics"',
          'Content-Type': 'text/plain; charset=utf-8',
          ...HEADERS,
        });
        res.end(REFUSED);
        return;
      }
      const body = Buffer.from(src.render());
      res.writeHead(200, {
        'Content-Type': PROMETHEUS_CONTENT_TYPE,
        'Content-Length': body.length,
        ...HEADERS,
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    },
  };
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
