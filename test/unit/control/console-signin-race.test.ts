/**
 * A sign-in whose password is replaced (`branchsan passwd`) while it is being checked:
 * the session it opens belongs to the password it was checked against, so the new
 * password ends it, as it ends every session opened before. A real ConsoleServer and
 * password file; the file is replaced on disk at the moment the sign-in has read it.
 */
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsoleAuth } from '../../../engine/src/control/auth/console-auth.js';
import {
  formatPasswordHash,
  hashPassword,
  PasswordFile,
  type PasswordHash,
} from '../../../engine/src/control/auth/password.js';
import { ConsoleServer } from '../../../engine/src/control/console-server.js';
import { RpcDispatcher, type Handlers } from '../../../engine/src/control/rpc.js';
import { SessionHub } from '../../../engine/src/control/sessions.js';
import { createLogger } from '../../../engine/src/util/log.js';

const OLD = 'the old password';
const NEW = 'the new password';

/** The real password file, re-read at every look (no cache), that can be replaced on cue. */
class PasswdDuringSignIn extends PasswordFile {
  /** Runs once, right after the next look that sign-in makes (maxAgeMs 0). */
  onSignInRead?: () => void;
  override current(now = Date.now(), maxAgeMs?: number): PasswordHash | null {
    const hash = super.current(now, maxAgeMs);
    if (maxAgeMs === 0 && this.onSignInRead) {
      const run = this.onSignInRead;
      this.onSignInRead = undefined;
      run();
    }
    return hash;
  }
}

let top: string;
let server: ConsoleServer;
let passwords: PasswdDuringSignIn;

beforeAll(async () => {
  top = mkdtempSync(join(tmpdir(), 'bsan-signin-race-'));
  const root = join(top, 'renderer');
  mkdirSync(root, { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>BranchSAN</title>');
  const log = createLogger({ sink: { write: () => undefined } });
  passwords = new PasswdDuringSignIn(join(top, 'data', 'secrets', 'console-password'), 0);
  await passwords.set(OLD);
  const auth = new ConsoleAuth({
    passwords,
    setupToken: 'token',
    tls: false,
    loopbackOnly: true,
    log,
  });
  server = new ConsoleServer(
    { host: '127.0.0.1', port: 0, root, token: 'token', auth },
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

function request(
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      `http://127.0.0.1:${server.port}${path}`,
      { method, headers },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () =>
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            body: JSON.parse(text || '{}'),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

describe('console sign-in: the password replaced while it is checked', () => {
  it('opens no session that outlives the replaced password', async () => {
    // `branchsan passwd` as it writes: the new hash beside the file, renamed over it
    const replacement = formatPasswordHash(await hashPassword(NEW)) + '\n';
    passwords.onSignInRead = () => {
      const tmp = `${passwords.file}.passwd.tmp`;
      writeFileSync(tmp, replacement, { mode: 0o600 });
      renameSync(tmp, passwords.file);
    };
    const login = await request(
      'POST',
      '/api/login',
      { 'Content-Type': 'application/json' },
      JSON.stringify({ password: OLD }),
    );
    expect(passwords.onSignInRead).toBeUndefined(); // the file was replaced during it
    const cookie = login.headers['set-cookie']?.[0]?.split(';')[0] ?? '';
    const key = typeof login.body.pageKey === 'string' ? login.body.pageKey : '';

    // before: the session took the password of the moment it opened (the new one), and
    // the old password's holder stayed signed in after the change
    const session = await request('GET', '/api/session', {
      Cookie: cookie,
      'X-BranchSAN-Key': key,
    });
    expect(session.body.authenticated).toBe(false);

    // a sign-in with the new password opens a session that stays
    const again = await request(
      'POST',
      '/api/login',
      { 'Content-Type': 'application/json' },
      JSON.stringify({ password: NEW }),
    );
    expect(again.status).toBe(200);
    const live = await request('GET', '/api/session', {
      Cookie: again.headers['set-cookie']?.[0]?.split(';')[0] ?? '',
      'X-BranchSAN-Key': String(again.body.pageKey),
    });
    expect(live.body.authenticated).toBe(true);
  });
});
