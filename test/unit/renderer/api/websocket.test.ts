// @vitest-environment happy-dom
import net from 'node:net';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError, ErrorCode } from '../../../../contract/api.js';
import type { ConsoleClient } from '../../../../renderer/src/api/client.js';
import {
  SignInError,
  type SessionApi,
  type SessionState,
} from '../../../../renderer/src/api/session.js';
import {
  consoleSocketUrl,
  createWebSocketClient,
  type WebSocketClientOptions,
} from '../../../../renderer/src/api/websocket.js';
import { systemStatus } from '../support/fixtures.js';
import { startTestEngineSocket, until, type TestEngineSocket } from '../support/ws-server.js';

const FAST = { minMs: 10, maxMs: 40 };

/** A scripted /api/session: what check() says, and what login/setup/logout were asked. */
function fakeSession(initial: SessionState | SignInError | null) {
  const log: string[] = [];
  let state = initial;
  let logoutFails: SignInError | null = null;
  /** A browser that does not keep the session cookie: a sign-in leaves it signed out. */
  let cookiesKept = true;
  let key: string | null =
    initial && !(initial instanceof SignInError) && initial.authenticated ? 'k1' : null;
  const api: SessionApi = {
    pageKey: () => key,
    check: async () => {
      log.push('check');
      if (state instanceof SignInError) throw state;
      return state;
    },
    login: async (password) => {
      log.push(`login:${password}`);
      if (password !== 'right password')
        throw new SignInError('Wrong password.', 'Check it and try again.', 401);
      if (cookiesKept) state = { authenticated: true, setupRequired: false };
      key = 'k2';
    },
    setup: async (token, password) => {
      log.push(`setup:${token}:${password}`);
      state = { authenticated: cookiesKept, setupRequired: false };
    },
    logout: async () => {
      log.push('logout');
      if (logoutFails) throw logoutFails;
      state = { authenticated: false, setupRequired: false };
    },
  };
  return {
    api,
    log,
    set(next: SessionState | SignInError | null) {
      state = next;
    },
    failLogout(err: SignInError) {
      logoutFails = err;
    },
    dropCookies() {
      cookiesKept = false;
    },
  };
}

