/**
 * A console secret file the engine cannot use (its TLS key or certificate, its admin
 * password file), on a real engine process: the engine starts and serves its storage,
 * the console is not served (never over plain HTTP), and an error log line, a
 * console.unavailable event and a listener.down alert say what happened, what to run,
 * and that the next start reads the files again. Before, the start was refused after
 * the NVMe/TCP target was restored, and a service manager restarting the engine
 * brought the target up and down in a loop. A named pipe in the key's (or the
 * password file's) place used to hold the engine's thread in open() for good (SIGTERM
 * too); the password file, read again while the engine serves, too.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Alert, EventRecord } from '../../contract/api.js';
import { PasswordFile } from '../../engine/src/control/auth/password.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { connectSocket } from '../helpers/api.js';
import { killStarted, start } from '../helpers/cli-process.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';
import { until } from '../helpers/wait.js';

const NOBODY = { uid: 65534, gid: 65534 };
const NQN = 'nqn.2026-11.io.branchsan.test:console-tls';
const PASSWORD = 'correct horse battery';
const root = process.getuid?.() === 0;
const dirs: string[] = [];
const engines: RunningEngine[] = [];

afterEach(async () => {
  killStarted();
  for (const e of engines.splice(0)) await e.stop();
});
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** `serve --data DATA` with these: the console on, over TLS. */
const flags = (data: string) => [
  ...['--socket', path.join(data, 'engine.sock')],
  ...['--console-port', '0', '--console-tls', 'on'],
];
const serve = async (data: string, user?: { uid: number; gid: number }) => {
  const e = await startEngine({ dataDir: data, args: flags(data), ...(user ? { user } : {}) });
  engines.push(e);
  return e;
};
const fingerprint = (e: RunningEngine) =>
  e.lines.find((l) => l.fingerprint256 !== undefined)?.fingerprint256;

/**
 * Starts an engine on `data` whose console cannot be served; checks that it serves the
 * NVMe/TCP target on `port`, and says `problem` (the secret's message and hint) in its
 * log, system.console, an event and an alert, and that a restart brings it back.
 */
async function expectServedWithoutConsole(
  data: string,
  port: number,
  problem: string,
  user?: { uid: number; gid: number },
): Promise<void> {
  const e = await serve(data, user);
  const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN });
  await ctrl.close(); // storage is served
  const said =
    `The web console is not served: ${problem} Once they are fixed, restart the engine: ` +
    `the console's files are read at its start only.`;
  const logged = e.lines.find((l) => l.level === 'error' && l.msg !== 'engine ready');
  expect(logged?.msg).toBe(
    `${said} Storage keeps serving, and the desktop app and the branchsan command reach the engine through its API socket; the Prometheus endpoint /metrics, served by the console, is not served either.`,
  );
  const ready = e.lines.find((l) => l.msg === 'engine ready');
  expect(ready?.consoleUrl).toBeNull();
  expect(ready?.consoleProblem).toBe(said);
  expect(e.lines.filter((l) => l.fingerprint256 !== undefined)).toEqual([]);
  const api = await connectSocket(e.socketPath);
  try {
    expect(await api.call('system.console', {})).toMatchObject({
      enabled: true,
      url: null,
      listening: false,
      problem: said,
      tls: false,
      certificateFingerprint: null,
    });
    const events = (await api.call('events.list', { type: 'console.unavailable', limit: 5 }))
      .events as EventRecord[];
    expect(events.map((ev) => [ev.severity, ev.message])).toEqual([['error', logged!.msg]]);
    const [alert] = await until(async () => {
      const a = (await api.call('alerts.list', { active: true })).alerts.filter(
        (x: Alert) => x.rule === 'listener.down' && x.subject === 'console',
      );
      return a.length > 0 ? a : undefined;
    }, 15_000);
    expect(alert!.severity).toBe('error');
    expect(alert!.message).toContain(said);
    expect(alert!.message).toContain('The engine tries again at its next start.');
  } finally {
    api.close();
  }
}

