/**
 * The console's TLS key or certificate file the engine cannot use, on a real engine
 * process started with the console's TLS on: the engine starts and serves its storage,
 * the console is not served (never over plain HTTP), and an error log line, a
 * console.unavailable event and a listener.down alert say what happened, what to run,
 * and that the next start reads the files again. Before, the start was refused after
 * the NVMe/TCP target was restored, and a service manager restarting the engine
 * brought the target up and down in a loop. A named pipe in the key's place used to
 * hold the engine's thread in open() for good (SIGTERM too).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { Alert, EventRecord } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { connectSocket } from '../helpers/api.js';
import { killStarted, start } from '../helpers/cli-process.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';
import { until } from '../helpers/wait.js';

const NOBODY = { uid: 65534, gid: 65534 };
const NQN = 'nqn.2026-11.io.branchsan.test:console-tls';
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
