/**
 * Addresses the engine cannot listen on when it starts (another program holds the web
 * console's port and an NVMe/TCP port's): a real engine serves its API and storage all
 * the same, records why, raises an alert for each, and listens once they are free.
 */
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';

let engine: RunningEngine | undefined;
let api: SocketClient | undefined;
const squatters: net.Server[] = [];

afterAll(async () => {
  api?.close();
  await engine?.stop();
  for (const s of squatters) if (s.listening) await new Promise((r) => s.close(r));
});

async function squat(port: number): Promise<net.Server> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(port, '127.0.0.1', r));
  squatters.push(s);
  return s;
}

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const activeListenerAlerts = async () =>
  (await api!.call('alerts.list', { active: true })).alerts.filter(
    (a) => a.rule === 'listener.down',
  );

describe('listeners the engine cannot have at start', () => {
  it('serves storage and the API, alerts, and listens once the ports are free', async () => {
    const dataDir = path.join(tempDir(), 'data');
    // a first run configures an NVMe/TCP port
    const nvmePort = await freePort();
    engine = await startEngine({ dataDir });
    api = await connectSocket(engine.socketPath);
    const { portId } = await api.call('target.port.add', { host: '127.0.0.1', port: nvmePort });
    api.close();
    await engine.stop();

    // both ports taken by other programs while the engine was down
    const consolePort = await freePort();
    const consoleSquatter = await squat(consolePort);
    const nvmeSquatter = await squat(nvmePort);
    engine = await startEngine({ dataDir, args: ['--console-port', String(consolePort)] });
    const ready = engine.lines.find((l) => l.msg === 'engine ready')!;
    expect(engine.consoleUrl).toMatch(
      new RegExp(`^http://127\\.0\\.0\\.1:${consolePort}/\\?token=`),
    );
    expect(ready.consoleProblem).toMatch(
      new RegExp(
        `^Cannot listen for the web console on 127\\.0\\.0\\.1:${consolePort}: EADDRINUSE\\. `,
      ),
    );

    api = await connectSocket(engine.socketPath);
    expect((await api.call('system.status', {})).pid).toBe(engine.pid);
    const info = await api.call('system.console', {});
    expect(info).toMatchObject({ enabled: true, listening: false });
    expect(info.problem).toContain(`ss -ltnp 'sport = :${consolePort}'`);
    const events = (await api.call('events.list', { limit: 50 })).events;
    expect(events.find((e) => e.type === 'console.unavailable')?.message).toMatch(
      /^The web console is not listening: Cannot listen .*EADDRINUSE.* tried again every 5 s\.$/,
    );

    const alerts = await waitFor('both alerts', async () => {
      const a = await activeListenerAlerts();
      return a.length === 2 ? a : undefined;
    });
    const bySubject = new Map(alerts.map((a) => [a.subject, a]));
    expect(bySubject.get('console')).toMatchObject({
      severity: 'warning',
      title: `Web console is not listening on 127.0.0.1:${consolePort}`,
    });
    expect(bySubject.get('console')!.message).toContain('Storage keeps serving');
    expect(bySubject.get(`nvme-tcp port ${portId}`)).toMatchObject({
      severity: 'error',
      title: `NVMe/TCP port 127.0.0.1:${nvmePort} is not listening`,
    });
    expect(bySubject.get(`nvme-tcp port ${portId}`)!.message).toMatch(
      /^Hosts cannot connect through NVMe\/TCP port .*EADDRINUSE\. Another program uses that port/,
    );

    // the other programs let go: the engine listens by itself, and the alerts clear
    await new Promise((r) => consoleSquatter.close(r));
    await new Promise((r) => nvmeSquatter.close(r));
    await waitFor('console listening', async () =>
      (await api!.call('system.console', {})).listening ? true : undefined,
    );
    const session = await fetch(`http://127.0.0.1:${consolePort}/api/session`);
    expect(await session.json()).toMatchObject({ authenticated: false, setupRequired: true });
    expect((await api.call('system.console', {})).problem).toBeNull();
    await waitFor('alerts cleared', async () =>
      (await activeListenerAlerts()).length === 0 ? true : undefined,
    );
    const later = (await api.call('events.list', { limit: 50 })).events.map((e) => e.type);
    expect(later).toContain('console.listening');
    expect(later).toContain('target.port.online');

    api.close();
    api = undefined;
    expect(await engine.stop()).toBe(0);
    engine = undefined;
  }, 90_000);
});
