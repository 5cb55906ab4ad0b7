/**
 * The web console shares the engine's process with the NVMe/TCP target: nothing a
 * client sends may stop it, and connections may not pile up until the process runs
 * out of file descriptors. A real ConsoleServer on loopback, raw sockets as clients.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PasswordFile } from '../../../engine/src/control/auth/password.js';
import type { ConsoleServer } from '../../../engine/src/control/console-server.js';
import { metricsRoute } from '../../../engine/src/control/metrics-endpoint.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { loopbackConsole } from '../../helpers/console-server.js';
import { until } from '../../helpers/wait.js';

let top: string;
let server: ConsoleServer;
let passwords: PasswordFile;
const errors: unknown[] = [];
const FIRST_REQUEST_MS = 300;
const PER_CLIENT = 6;

beforeAll(async () => {
  top = mkdtempSync(join(tmpdir(), 'bsan-console-conn-'));
  const root = join(top, 'renderer');
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>BranchSAN</title>');
  const log = createLogger({
    sink: { write: (line: string) => void (line.includes('"level":"error"') && errors.push(line)) },
  });
  ({ server, passwords } = loopbackConsole({
    root,
    dataDir: join(top, 'data'),
    log,
    limits: { firstRequestMs: FIRST_REQUEST_MS, perClient: PER_CLIENT },
  }));
  await passwords.set('a long enough password');
  server.addRoute(metricsRoute({ enabled: () => true, token: () => 'tok', render: () => '' }));
  await server.listen();
});

afterAll(async () => {
  await server.close();
  rmSync(top, { recursive: true, force: true });
});

/** Sends `text` on a new connection; resolves with everything received until it closes. */
function exchange(text: string, timeoutMs = 3000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect(server.port, '127.0.0.1', () => s.write(text));
    let got = '';
    s.on('data', (d) => (got += d.toString()));
    s.on('close', () => resolve(got));
    s.on('error', reject);
    setTimeout(() => (s.destroy(), resolve(got)), timeoutMs).unref();
  });
}

/** Whether the console still answers a plain page request (on a connection of its own). */
async function serves(): Promise<boolean> {
  const reply = await exchange('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
  return reply.startsWith('HTTP/1.1 200 OK');
}

/** Opens a connection that sends nothing; resolves once connected. */
function idle(): Promise<net.Socket & { closedAt?: number }> {
  return new Promise((resolve, reject) => {
    const s: net.Socket & { closedAt?: number } = net.connect(server.port, '127.0.0.1', () =>
      resolve(s),
    );
    s.on('close', () => (s.closedAt = Date.now()));
    s.on('error', reject);
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('web console: requests that are not paths', () => {
  it('answers 400 to absolute-form and other non-path targets, and keeps serving', async () => {
    // Node's parser accepts these; `new URL` on them threw inside the request listener
    // and stopped the engine (target included) before this was fixed.
    for (const target of ['http://a:b/', 'http://[::1/metrics', '*', 'example.com:443']) {
      const reply = await exchange(
        `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`,
      );
      expect(reply.split('\r\n')[0], target).toBe('HTTP/1.1 400 Bad Request');
    }
    const reply = await exchange(
      'GET //a:b/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n',
    );
    expect(reply.split('\r\n')[0]).toBe('HTTP/1.1 404 Not Found');
    expect(await serves()).toBe(true);
  });

  it('refuses such a WebSocket upgrade with 400, and keeps serving', async () => {
    const reply = await exchange(
      'GET http://a:b/api HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
        'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
    );
    expect(reply.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    expect(await serves()).toBe(true);
  });

  it('an unusable password file refuses upgrades (401) instead of stopping the engine', async () => {
    chmodSync(passwords.file, 0o644); // as a restore or a hand edit might leave it
    expect(() => passwords.current(Date.now(), 0)).toThrow(/readable by other users/);
    try {
      const reply = await exchange(
        'GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n' +
          `Sec-WebSocket-Protocol: branchsan.v1\r\nCookie: branchsan_session=${'a'.repeat(43)}\r\n\r\n`,
      );
      expect(reply.split('\r\n')[0]).toBe('HTTP/1.1 401 Unauthorized');
      expect(await serves()).toBe(true);
    } finally {
      chmodSync(passwords.file, 0o600);
    }
  });
});

describe('web console: refused WebSocket upgrades', () => {
  it('closes refused upgrades, so clients that keep their half open hold no connection slots', async () => {
    // An upgrade is out of reach of the HTTP server's timeouts: the refusal closed only
    // the server's half, and a client that never closed its own held its slot for ever
    // (PER_CLIENT of them, and that client, all of loopback, was refused from then on).
    const held: { got: string; s: net.Socket }[] = [];
    for (let i = 0; i < PER_CLIENT; i++) {
      const s = net.connect({ port: server.port, host: '127.0.0.1', allowHalfOpen: true });
      const h = { got: '', s };
      s.on('data', (d) => (h.got += d.toString()));
      s.on('error', () => undefined);
      s.write(
        'GET /api HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
          'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      );
      held.push(h);
    }
    await until(() => held.every((h) => h.got.startsWith('HTTP/1.1 401 Unauthorized')), 5000);
    try {
      await until(() => serves(), 5000);
    } finally {
      for (const h of held) h.s.destroy();
    }
  });
});

describe('web console: connections', () => {
  it('closes a connection that sends no request in time; one that does is answered', async () => {
    const quiet = await idle();
    const asking = await exchange('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n');
    expect(asking.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    const opened = Date.now();
    for (let i = 0; i < 100 && quiet.closedAt === undefined; i++) await sleep(50);
    // Before: never closed (a flood of such connections used up the process's descriptors).
    expect(quiet.closedAt, 'the silent connection was closed').toBeDefined();
    expect(quiet.closedAt! - opened).toBeLessThan(5000);
  });

  it(`refuses a client's connections beyond ${PER_CLIENT} while its others stay open, then admits again`, async () => {
    // Different loopback addresses are one client: any local user can bind all of 127/8.
    const held: net.Socket[] = [];
    try {
      for (let i = 0; i < PER_CLIENT; i++) held.push(await idle());
      const extra = await new Promise<string>((resolve) => {
        const s = net.connect({ port: server.port, host: '127.0.0.1', localAddress: '127.0.0.9' });
        s.on('connect', () => s.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n'));
        let got = '';
        s.on('data', (d) => (got += d.toString()));
        s.on('close', () => resolve(got === '' ? 'closed unanswered' : got.split('\r\n')[0]!));
        s.on('error', () => undefined);
      });
      expect(extra).toBe('closed unanswered');
      expect(held.every((s) => !s.destroyed)).toBe(true);
    } finally {
      for (const s of held) s.destroy();
    }
    await sleep(50);
    expect(await serves()).toBe(true);
  });

  it('logged no internal error for any of this', () => {
    expect(errors).toEqual([]);
  });
});
