/**
 * Webhook delivery: one HTTP(S) POST of JSON per event. Any 2xx is success; a 4xx
 * that refuses the message itself is given up at once (refusesMessage); a 401, 403 or
 * 407 pauses the channel until its settings change; anything else, a timeout or a
 * refused connection is a failure the queue retries. With a
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
    const said = `POST ${redactUrl(t.url)} answered HTTP ${res.status} ${res.statusText}`.trim();
    if ([401, 403, 407].includes(res.status)) {
      // who we are: each message would meet it, and a receiver may lock out an address
      // that keeps failing; the queue pauses until the settings change (LoginRefused)
      throw Object.assign(new Error(said), {
        loginRefused: true as const,
        fix:
          'the receiver refused who this server is: correct the webhook URL (the token in it) or the signing secret in Settings > Notifications, ' +
          "or have the receiver's owner accept this server; then save",
      });
    }
    if (!refusesMessage(res.status)) throw new Error(said);
    throw Object.assign(new Error(said), {
      permanent: true as const,
      fix: 'the receiver refused this message itself; its logs or its owner can say why',
    });
  }
}

/**
 * An HTTP status that refuses this message for good (queue.ts PermanentFailure): a
 * 4xx, as an SMTP 5xx to a recipient or content is. Not: 408 and 429 (try later), and
 * the ones that refuse the channel's settings, which every message would meet: 401,
 * 403, 407 (who we are: the queue pauses until the settings change), 404, 405, 410
 * (where we send: retried, and at once when the URL is corrected). 5xx and no answer
 * are retried.
 */
function refusesMessage(status: number): boolean {
  return (
    status >= 400 && status <= 499 && ![401, 403, 404, 405, 407, 408, 410, 429].includes(status)
  );
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
