/**
 * settings.performance.cpuLatency end to end: a real engine (root, real PM QoS device)
 * takes the CPU wake-up latency request when host I/O flows, reports it in
 * system.status, and follows mode changes through the API.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { requestWithoutEffect } from '../../engine/src/service/cpu-latency.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';

const NQN = 'nqn.2026-11.io.branchsan.test:qos';

let engine: RunningEngine;
let api: SocketClient;
let nvmePort: number;

beforeAll(async () => {
  const dir = tempDir();
  engine = await startEngine({ dataDir: path.join(dir, 'data') });
  api = await connectSocket(engine.socketPath);
  nvmePort = await freePort();
  await api.call('target.subsystem.create', { nqn: NQN, allowAnyHost: true });
  await api.call('target.port.add', { host: '127.0.0.1', port: nvmePort });
  await api.call('target.namespace.add', {
    nqn: NQN,
    backend: { kind: 'file', path: path.join(dir, 'qos.img'), createSizeBytes: 8 << 20 },
  });
});
afterAll(async () => {
  api?.close();
  await engine?.stop();
});

async function until(check: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

const held = async () => (await api.call('system.status', {})).cpuLatency.held;

describe('CPU wake-up latency request', () => {
  it('is not held while the target is idle (default when-busy)', async () => {
    const s = await api.call('system.status', {});
    expect(s.cpuLatency).toEqual({
      mode: 'when-busy',
      held: false,
      unavailable: null,
      // this machine's own answer (a VM without a cpuidle driver gets the reason)
      noEffect: requestWithoutEffect(),
    });
    expect((await api.call('settings.get', {})).performance).toEqual({ cpuLatency: 'when-busy' });
  });

  it('is taken once host I/O flows', async () => {
    const ctrl = await NvmeController.connect({ host: '127.0.0.1', port: nvmePort, subnqn: NQN });
    try {
      const ns = await ctrl.namespace(1);
      const data = Buffer.alloc(4096, 7);
      await until(async () => {
        await ns.write(0, data);
        return held();
      });
    } finally {
      await ctrl.close();
    }
  });

  it('follows the mode set through the API', async () => {
    await api.call('settings.set', { performance: { cpuLatency: 'off' } });
    await until(async () => !(await held()));
    await api.call('settings.set', { performance: { cpuLatency: 'always' } });
    await until(held);
    expect((await api.call('system.status', {})).cpuLatency.mode).toBe('always');
  });

  it('refuses an unknown mode and keeps the stored one', async () => {
    const err = await apiError(
      api.call('settings.set', { performance: { cpuLatency: 'turbo' as 'off' } }),
    );
    expect(err.code).toBe(ErrorCode.InvalidParams);
    expect((await api.call('settings.get', {})).performance.cpuLatency).toBe('always');
  });
});