/** A data directory with a console certificate made, and a target served on a port. */
async function servedData(user?: { uid: number; gid: number }) {
  let data: string;
  if (user) {
    // not under the run's TMPDIR, which only root may enter
    const base = fs.mkdtempSync('/dev/shm/branchsan-tls-access-');
    dirs.push(base);
    fs.chmodSync(base, 0o755);
    data = path.join(base, 'data');
    fs.mkdirSync(data);
    fs.chownSync(data, user.uid, user.gid);
  } else {
    data = tempDir();
    dirs.push(data);
  }
  const port = await freePort();
  const e = await serve(data, user);
  const api = await connectSocket(e.socketPath);
  await api.call('target.subsystem.create', { nqn: NQN, allowAnyHost: true });
  await api.call('target.port.add', { host: '127.0.0.1', port });
  await api.call('target.namespace.add', {
    nqn: NQN,
    backend: { kind: 'memory', sizeBytes: 1 << 20 },
  });
  api.close();
  await engines.splice(engines.indexOf(e), 1)[0]!.stop();
  const key = path.join(data, 'secrets', 'console-tls.key');
  return { data, port, key, made: fingerprint(e) };
}

describe('a console TLS file the engine cannot use', () => {
  it('starts the engine with the console off when others can read the key; chmod and a restart bring it back, same certificate', async () => {
    const { data, port, key, made } = await servedData();
    fs.chmodSync(key, 0o644);
    await expectServedWithoutConsole(
      data,
      port,
      `The secret ${key} is readable by other users (mode 644). Run: chmod 600 ${key}  (or delete it and restart the engine to have a new certificate made, whose new fingerprint browsers then ask to trust).`,
    );
    await engines.pop()!.stop();

    fs.chmodSync(key, 0o600);
    const again = await serve(data);
    expect(fingerprint(again)).toBe(made);
    expect(again.consoleUrl).toMatch(/^https:/);
  });

  it('starts the engine at once with the console off when a named pipe is in the key file’s place', async () => {
    const { data, port, key } = await servedData();
    fs.rmSync(key);
    execFileSync('mkfifo', ['-m', '600', key]);
    await expectServedWithoutConsole(
      data,
      port,
      `The secret ${key} is a special file (a named pipe, socket or device), not a regular file. Run: rm -r ${key}, then restart the engine: it makes a new certificate, whose new fingerprint browsers then ask to trust.`,
    );
  });

  it('still refuses the start, before serving anything, for a console beyond loopback without TLS', async () => {
    const data = tempDir();
    dirs.push(data);
    const r = await start(
      ['serve', '--data', data, '--console-host', '0.0.0.0', '--console-tls', 'off'],
      15_000,
    ).exited;
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('Refusing to serve the web console on 0.0.0.0 without TLS');
    expect(fs.existsSync(path.join(data, 'branchsan.db'))).toBe(false);
  });

  it.skipIf(!root)(
    'starts the engine with the console off, saying the owner, the mode and the chown to run; a restart serves the same certificate once it is the engine’s',
    async () => {
      const { data, port, key, made } = await servedData(NOBODY);
      fs.chownSync(key, 0, 0);
      await expectServedWithoutConsole(
        data,
        port,
        `The secret ${key} cannot be read by the engine (EACCES: it belongs to uid 0 with mode 600, and the engine runs as nobody, uid 65534). Run as root: chown nobody ${key} && chmod 600 ${key}  (or delete it and restart the engine to have a new certificate made, whose new fingerprint browsers then ask to trust).`,
        NOBODY,
      );
      await engines.pop()!.stop();

      fs.chownSync(key, NOBODY.uid, NOBODY.gid);
      const again = await serve(data, NOBODY);
      expect(fingerprint(again)).toBe(made);
    },
  );
});

/** A request to the console over its TLS (pinned to its certificate): status and body. */
function consoleRequest(
  e: RunningEngine,
  method: string,
  route: string,
  body?: unknown,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const ca = fs.readFileSync(path.join(e.dataDir, 'secrets', 'console-tls.crt'), 'utf8');
  const payload = body === undefined ? undefined : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(route, e.consoleUrl!),
      {
        method,
        ca,
        timeout: 5_000,
        headers: payload ? { 'Content-Type': 'application/json' } : {},
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) }));
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer to ${method} ${route} in 5 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

