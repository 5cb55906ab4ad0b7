/**
 * A client of the API socket that does not read what the engine sends it: the engine
 * buffers only so much for it (MAX_CLIENT_BACKLOG), and an answer that no longer fits
 * must not be dropped without a word, leaving the caller waiting for it (the CLI: until
 * its timeout, then "the engine may be stuck"). The engine answers that call with an
 * error saying why, and closes the connection. A real SocketServer on a Unix socket, a
 * raw client with the CLI's RpcSession.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiError, ErrorCode } from '../../../contract/errors.js';
import { RpcSession } from '../../../contract/rpc-client.js';
import { RpcDispatcher, type Handlers } from '../../../engine/src/control/rpc.js';
import { MAX_CLIENT_BACKLOG, SessionHub } from '../../../engine/src/control/sessions.js';
import { SocketServer } from '../../../engine/src/control/socket-server.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { until } from '../../helpers/wait.js';

/** Each answer is about this big; enough of them overflow the client's backlog. */
const ANSWER_BYTES = 1 << 20;

let top: string;
let server: SocketServer;
let socketPath: string;
let handled = 0;
const logged: string[] = [];

beforeAll(async () => {
  top = mkdtempSync(join(tmpdir(), 'bsan-socket-backlog-'));
  socketPath = join(top, 'api.sock');
  const log = createLogger({ sink: { write: (line: string) => void logged.push(line) } });
  const handlers = {
    // a big answer, whatever it says (here: a failure that quotes a long message)
    'system.status': () => {
      handled++;
      throw new Error('x'.repeat(ANSWER_BYTES));
    },
  } as Partial<Handlers> as Handlers;
  server = new SocketServer(
    { path: socketPath },
    new RpcDispatcher(handlers, log),
    new SessionHub(),
    log,
  );
  await server.listen();
});

afterAll(async () => {
  await server.close();
  rmSync(top, { recursive: true, force: true });
});

describe('API socket: a client that does not read its answers', () => {
  it('is told why its call failed and disconnected, not left waiting', async () => {
    const sock = net.connect(socketPath);
    await new Promise((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    sock.on('error', () => undefined);
    const session = new RpcSession({
      send: (text) => sock.writable && sock.write(text + '\n') !== undefined,
      timeoutMs: 60_000,
    });
    const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    let answers = 0;
    let buf = '';

    // Stop reading, then ask for far more than the engine buffers for one client (the
    // kernel's socket buffers hold a little too).
    sock.pause();
    const calls = Math.ceil((2 * MAX_CLIENT_BACKLOG) / ANSWER_BYTES);
    const outcomes = Array.from({ length: calls }, () =>
      session.call('system.status', {}).then(
        () => 'answered',
        (err: ApiError) => {
          if (err.code === ErrorCode.Internal) return 'answered'; // the big answer
          return err;
        },
      ),
    );
    await until(() => handled === calls, 10_000);
    await new Promise((r) => setImmediate(r)); // the answers are handed to the socket

    // Reading again: every call settles, the connection ends.
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        answers++;
        session.receive(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    sock.resume();
    // Before, the answers that did not fit were dropped and the connection stayed up:
    // once the backlog drained, a call was answered again while those waited for ever.
    // Ask until one is, or the connection closes.
    let ask: NodeJS.Timeout | undefined;
    const later = new Promise<string>((resolve) => {
      ask = setInterval(() => {
        if (!sock.writable) return;
        void session.call('no.such', {}).catch((err: ApiError) => {
          if (err.code === ErrorCode.MethodNotFound) resolve('answered');
        });
      }, 50);
    });
    const outcome = await Promise.race([closed.then(() => 'closed'), later]).finally(() =>
      clearInterval(ask),
    );
    sock.destroy();
    expect(outcome).toBe('closed');
    await closed;
    session.failAll();
    const results = await Promise.all(outcomes);

    const answered = results.filter((r) => r === 'answered').length;
    expect(answered).toBeGreaterThan(0);
    expect(answered).toBeLessThan(calls);
    // the first call whose answer did not fit is told so, in words a user can act on
    const refused = results[answered];
    expect(refused).toBeInstanceOf(ApiError);
    expect((refused as ApiError).code).toBe(ErrorCode.Unavailable);
    expect((refused as ApiError).message).toMatch(
      /^The engine closed this connection: it was not reading its answers, and the answer to system\.status \(\d+ bytes\) did not fit the 8 MiB/,
    );
    expect((refused as ApiError).data?.hint).toMatch(/[Rr]ead each answer/);
    expect(answers).toBe(answered + 1);
    expect(logged.join('\n')).toContain('not reading its answers');
  }, 30_000);
});
