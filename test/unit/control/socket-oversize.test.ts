/**
 * A request line longer than the API socket's limit (1 MiB) is answered at once, under
 * the request's id when the line's start gives it, so its caller fails with why rather
 * than waiting out its timeout ("the engine may be stuck"); the rest of the line is
 * dropped and the connection stays usable. A real SocketServer on a Unix socket, a raw
 * client with the CLI's RpcSession.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RpcResponse } from '../../../contract/api.js';
import { ApiError, ErrorCode } from '../../../contract/errors.js';
import { RpcSession } from '../../../contract/rpc-client.js';
import {
  MAX_MESSAGE_BYTES,
  RpcDispatcher,
  type Handlers,
} from '../../../engine/src/control/rpc.js';
import { SessionHub } from '../../../engine/src/control/sessions.js';
import { SocketServer } from '../../../engine/src/control/socket-server.js';
import { createLogger } from '../../../engine/src/util/log.js';

let top: string;
let server: SocketServer;
let socketPath: string;

beforeAll(async () => {
  top = mkdtempSync(join(tmpdir(), 'bsan-socket-oversize-'));
  socketPath = join(top, 'api.sock');
  const log = createLogger({ sink: { write: () => undefined } });
  server = new SocketServer(
    { path: socketPath },
    new RpcDispatcher({} as Handlers, log),
    new SessionHub(),
    log,
  );
  await server.listen();
});

afterAll(async () => {
  await server.close();
  rmSync(top, { recursive: true, force: true });
});

async function connect(): Promise<{
  sock: net.Socket;
  lines: string[];
  next: () => Promise<string>;
}> {
  const sock = net.connect(socketPath);
  await new Promise((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.on('error', () => undefined);
  sock.setEncoding('utf8');
  const lines: string[] = [];
  let buf = '';
  let wake: (() => void) | undefined;
  sock.on('data', (chunk: string) => {
    buf += chunk;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, nl));
      buf = buf.slice(nl + 1);
      wake?.();
    }
  });
  const next = async () => {
    while (lines.length === 0) await new Promise<void>((resolve) => (wake = resolve));
    return lines.shift()!;
  };
  return { sock, lines, next };
}

describe('API socket: a request line over the limit', () => {
  it("fails the caller's call at once, says how large, and the connection stays usable", async () => {
    const { sock, next } = await connect();
    const session = new RpcSession({
      send: (text) => sock.writable && sock.write(text + '\n') !== undefined,
      timeoutMs: 600_000, // before: this call waited its timeout out
    });
    const big = session.call('settings.set', { note: 'x'.repeat(2 * MAX_MESSAGE_BYTES) });
    const pump = (async () => {
      for (;;) session.receive(await next());
    })();
    void pump;
    const err = (await big.then(
      () => null,
      (e: unknown) => e,
    )) as ApiError;
    expect(err).toBeInstanceOf(ApiError);
    expect(err.code).toBe(ErrorCode.InvalidRequest);
    // its end of line may have come with the part past the limit, or not yet
    expect(err.message).toMatch(
      /^The request to settings\.set is too large( \(\d+ bytes; the limit is 1 MiB\)|: more than 1048576 bytes arrived without its end of line \(the limit is 1 MiB\)), so it was not read\.$/,
    );
    expect(err.data?.hint).toMatch(/Send less in one request/);
    // the rest of that line is dropped, not read as requests; the next call is answered
    const after = await session.call('no.such', {}).catch((e: ApiError) => e);
    expect((after as ApiError).code).toBe(ErrorCode.MethodNotFound);
    sock.destroy();
  }, 20_000);

  it('is answered before its end of line comes, and the rest of it is dropped', async () => {
    const { sock, next, lines } = await connect();
    const start = '{"jsonrpc":"2.0","id":5,"method":"settings.set","params":{"p":"';
    sock.write(start + 'y'.repeat(MAX_MESSAGE_BYTES + 10));
    const answer = JSON.parse(await next()) as RpcResponse;
    expect(answer).toEqual({
      jsonrpc: '2.0',
      id: 5,
      error: {
        code: ErrorCode.InvalidRequest,
        message:
          'The request to settings.set is too large: more than 1048576 bytes arrived without its end of line (the limit is 1 MiB), so it was not read.',
        data: {
          hint: 'Send less in one request (split it into several), one JSON-RPC request per line.',
        },
      },
    });
    // more of it, then its end and a request of the right size: only that one is answered
    sock.write('{"jsonrpc":"2.0","id":6,"method":"no.such"}'.repeat(3) + 'y'.repeat(100));
    sock.write('"}}\n{"jsonrpc":"2.0","id":8,"method":"no.such"}\n');
    const after = JSON.parse(await next()) as RpcResponse;
    expect(after.id).toBe(8);
    expect(lines).toEqual([]);
    sock.destroy();
  }, 20_000);

  // Before: the limit counted UTF-16 units, so a line of 700,000 '€' (2.1 MB) was read
  // whole, and one without its end of line was buffered up to 3 MiB before the answer.
  it('counts bytes, not characters: a line of multibyte characters over 1 MiB is answered before its end', async () => {
    const { sock, next, lines } = await connect();
    const start = '{"jsonrpc":"2.0","id":9,"method":"settings.set","params":{"p":"';
    const euros = '€'.repeat(Math.ceil(MAX_MESSAGE_BYTES / 3) + 10); // 1 MiB + 30 bytes
    expect(start.length + euros.length).toBeLessThan(MAX_MESSAGE_BYTES / 2);
    sock.write(start + euros);
    const answer = JSON.parse(await next()) as RpcResponse;
    expect(answer).toMatchObject({
      id: 9,
      error: {
        code: ErrorCode.InvalidRequest,
        message:
          'The request to settings.set is too large: more than 1048576 bytes arrived without its end of line (the limit is 1 MiB), so it was not read.',
      },
    });
    sock.write('"}}\n{"jsonrpc":"2.0","id":10,"method":"no.such"}\n');
    expect((JSON.parse(await next()) as RpcResponse).id).toBe(10);
    expect(lines).toEqual([]);
    sock.destroy();
  }, 20_000);
});

describe('RPC dispatcher: a message over the limit', () => {
  const log = createLogger({ sink: { write: () => undefined } });
  const rpc = new RpcDispatcher({} as Handlers, log);
  const ctx = { transport: 'socket', peer: 'unix#1', actor: 'local#1' } as const;
  const pad = 'y'.repeat(MAX_MESSAGE_BYTES);

  it('answers under a string id given after other members, and says how large it is', async () => {
    const text = `{"method":"settings.set","jsonrpc":"2.0","id":"abc","params":{"p":"${pad}é"}}`;
    const answer = JSON.parse(await rpc.handle(text, ctx)) as RpcResponse;
    expect(answer.id).toBe('abc');
    expect(answer).toMatchObject({
      error: {
        code: ErrorCode.InvalidRequest,
        message: `The request to settings.set is too large (${Buffer.byteLength(text)} bytes; the limit is 1 MiB), so it was not read.`,
      },
    });
  });

  it('counts its bytes of UTF-8, not its characters', async () => {
    const message = (n: number) =>
      `{"jsonrpc":"2.0","id":3,"method":"no.such","params":{"p":"${'€'.repeat(n)}"}}`;
    const over = message(Math.ceil(MAX_MESSAGE_BYTES / 3));
    expect(over.length).toBeLessThan(MAX_MESSAGE_BYTES / 2);
    expect(JSON.parse(await rpc.handle(over, ctx))).toMatchObject({
      id: 3,
      error: {
        code: ErrorCode.InvalidRequest,
        message: `The request to no.such is too large (${Buffer.byteLength(over)} bytes; the limit is 1 MiB), so it was not read.`,
      },
    });
    const under = message(Math.floor(MAX_MESSAGE_BYTES / 3) - 100);
    expect(JSON.parse(await rpc.handle(under, ctx))).toMatchObject({
      id: 3,
      error: { code: ErrorCode.MethodNotFound },
    });
  });

  it('answers under null when the id comes only after the large part', async () => {
    const text = `{"jsonrpc":"2.0","params":{"p":"${pad}"},"id":7,"method":"settings.set"}`;
    const answer = JSON.parse(await rpc.handle(text, ctx)) as RpcResponse;
    expect(answer.id).toBeNull();
    expect(answer).toMatchObject({
      error: { code: ErrorCode.InvalidRequest, message: /^A request is too large \(\d+ bytes/ },
    });
  });
});