describe('WebSocket transport against a real WebSocket server', () => {
  let server: TestEngineSocket;
  let client: ConsoleClient | undefined;
  const states: string[] = [];

  function connect(over: Partial<WebSocketClientOptions> = {}): ConsoleClient {
    client = createWebSocketClient({ url: server.url, backoff: FAST, ...over });
    client.onState((s) => states.push(s));
    return client;
  }

  beforeEach(async () => {
    states.length = 0;
    server = await startTestEngineSocket();
  });
  afterEach(async () => {
    client?.close();
    client = undefined;
    await server.close();
  });

  it('offers the API version as its only subprotocol without a session, and connects', async () => {
    const c = connect();
    expect(c.state).toBe('connecting');
    await until(() => c.state === 'connected');
    const offered = String(server.handshakes[0]!.headers['sec-websocket-protocol']);
    expect(offered).toBe('branchsan.v1');
    expect((await server.connection(1)).protocol).toBe('branchsan.v1');
    expect(server.handshakes[0]!.url).toBe('/api');
    expect(c.transport).toBe('websocket');
    expect(c.problem).toBeNull();
  });

  it('frames one JSON-RPC request per text frame and resolves with the result', async () => {
    const c = connect();
    const socket = await server.connection(1);
    await until(() => c.state === 'connected');

    const received = server.nextMessage(socket);
    const result = c.call('system.status', {});
    const request = await received;
    expect(request).toEqual({
      jsonrpc: '2.0',
      id: expect.any(Number),
      method: 'system.status',
      params: {},
    });

    socket.send(JSON.stringify({ jsonrpc: '2.0', id: request.id, result: systemStatus() }));
    await expect(result).resolves.toEqual(systemStatus());
  });

  it('turns an error response into an ApiError with its code and hint', async () => {
    const c = connect();
    const socket = await server.connection(1);
    await until(() => c.state === 'connected');
    const received = server.nextMessage(socket);
    const result = c.call('system.status', {});
    const { id } = await received;
    const error = {
      code: ErrorCode.InvalidParams,
      message: 'Bad params.',
      data: { hint: 'Fix it.' },
    };
    socket.send(JSON.stringify({ jsonrpc: '2.0', id, error }));

    const e = await result.catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ApiError);
    expect(e).toMatchObject({
      code: ErrorCode.InvalidParams,
      message: 'Bad params.',
      data: { hint: 'Fix it.' },
    });
  });

  it('delivers pushed events to their subscribers and ignores binary frames', async () => {
    const c = connect();
    const socket = await server.connection(1);
    await until(() => c.state === 'connected');
    const seen: number[] = [];
    const off = c.on('system.heartbeat', (hb) => seen.push(hb.uptimeSec));

    const push = (uptimeSec: number) =>
      socket.send(
        JSON.stringify({
          jsonrpc: '2.0',
          method: 'event',
          params: { name: 'system.heartbeat', data: { at: Date.now(), uptimeSec } },
        }),
      );
    push(1);
    socket.send(Buffer.from('{"jsonrpc":"2.0","method":"event"}'), { binary: true });
    push(2);
    await until(() => seen.length === 2);
    off();
    push(3);
    const marker = server.nextMessage(socket);
    void c.call('system.status', {}).catch(() => {}); // a round trip orders the check after frame 3
    await marker;
    expect(seen).toEqual([1, 2]);
  });

  it('fails pending calls at once when the server drops the connection, then reconnects', async () => {
    const c = connect();
    const first = await server.connection(1);
    await until(() => c.state === 'connected');
    const received = server.nextMessage(first);
    const pending = c.call('system.status', {});
    await received;

    const started = Date.now();
    first.terminate();
    const e = await pending.catch((err: unknown) => err);
    expect(e).toBeInstanceOf(ApiError);
    expect((e as ApiError).code).toBe(ErrorCode.Unavailable);
    expect(Date.now() - started).toBeLessThan(1_000); // not the 15 s call timeout

    const second = await server.connection(2);
    await until(() => c.state === 'connected');
    expect(states).toEqual(['connected', 'disconnected', 'connected']);

    const again = server.nextMessage(second);
    const result = c.call('system.status', {});
    answer(second, (await again).id, systemStatus({ pid: 2 }));
    await expect(result).resolves.toMatchObject({ pid: 2 });
  });

  it('a state listener that throws costs only itself: the others hear of it, and it reconnects', async () => {
    const report = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    client = createWebSocketClient({ url: server.url, backoff: FAST });
    const c = client;
    c.onState((s) => {
      if (s === 'disconnected') throw new Error('a broken page component');
    });
    c.onState((s) => states.push(s));
    const first = await server.connection(1);
    await until(() => c.state === 'connected');

    // before: the throw left the socket's close handler before its retry was set up
    first.terminate();
    await until(() => server.sockets.length === 2 && c.state === 'connected', 5_000);
    expect(states).toEqual(['connected', 'disconnected', 'connected']);
    expect(report).toHaveBeenCalledTimes(1);
    expect(String(report.mock.calls[0]![0])).toContain('state');
    report.mockRestore();
  });

  it('fails a call made while disconnected without waiting for a timeout', async () => {
    await server.close();
    const c = connect();
    await until(() => c.state === 'disconnected');
    const e = await c.call('system.status', {}).catch((err: unknown) => err);
    expect(e).toMatchObject({ code: ErrorCode.Unavailable });
    server = await startTestEngineSocket(); // for afterEach
  });

  it('keeps retrying while the server is away and connects when it returns', async () => {
    const port = server.port;
    await server.close();
    const c = connect({ url: `ws://127.0.0.1:${port}/api` });
    await until(() => c.state === 'disconnected');
    await new Promise((r) => setTimeout(r, 100)); // a few failed attempts
    server = await startTestEngineSocketOn(port);
    await until(() => c.state === 'connected', 5_000);
    expect(c.problem).toBeNull();
  });

  it('asks for the session first and shows the sign-in without a handshake when signed out', async () => {
    const session = fakeSession({ authenticated: false, setupRequired: false });
    const c = connect({ session: session.api });
    await until(() => c.problem === 'signed-out');
    expect(c.state).toBe('disconnected');
    await new Promise((r) => setTimeout(r, 50));
    expect(server.handshakes).toHaveLength(0);
    expect(c.auth?.setupToken).toBeNull();
  });

  it('reports setup-required on a fresh engine, and keeps the setup token for the setup page', async () => {
    const session = fakeSession({ authenticated: false, setupRequired: true });
    const c = connect({ session: session.api, setupToken: 'tok' });
    await until(() => c.problem === 'setup-required');
    expect(c.auth?.setupToken).toBe('tok');
    await c.auth!.setUp('a new password');
    await until(() => c.state === 'connected');
    expect(c.problem).toBeNull();
    expect(session.log).toContain('setup:tok:a new password');
  });

  it('asking again with nothing changed keeps the page as it is, not “Connecting…” and back', async () => {
    const session = fakeSession({ authenticated: false, setupRequired: true });
    const c = connect({ session: session.api });
    await until(() => c.problem === 'setup-required');
    const seen: string[] = [];
    c.onProblem((p) => seen.push(`problem:${p}`));
    c.onState((s) => seen.push(`state:${s}`));
    await c.auth!.refresh(); // SetupHelp's "I have set it": not yet
    expect(seen).toEqual([]);
    expect(c.problem).toBe('setup-required');

    session.set({ authenticated: false, setupRequired: false }); // now it is set
    await c.auth!.refresh();
    expect(seen).toEqual(['problem:signed-out']);
    expect(server.handshakes).toHaveLength(0);
  });

  it('refuses setUp without a token, saying which URL to open', async () => {
    const session = fakeSession({ authenticated: false, setupRequired: true });
    const c = connect({ session: session.api });
    await until(() => c.problem === 'setup-required');
    const e = await c.auth!.setUp('whatever123').catch((err: unknown) => err);
    expect(e).toBeInstanceOf(SignInError);
    expect((e as SignInError).hint).toContain('branchsan serve');
  });

  it('signIn passes the engine’s refusal on, and connects once the password is right', async () => {
    const session = fakeSession({ authenticated: false, setupRequired: false });
    const c = connect({ session: session.api });
    await until(() => c.problem === 'signed-out');
    await expect(c.auth!.signIn('wrong')).rejects.toMatchObject({ message: 'Wrong password.' });
    expect(c.problem).toBe('signed-out');
    await c.auth!.signIn('right password');
    await until(() => c.state === 'connected');
    expect(c.problem).toBeNull();
    expect(server.handshakes).toHaveLength(1);
    // the session's page key goes with the upgrade, offered after the API version
    const offered = String(server.handshakes[0]!.headers['sec-websocket-protocol']);
    expect(offered.split(/,\s*/)).toEqual(['branchsan.v1', 'branchsan.key.k2']);
    expect((await server.connection(1)).protocol).toBe('branchsan.v1');
  });

  it('a sign-in the browser kept no session of says so, and the sign-in page never leaves', async () => {
    const session = fakeSession({ authenticated: false, setupRequired: false });
    session.dropCookies();
    const c = connect({ session: session.api });
    await until(() => c.problem === 'signed-out');
    const problems: unknown[] = [];
    c.onProblem((p) => problems.push(p));
    const e = (await c.auth!.signIn('right password').catch((err: unknown) => err)) as SignInError;
    expect(e).toBeInstanceOf(SignInError);
    expect(e.message).toBe(
      'The password was right, but this browser did not keep the console’s session cookie, so it is not signed in.',
    );
    expect(e.hint).toBe(
      `Allow cookies for ${new URL(server.url).host} in the browser’s settings (the console keeps its sign-in in one), then sign in again.`,
    );
    // before: the sign-in page left for "Connecting…" and came back, without a word
    expect(problems).toEqual([]);
    expect(c.problem).toBe('signed-out');
    expect(session.log).toEqual(['check', 'login:right password', 'check']);
    expect(server.handshakes).toHaveLength(0);
  });

  it('a first-run setup the browser kept no session of says so, and goes on to the sign-in', async () => {
    const session = fakeSession({ authenticated: false, setupRequired: true });
    session.dropCookies();
    const c = connect({ session: session.api, setupToken: 'tok' });
    await until(() => c.problem === 'setup-required');
    const problems: unknown[] = [];
    c.onProblem((p) => problems.push(p));
    await expect(c.auth!.setUp('a new passphrase')).rejects.toMatchObject({
      message: expect.stringContaining('did not keep the console’s session cookie'),
    });
    // the password is set: what is left is signing in (once cookies are allowed)
    expect(problems).toEqual(['signed-out']);
  });

  it('a refused handshake with a signed-out session stops the retries', async () => {
    await server.close();
    server = await startTestEngineSocket({ acceptToken: () => false });
    const session = fakeSession({ authenticated: true, setupRequired: false });
    const c = connect({ session: session.api });
    await until(() => server.handshakes.length >= 1);
    session.set({ authenticated: false, setupRequired: false }); // e.g. it expired meanwhile
    await until(() => c.problem === 'signed-out');
    const seen = server.handshakes.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(server.handshakes).toHaveLength(seen);
  });

  it('keeps retrying while the session check cannot reach the engine', async () => {
    await server.close();
    server = await startTestEngineSocket({ acceptToken: () => false });
    const session = fakeSession(null);
    const c = connect({ session: session.api });
    await until(() => server.handshakes.length >= 3);
    expect(c.problem).toBeNull();
    expect(c.state).toBe('disconnected');
  });

  it('a socket the engine closes with 4401 (session ended) leads to the sign-in', async () => {
    const session = fakeSession({ authenticated: true, setupRequired: false });
    const c = connect({ session: session.api });
    const socket = await server.connection(1);
    await until(() => c.state === 'connected');
    session.set({ authenticated: false, setupRequired: false });
    socket.close(4401, 'session ended: sign in again');
    await until(() => c.problem === 'signed-out');
    expect(c.state).toBe('disconnected');
  });

  it('signOut logs out, closes the socket and reports signed-out without reconnecting', async () => {
    const session = fakeSession({ authenticated: true, setupRequired: false });
    const c = connect({ session: session.api });
    await until(() => c.state === 'connected');
    await c.auth!.signOut();
    expect(session.log).toContain('logout');
    expect(c.problem).toBe('signed-out');
    expect(c.state).toBe('disconnected');
    await new Promise((r) => setTimeout(r, 100));
    expect(server.handshakes).toHaveLength(1);
  });

  it('signOut signs out here even when the engine cannot be told, and says why', async () => {
    const session = fakeSession({ authenticated: true, setupRequired: false });
    const c = connect({ session: session.api });
    await until(() => c.state === 'connected');
    session.failLogout(
      new SignInError('The console could not reach the BranchSAN engine.', undefined, 0),
    );
    await expect(c.auth!.signOut()).rejects.toMatchObject({
      message: 'The console could not reach the BranchSAN engine.',
    });
    // before: nothing changed here, and the page stayed signed in and connected
    expect(c.problem).toBe('signed-out');
    expect(c.state).toBe('disconnected');
    await new Promise((r) => setTimeout(r, 100));
    expect(server.handshakes).toHaveLength(1);
  });

  it('shows the engine’s own refusal and stops retrying until asked again', async () => {
    const refusal = new SignInError(
      'The console answers only at its own address, 127.0.0.1, not at "san.example:8450".',
      'Open the console at http://127.0.0.1:PORT/.',
      403,
    );
    const session = fakeSession(refusal);
    const c = connect({ session: session.api });
    await until(() => c.problem === 'refused');
    expect(c.refusal).toEqual({ message: refusal.message, hint: refusal.hint });
    expect(c.state).toBe('disconnected');
    const checks = session.log.length;
    await new Promise((r) => setTimeout(r, 100));
    expect(session.log).toHaveLength(checks); // no retry loop
    expect(server.handshakes).toHaveLength(0);
    // fixed on the server (or opened at the right address): Try again connects
    session.set({ authenticated: true, setupRequired: false });
    await c.auth!.refresh();
    await until(() => c.state === 'connected');
    expect(c.problem).toBeNull();
    expect(c.refusal).toBeNull();
  });

  it('asking again while the engine still refuses keeps its words on the page', async () => {
    const refusal = new SignInError('Not at this address.', 'Open the right one.', 403);
    const session = fakeSession(refusal);
    const c = connect({ session: session.api });
    await until(() => c.problem === 'refused');
    const seen: string[] = [];
    c.onProblem((p) => seen.push(`problem:${p}`));
    c.onState((s) => seen.push(`state:${s}`));
    await c.auth!.refresh();
    expect(seen).toEqual([]);
    expect(c.refusal).toEqual({ message: refusal.message, hint: refusal.hint });

    // other words: the problem is told again (the page reads the refusal when told)
    const other = new SignInError('The password file cannot be read.', 'Check it.', 500);
    session.set(other);
    await c.auth!.refresh();
    expect(seen).toEqual(['problem:refused']);
    expect(c.refusal).toEqual({ message: other.message, hint: other.hint });
  });

  it('a refusal after a lost link is shown the same way', async () => {
    const session = fakeSession({ authenticated: true, setupRequired: false });
    const c = connect({ session: session.api });
    const socket = await server.connection(1);
    await until(() => c.state === 'connected');
    session.set(
      new SignInError('The engine could not process the sign-in request.', 'Retry.', 500),
    );
    socket.close(1011, 'gone');
    await until(() => c.problem === 'refused');
    expect(c.refusal?.message).toBe('The engine could not process the sign-in request.');
  });

  it('has no auth without the session endpoints', () => {
    const c = connect();
    expect(c.auth).toBeUndefined();
  });

  it('replaces a link that goes silent', async () => {
    const c = connect({ idleTimeoutMs: 80 });
    await server.connection(1);
    await until(() => c.state === 'connected');
    await server.connection(2); // no frame for 80 ms: dropped and reopened
    await until(() => c.state === 'connected');
    expect(states.slice(0, 3)).toEqual(['connected', 'disconnected', 'connected']);
  });

  it('gives up on a handshake the engine’s host never answers, and tries again', async () => {
    // A host that takes the TCP connection and then says nothing (a hung engine, a
    // firewall that swallows the answers): the browser would wait minutes for it.
    const accepted: net.Socket[] = [];
    let closed = 0;
    const silent = net.createServer((s) => {
      accepted.push(s);
      s.on('close', () => closed++).resume();
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const { port } = silent.address() as net.AddressInfo;
    try {
      const c = connect({ url: `ws://127.0.0.1:${port}/api`, idleTimeoutMs: 100 });
      await until(() => accepted.length >= 2);
      expect(states[0]).toBe('disconnected');
      expect(c.state).not.toBe('connected');
      await until(() => closed >= 1); // the client let go of the first one
    } finally {
      for (const s of accepted) s.destroy();
      await new Promise((r) => silent.close(r));
    }
  });

  it('stops for good on close(), failing what was pending', async () => {
    const c = connect();
    const socket = await server.connection(1);
    await until(() => c.state === 'connected');
    const received = server.nextMessage(socket);
    const pending = c.call('system.status', {});
    await received;
    c.close();
    await expect(pending).rejects.toBeInstanceOf(ApiError);
    expect(c.state).toBe('disconnected');
    await new Promise((r) => setTimeout(r, 100));
    expect(server.handshakes).toHaveLength(1);
  });
});

describe('consoleSocketUrl', () => {
  it('puts the endpoint beside the page, ws for http and wss for https', () => {
    expect(consoleSocketUrl('http://127.0.0.1:43567/?token=x#/status')).toBe(
      'ws://127.0.0.1:43567/api',
    );
    expect(consoleSocketUrl('https://san-a.branch.example:8443/index.html#/')).toBe(
      'wss://san-a.branch.example:8443/api',
    );
    expect(consoleSocketUrl('http://localhost:9000/console/')).toBe(
      'ws://localhost:9000/console/api',
    );
  });
});

function answer(socket: { send(text: string): void }, id: unknown, result: unknown): void {
  socket.send(JSON.stringify({ jsonrpc: '2.0', id, result }));
}

async function startTestEngineSocketOn(port: number): Promise<TestEngineSocket> {
  // The client keeps the old URL, so the new server must listen on the same port.
  for (let i = 0; ; i++) {
    try {
      return await startTestEngineSocket({ port });
    } catch (e) {
      if (i > 20) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
