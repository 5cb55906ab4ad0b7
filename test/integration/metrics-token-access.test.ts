/**
 * A Prometheus scrape token file the engine cannot use, on a real engine process: the
 * engine starts all the same (storage is served; the token is a monitoring secret),
 * the endpoint refuses every scrape, and the log, an event and an alert say what to
 * run; metrics.settings.set with rotateToken brings it back. With the endpoint off the
 * file is not read at all. Before, either stopped the engine's start.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Alert, EventRecord } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { fakeLogger } from '../helpers/fake-logger.js';
import { freePort } from '../helpers/linux-host.js';
import { until } from '../helpers/wait.js';

const NQN = 'nqn.2026-11.io.branchsan.test:metrics-token';

let engine: RunningEngine | undefined;
let api: SocketClient | undefined;
const dirs: string[] = [];

afterEach(async () => {
  api?.close();
  await engine?.stop();
  api = engine = undefined;
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** Syslog delivery goes to a file beside the data directory (a fake logger(1)). */
async function start(data: string): Promise<SocketClient> {
  const { command } = fakeLogger(path.dirname(data));
  engine = await startEngine({ dataDir: data, env: { BRANCHSAN_SYSLOG_COMMAND: command } });
  api = await connectSocket(engine.socketPath);
  return api;
}

const scrape = (token?: string) =>
  fetch(new URL('/metrics', engine!.consoleUrl!), {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });

const endpointAlerts = async () =>
  (await api!.call('alerts.list', { active: true })).alerts.filter(
    (a: Alert) => a.rule === 'metrics.endpoint',
  );

describe('a scrape token file the engine cannot use', () => {
  it('starts the engine and serves storage; the endpoint refuses scrapes, says what to run, and rotateToken brings it back', async () => {
    const data = path.join(tempDir(), 'data');
    dirs.push(path.dirname(data));
    const port = await freePort();
    let c = await start(data);
    await c.call('target.subsystem.create', { nqn: NQN, allowAnyHost: true });
    await c.call('target.port.add', { host: '127.0.0.1', port });
    await c.call('target.namespace.add', {
      nqn: NQN,
      backend: { kind: 'memory', sizeBytes: 1 << 20 },
    });
    const on = await c.call('metrics.settings.set', { prometheusEnabled: true });
    const file = on.prometheus.tokenFile;
    api!.close();
    await engine!.stop();
    fs.chmodSync(file, 0o644);

    c = await start(data);
    const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN });
    await ctrl.close(); // storage is served
    const problem = `The secret ${file} is readable by other users (mode 644). Run: chmod 600 ${file}  (or delete it and, once the engine runs, call metrics.settings.set with rotateToken: true for a new one, which scrapers then need).`;
    const logged = engine!.lines.find((l) => l.level === 'error' && l.component === 'metrics');
    expect(logged?.msg).toBe(
      `The Prometheus endpoint /metrics refuses every scrape: ${problem} After a chmod or chown, call metrics.settings.set with prometheusEnabled: true to have the file read again. Storage keeps serving meanwhile.`,
    );
    const events = (await c.call('events.list', { type: 'metrics.token-unusable', limit: 5 }))
      .events as EventRecord[];
    expect(events.map((e) => [e.severity, e.message])).toEqual([['error', logged!.msg]]);
    // delivered as every event is (syslog by default); before, it was recorded before the
    // engine's notifications started, and reached the event log only
    const syslog = path.join(path.dirname(data), 'syslog.txt');
    const delivered = await until(() => {
      const lines = fs.existsSync(syslog) ? fs.readFileSync(syslog, 'utf8').split('\n') : [];
      return lines.find((l) => l.includes('metrics.token-unusable'));
    }, 10_000);
    expect(delivered).toContain(`[metrics.token-unusable] ${logged!.msg}`);
    const [alert] = await until(async () => {
      const a = await endpointAlerts();
      return a.length > 0 ? a : undefined;
    }, 15_000);
    expect(alert!.severity).toBe('error');
    expect(alert!.title).toBe(
      'Prometheus endpoint refuses every scrape: its token file cannot be used',
    );
    expect(alert!.message).toContain(problem);
    expect((await c.call('metrics.settings.get', {})).prometheus.enabled).toBe(true);
    expect((await scrape(on.token)).status).toBe(401);

    const rotated = await c.call('metrics.settings.set', { rotateToken: true });
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect((await scrape(rotated.token)).status).toBe(200);
    await until(async () => ((await endpointAlerts()).length === 0 ? true : undefined), 15_000);
  });

  it('is not read while the endpoint is off: a directory in its place stops nothing', async () => {
    const data = path.join(tempDir(), 'data');
    dirs.push(path.dirname(data));
    fs.mkdirSync(path.join(data, 'secrets', 'metrics-token'), { recursive: true, mode: 0o700 });
    const c = await start(data);
    expect((await c.call('metrics.settings.get', {})).prometheus.enabled).toBe(false);
    expect(engine!.lines.filter((l) => l.level === 'error')).toEqual([]);
    expect((await c.call('events.list', { type: 'metrics.token-unusable' })).events).toEqual([]);
    expect((await scrape()).status).toBe(404);
  });
});
