/**
 * First-run setup, like a login, checks its request before the sign-in throttle: a
 * request with no token to check (or no password to set, or no JSON) is answered 400
 * and uses none of the attempt budget (per client, and shared by all clients), nor
 * counts as a failure. Before, a few senders of `{}` locked everyone out of setting
 * the first password without ever guessing a token. A real ConsoleServer and password
 * file.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsoleAuth } from '../../../engine/src/control/auth/console-auth.js';
import { PasswordFile } from '../../../engine/src/control/auth/password.js';
import { ConsoleServer } from '../../../engine/src/control/console-server.js';
import { RpcDispatcher, type Handlers } from '../../../engine/src/control/rpc.js';
import { SessionHub } from '../../../engine/src/control/sessions.js';
import { createLogger } from '../../../engine/src/util/log.js';

const TOKEN = 'the-setup-token';

let top: string;
let server: ConsoleServer;

beforeAll(async () => {
  top = mkdtempSync(join(tmpdir(), 'bsan-setup-throttle-'));
  const root = join(top, 'renderer');
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>BranchSAN</title>');
  const log = createLogger({ sink: { write: () => undefined } });
  const auth = new ConsoleAuth({
    passwords: new PasswordFile(join(top, 'data', 'secrets', 'console-password'), 0),
    setupToken: TOKEN,
    tls: false,
    loopbackOnly: true,
    log,
  });
  server = new ConsoleServer(
    { host: '127.0.0.1', port: 0, root, token: TOKEN, auth },
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

function setup(body: string): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `http://127.0.0.1:${server.port}/api/setup`,
      { method: 'POST', headers: { 'Content-Type': 'application/json' } },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text || '{}') }));
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('console first-run setup: requests with nothing to check', () => {
  it('are refused 400 and use none of the attempt budget', async () => {
    const refused = async (body: string, error: string) => {
      const res = await setup(body);
      expect(res.status).toBe(400);
      expect(res.body.error).toBe(error);
    };
    // more than a client's 30 attempts a minute (before: the 31st was refused 429)
    for (let i = 0; i < 16; i++) {
      await refused('not json', 'The request body is not valid JSON.');
      await refused(JSON.stringify({ token: TOKEN }), 'The request has no password.');
    }
    // more than the 5 failures that lock a client (before: 401 failures, then 429)
    for (let i = 0; i < 3; i++) {
      await refused('{}', 'The request has no access token.');
      await refused(
        '{"token":"","password":"a good password"}',
        'The request has no access token.',
      );
    }
    const ok = await setup(JSON.stringify({ token: TOKEN, password: 'a good password' }));
    expect(ok.status).toBe(201);
  });
});
