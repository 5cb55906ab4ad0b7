/**
 * Webhook delivery: one HTTP(S) POST of JSON per event. Any 2xx is success; anything
 * else, a timeout or a refused connection is a failure the queue retries. With a
 * secret, the body is signed (HMAC-SHA256) so the receiver can tell it came from us.
 */
import { createHmac } from 'node:crypto';

export interface WebhookTarget {
  url: string;
  secret?: string;
  timeoutMs?: number;
}

export const SIGNATURE_HEADER = 'X-BranchSAN-Signature';

export async function postWebhook(t: WebhookTarget, payload: unknown): Promise<void> {
  const body = JSON.stringify(payload);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'BranchSAN-engine',
  };
  if (t.secret) {
    headers[SIGNATURE_HEADER] =
      `sha256=${createHmac('sha256', t.secret).update(body).digest('hex')}`;
  }
  let res: Response;
  try {
    res = await fetch(t.url, {
      method: 'POST',
      headers,
      body,
      redirect: 'error', // a redirect could carry the payload somewhere the admin never named
      signal: AbortSignal.timeout(t.timeoutMs ?? 10_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    // fetch's own messages may spell the whole URL (its path can hold a token): never
    // pass one on with it in
    const said = cause?.code ?? cause?.message ?? (err as Error).message;
    throw new Error(`POST ${redactUrl(t.url)} failed: ${said.split(t.url).join(redactUrl(t.url))}`);
  }
  await res.body?.cancel();
  if (res.status < 200 || res.status > 299) {
    throw new Error(
      `POST ${redactUrl(t.url)} answered HTTP ${res.status} ${res.statusText}`.trim(),
    );
  }
}

/**
 * The URL without its path and query: chat-service webhook URLs carry their token in
 * the path, so logs, events and diagnostics show only scheme and host.
 */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}/…`;
  } catch {
    return '(invalid URL)';
  }
}
