/**
 * A console client that does not read what the engine sends it: the engine buffers only
 * so much for it (MAX_CLIENT_BACKLOG), and an answer that no longer fits must not be
 * dropped without a word, leaving the caller to wait out its timeout and be told the
 * engine may be stuck. The socket is closed instead, which fails the caller's calls at
 * once; the console reconnects and reloads. A real ConsoleServer, a ws client.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { ConsoleServer } from '../../../engine/src/control/console-server.js';
import { MAX_CLIENT_BACKLOG } from '../../../engine/src/control/sessions.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { loopbackConsole } from '../../helpers/console-server.js';
import { until } from '../../helpers/wait.js';

const PASSWORD = 'a long enough password';
/** Each answer is about this big; enough of them overflow the client's backlog. */
const ANSWER_BYTES = 1 << 20;

let top: string;
let server: ConsoleServer;
let handled = 0;

beforeAll(async () => {
  top = mkdtempSync(join(tmpdir(), 'bsan-console-backlog-'));
  const root = join(top, 'renderer');
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>BranchSAN</title>');
  const log = createLogger({ sink: { write: () => undefined } });
  let passwords;
  ({ server, passwords } = loopbackConsole({
    root,
    dataDir: join(top, 'data'),
    log,
    handlers: {
      // a big answer, whatever it says (here: a failure that quotes a long message)
      'system.status': () => {
        handled++;
        throw new Error('x'.repeat(ANSWER_BYTES));
      },
    },
  }));
  await passwords.set(PASSWORD);
  await server.listen();
});

afterAll(async () => {
  await server.close();
  rmSync(top, { recursive: true, force: true });
});

/** Signs in as the page does: the session cookie and the page key. */
function signIn(): Promise<{ cookie: string; key: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `http://127.0.0.1:${server.port}/api/login`,
      { method: 'POST', headers: { 'Content-Type': 'application/json' } },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          const cookie = res.headers['set-cookie']?.[0]?.split(';')[0];
          if (!cookie) return reject(new Error(`no session: ${res.statusCode} ${text}`));
          resolve({ cookie, key: (JSON.parse(text) as { pageKey: string }).pageKey });
        });
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ password: PASSWORD }));
  });
}

describe('web console: a client that does not read its answers', () => {
  it('is disconnected, not left waiting for an answer that was dropped', async () => {
    const { cookie, key } = await signIn();
    const ws = new WebSocket(
      `ws://127.0.0.1:${server.port}/api`,
      ['branchsan.v1', `branchsan.key.${key}`],
      { headers: { Cookie: cookie } },
    );
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    let answers = 0;
    ws.on('message', () => answers++);
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );

    // Stop reading, then ask for far more than the engine buffers for one client: the
    // kernel's socket buffers hold some too (the receiver's does not grow while nothing
    // is read; the sender's grows to net.ipv4.tcp_wmem's 4 MiB at most).
    ws.pause();
    const calls = Math.ceil((4 * MAX_CLIENT_BACKLOG) / ANSWER_BYTES);
    for (let id = 1; id <= calls; id++)
      ws.send(JSON.stringify({ jsonrpc: '2.0', id, method: 'system.status', params: {} }));
    await until(() => handled === calls, 10_000);
    await new Promise((r) => setImmediate(r)); // the answers are handed to the socket

    // Reading again. Once the backlog drains, a call is answered again: ask until one
    // is, or the socket closes.
    ws.resume();
    const marker = new Promise<'answered'>((resolve) =>
      ws.on('message', (d) => {
        if ((JSON.parse(d.toString()) as { id: unknown }).id === 'marker') resolve('answered');
      }),
    );
    const ask = setInterval(() => {
      if (ws.readyState === ws.OPEN)
        ws.send(JSON.stringify({ jsonrpc: '2.0', id: 'marker', method: 'no.such', params: {} }));
    }, 50);
    const outcome = await Promise.race([closed, marker]).finally(() => clearInterval(ask));

    expect(outcome).toEqual({ code: 1008, reason: 'client is not reading its answers' });
    expect(answers).toBeLessThan(calls);
  }, 30_000);
});