describe('a console admin password file the engine cannot use', () => {
  const passwordFile = (data: string) => path.join(data, 'secrets', 'console-password');
  const passwordHint = 'or set a new password with: branchsan passwd --data DIR';

  it('starts the engine with the console off when others can read it; chmod and a restart bring the console back, the password still good', async () => {
    const { data, port } = await servedData();
    const file = passwordFile(data);
    await PasswordFile.inDataDir(data).set(PASSWORD);
    fs.chmodSync(file, 0o644);
    await expectServedWithoutConsole(
      data,
      port,
      `The console password file ${file} is readable by other users (mode 644). Run: chmod 600 ${file}  (${passwordHint}).`,
    );
    await engines.pop()!.stop();

    fs.chmodSync(file, 0o600);
    const again = await serve(data);
    const login = await consoleRequest(again, 'POST', '/api/login', { password: PASSWORD });
    expect(login.status).toBe(200);
  });

  it.each([
    ['a directory', (f: string) => fs.mkdirSync(f, { mode: 0o700 }), 'a directory'],
    [
      'a named pipe',
      (f: string) => execFileSync('mkfifo', ['-m', '600', f]),
      'a special file (a named pipe, socket or device)',
    ],
  ])(
    'starts the engine at once with the console off when %s is in its place',
    async (_, make, what) => {
      const { data, port } = await servedData();
      const file = passwordFile(data);
      make(file);
      await expectServedWithoutConsole(
        data,
        port,
        `The console password file ${file} is ${what}, not a regular file. Run: rm -r ${file}, then set a new password with: branchsan passwd --data DIR.`,
      );
    },
  );

  it.skipIf(!root)(
    'starts the engine with the console off when another user owns it, saying the chown to run',
    async () => {
      const { data, port } = await servedData(NOBODY);
      const file = passwordFile(data);
      await PasswordFile.inDataDir(data).set(PASSWORD); // as root: root's file
      await expectServedWithoutConsole(
        data,
        port,
        `The console password file ${file} cannot be read by the engine (EACCES: it belongs to uid 0 with mode 600, and the engine runs as nobody, uid 65534). Run as root: chown nobody ${file} && chmod 600 ${file}  (${passwordHint}).`,
        NOBODY,
      );
    },
  );

  // Before, the next look at the file (a sign-in, the session check) opened the pipe and
  // waited for a writer: the engine's thread, storage and API socket included, for good.
  it('refuses a sign-in at once, saying what to run, when a named pipe is put in its place while the engine serves', async () => {
    const { data, port } = await servedData();
    const file = passwordFile(data);
    await PasswordFile.inDataDir(data).set(PASSWORD);
    const e = await serve(data);
    fs.rmSync(file);
    execFileSync('mkfifo', ['-m', '600', file]);
    const login = await consoleRequest(e, 'POST', '/api/login', { password: PASSWORD });
    expect(login).toEqual({
      status: 400,
      body: {
        error: `The console password file ${file} is a special file (a named pipe, socket or device), not a regular file.`,
        hint: `Run: rm -r ${file}, then set a new password with: branchsan passwd --data DIR.`,
      },
    });
    expect((await consoleRequest(e, 'GET', '/api/session')).status).toBe(400);
    const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN });
    await ctrl.close(); // storage is served
    const api = await connectSocket(e.socketPath);
    expect((await api.call('system.status', {})).pid).toBe(e.pid);
    // Before: problem null, as in the "engine ready" line of a start that met it so
    // (its file swapped while the console's listen() was held, measured with strace).
    expect((await api.call('system.console', {})).problem).toBe(
      `The web console is served, but no one can sign in to it: The console password file ${file} is a special file (a named pipe, socket or device), not a regular file. ` +
        `Run: rm -r ${file}, then set a new password with: branchsan passwd --data DIR.`,
    );
    fs.rmSync(file);
    await PasswordFile.inDataDir(data).set(PASSWORD); // as said; no restart
    await until(async () =>
      (await api.call('system.console', {})).problem === null ? true : undefined,
    );
    expect((await consoleRequest(e, 'POST', '/api/login', { password: PASSWORD })).status).toBe(
      200,
    );
    api.close();
  });
});
