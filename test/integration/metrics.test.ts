/**
 * Metrics in a real engine process: a host writes over NVMe/TCP, the engine pushes
 * metrics.sample each second, metrics.query answers from the stored history, and the
 * opt-in Prometheus endpoint on the console's HTTP server obeys its bearer token.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MetricsSample } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { defaultPeerMemoryCap } from '../../engine/src/transport/tcp/peer-memory.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';
import { parseExposition } from '../unit/metrics/exposition.js';

const NQN = 'nqn.2026-11.io.branchsan.test:metrics';

let engine: RunningEngine;
let api: SocketClient;
let hostnqn: string;
const samples: MetricsSample[] = [];

beforeAll(async () => {
  engine = await startEngine({ dataDir: path.join(tempDir(), 'data') });
  api = await connectSocket(engine.socketPath);
  api.session.on('metrics.sample', (d) => samples.push(d as MetricsSample));
  const port = await freePort();
  await api.call('target.subsystem.create', { nqn: NQN, allowAnyHost: true });
  await api.call('target.port.add', { host: '127.0.0.1', port });
  await api.call('target.namespace.add', {
    nqn: NQN,
    backend: { kind: 'memory', sizeBytes: 16 << 20 },
  });
  const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN });
  hostnqn = ctrl.hostnqn;
  try {
    const ns = await ctrl.namespace(1);
    for (let i = 0; i < 64; i++) await ns.write(i * 8, randomBytes(4096));
    await ns.read(0, 8);
    // the engine samples each second: wait until a sample has seen the writes
    const deadline = Date.now() + 10_000;
    while (!samples.some((s) => s.namespaces.some((n) => n.writeIops > 0))) {
      if (Date.now() > deadline) throw new Error('no metrics.sample saw the writes');
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await ctrl.close();
  }
}, 60_000);

afterAll(async () => {
  api?.close();
  await engine?.stop();
});

describe('metrics in the engine', () => {
  it('pushes metrics.sample each second with node, namespace and host figures', () => {
    const busy = samples.find((s) => s.namespaces.some((n) => n.writeIops > 0))!;
    expect(busy.node.memTotalBytes).toBeGreaterThan(0);
    expect(busy.node.diskTotalBytes).toBeGreaterThan(0);
    expect(busy.namespaces[0]).toMatchObject({ nqn: NQN, nsid: 1 });
    expect(busy.namespaces[0]!.writeLatUs!.p99).toBeGreaterThan(0);
    expect(samples.some((s) => s.hosts.some((h) => h.hostnqn === hostnqn))).toBe(true);
  });

  it('answers metrics.series and metrics.query from the stored history', async () => {
    const { series } = await api.call('metrics.series', {});
    const key = `ns:${NQN}/1:write_iops`;
    expect(series.map((s) => s.key)).toEqual(
      expect.arrayContaining([key, 'node:mem_used_bytes', `host:${NQN}/${hostnqn}:write_bps`]),
    );
    const q = await api.call('metrics.query', { series: key, from: Date.now() - 60_000 });
    expect(q).toMatchObject({ tier: '1s', stepSec: 1, series: { key, unit: 'ops/s' } });
    const written = q.points.reduce((a, [, v]) => a + v, 0);
    expect(written).toBeGreaterThan(0);
    const bytes = await api.call('metrics.query', {
      series: { scope: 'namespace', nqn: NQN, nsid: 1, metric: 'write_bps' },
      from: Date.now() - 60_000,
    });
    expect(bytes.points.some(([, v]) => v > 0)).toBe(true);
    const missing = await apiError(
      api.call('metrics.query', { series: 'node:nothing', from: Date.now() - 1000 }),
    );
    expect(missing.message).toMatch(/No metric history/);
    const bad = await apiError(api.call('metrics.query', { series: key, from: 2000, to: 1000 }));
    expect(bad.message).toMatch(/to must be after from/);
  });

  it('pages metrics.series by key, with a prefix, and refuses a page larger than 5000', async () => {
    const all = (await api.call('metrics.series', {})).series.map((s) => s.key);
    expect(all.length).toBeGreaterThan(5);
    expect([...all].sort()).toEqual(all);
    const walked: string[] = [];
    let after: string | undefined;
    for (let pages = 0; ; pages++) {
      expect(pages).toBeLessThan(all.length);
      const page = await api.call('metrics.series', { limit: 2, ...(after ? { after } : {}) });
      walked.push(...page.series.map((s) => s.key));
      if (!page.next) break;
      expect(page.series).toHaveLength(2);
      after = page.next;
    }
    expect(walked).toEqual(all);
    const ns = await api.call('metrics.series', { prefix: 'ns:' });
    expect(ns.series.length).toBeGreaterThan(0);
    expect(ns.series.map((s) => s.key)).toEqual(all.filter((k) => k.startsWith('ns:')));
    expect(ns.next).toBeUndefined();
    const big = await apiError(api.call('metrics.series', { limit: 5001 }));
    expect(big.message).toMatch(/limit/);
  });

  it('serves /metrics only when enabled and only with the bearer token', async () => {
    const url = new URL('/metrics', engine.consoleUrl!).toString();
    expect((await fetch(url)).status).toBe(404);
    const on = await api.call('metrics.settings.set', { prometheusEnabled: true });
    expect(on.prometheus.enabled).toBe(true);
    expect(fs.statSync(on.prometheus.tokenFile).mode & 0o777).toBe(0o600);
    expect(on.prometheus.tokenFile.startsWith(path.join(engine.dataDir, 'secrets'))).toBe(true);
    expect((await fetch(url)).status).toBe(401);
    const res = await fetch(url, { headers: { Authorization: `Bearer ${on.token}` } });
    expect(res.status).toBe(200);
    const fams = parseExposition(await res.text());
    const writes = fams.get('branchsan_namespace_write_ops_total')!.samples;
    expect(writes.find((s) => s.labels.nqn === NQN && s.labels.nsid === '1')!.value).toBe(64);
    expect(fams.get('branchsan_namespace_write_latency_seconds')!.type).toBe('histogram');
    expect(fams.has('branchsan_node_memory_used_bytes')).toBe(true);
    // the engine's NVMe/TCP connections against their memory cap (the host has closed)
    const one = (name: string) => fams.get(name)!.samples.map((s) => [s.labels, s.value]);
    expect(one('branchsan_nvme_tcp_held_cap_bytes')).toEqual([[{}, defaultPeerMemoryCap()]]);
    expect(one('branchsan_nvme_tcp_connections')).toEqual([[{}, 0]]);
    expect(one('branchsan_nvme_tcp_over_cap')).toEqual([[{}, 0]]);
    expect(one('branchsan_nvme_tcp_over_cap_episodes_total')).toEqual([[{}, 0]]);
    expect(one('branchsan_nvme_tcp_disconnected_total')).toEqual([
      [{ reason: 'no-progress' }, 0],
      [{ reason: 'over-cap' }, 0],
    ]);
    // the setting persists in the database: the settings read it back
    expect((await api.call('metrics.settings.get', {})).prometheus.enabled).toBe(true);
  });
});
