/**
 * The Prometheus exposition of real core counters, parsed strictly, and the /metrics
 * route's rules: off → 404, no or wrong bearer token → 401, right token → the text.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { metricsRoute, REFUSED } from '../../../engine/src/control/metrics-endpoint.js';
import { MetricsSampler, targetIoSource } from '../../../engine/src/metrics/sampler.js';
import { escapeLabel, renderPrometheus } from '../../../engine/src/metrics/prometheus.js';
import {
  BLOCK,
  HOSTNQN,
  SUBNQN,
  makeTarget,
  ok,
  readSqe,
  session,
  writeSqe,
} from '../core/helpers.js';
import { parseExposition } from './exposition.js';

const procSources = {
  readText: async (p: string) =>
    p === '/proc/net/dev'
      ? 'h1\nh2\n  eth0: 100 1 0 0 0 0 0 0 200 2 0 0 0 0 0 0\n'
      : p === '/proc/meminfo'
        ? 'MemTotal: 1000 kB\nMemAvailable: 400 kB\n'
        : 'cpu  1 0 1 8 0 0 0 0\n',
  statfs: async () => ({ bsize: 512, blocks: 100, bfree: 10 }),
};

async function exposition(): Promise<string> {
  const { target } = makeTarget();
  const { io, cntlid } = await session(target);
  let now = 0;
  const sampler = new MetricsSampler({
    io: targetIoSource(target),
    dataDir: '/',
    node: procSources,
    clock: () => now,
  });
  await sampler.sample();
  ok(await io.submit(writeSqe(0, 8), randomBytes(8 * BLOCK)));
  ok(await io.submit(readSqe(0, 8)));
  ok(await io.submit(readSqe(0, 1)));
  now += 1000;
  const r = await sampler.sample();
  expect(cntlid).toBeGreaterThan(0);
  return renderPrometheus(sampler.latest(), r!.sample);
}

describe('Prometheus exposition', () => {
  it('is valid text format with HELP, TYPE, labels and histograms', async () => {
    const fams = parseExposition(await exposition());
    for (const f of fams.values()) {
      expect(f.type, f.name).not.toBe('');
      expect(f.help, f.name).not.toBe('');
    }
    const reads = fams.get('branchsan_namespace_read_ops_total')!;
    expect(reads.type).toBe('counter');
    expect(reads.samples).toEqual([
      { name: reads.name, labels: { nqn: SUBNQN, nsid: '1' }, value: 2 },
    ]);
    expect(fams.get('branchsan_namespace_write_bytes_total')!.samples[0]!.value).toBe(8 * BLOCK);
    const lat = fams.get('branchsan_namespace_read_latency_seconds')!;
    expect(lat.type).toBe('histogram');
    expect(lat.samples.find((s) => s.name.endsWith('_count'))!.value).toBe(2);
    const host = fams.get('branchsan_host_read_bytes_total')!.samples[0]!;
    expect(host.labels).toMatchObject({ nqn: SUBNQN, hostnqn: HOSTNQN });
    expect(host.value).toBe(9 * BLOCK);
    expect(fams.get('branchsan_node_network_receive_bytes_total')!.samples).toEqual([
      {
        name: 'branchsan_node_network_receive_bytes_total',
        labels: { interface: 'eth0' },
        value: 100,
      },
    ]);
    expect(fams.get('branchsan_node_memory_used_bytes')!.samples[0]!.value).toBe(600 * 1024);
    expect(fams.get('branchsan_node_data_fs_used_bytes')!.samples[0]!.value).toBe(90 * 512);
    // a memory backend has no I/O threads: nothing to say how it ran its I/O
    // (test/integration/namespace-io.test.ts has files)
    expect(fams.get('branchsan_namespace_event_loop_io_total')!.samples).toEqual([]);
    expect(fams.get('branchsan_namespace_completion_polls_total')!.samples).toEqual([]);
  });

  it('counts the active alerts by severity, and shows each with its labels', () => {
    const fams = parseExposition(
      renderPrometheus(null, null, [
        { rule: 'capacity', subject: '/var/lib/branchsan', severity: 'critical', ackedAt: null },
        { rule: 'host.disconnected', subject: 'nqn.a "b"', severity: 'warning', ackedAt: 5 },
      ]),
    );
    expect(
      fams.get('branchsan_alerts_active')!.samples.map((s) => [s.labels.severity, s.value]),
    ).toEqual([
      ['critical', 1],
      ['error', 0],
      ['warning', 1],
      ['info', 0],
    ]);
    expect(fams.get('branchsan_alert_active')!.samples.map((s) => [s.labels, s.value])).toEqual([
      [
        {
          rule: 'capacity',
          subject: '/var/lib/branchsan',
          severity: 'critical',
          acknowledged: 'false',
        },
        1,
      ],
      [
        {
          rule: 'host.disconnected',
          subject: 'nqn.a "b"',
          severity: 'warning',
          acknowledged: 'true',
        },
        1,
      ],
    ]);
    // none active: every severity still has its 0, and no alert series
    const none = parseExposition(renderPrometheus(null, null));
    expect(none.get('branchsan_alerts_active')!.samples.map((s) => s.value)).toEqual([0, 0, 0, 0]);
    expect(none.get('branchsan_alert_active')!.samples).toEqual([]);
  });

  it('escapes label values', () => {
    expect(escapeLabel('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    const text = `# HELP x y\n# TYPE x gauge\nx{l="${escapeLabel('q"\\\n')}"} 1\n`;
    expect(parseExposition(text).get('x')!.samples[0]!.labels.l).toBe('q"\\\n');
  });
});

describe('GET /metrics', () => {
  let server: http.Server | undefined;
  afterEach(() => server?.close());

  async function serve(state: { enabled: boolean; token: string | null }): Promise<string> {
    const route = metricsRoute({
      enabled: () => state.enabled,
      token: () => state.token,
      render: () => '# HELP up Up.\n# TYPE up gauge\nup 1\n',
    });
    server = http.createServer((req, res) => {
      if (route.handles(req)) route.handle(req, res);
      else res.writeHead(418).end();
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}/metrics`;
  }

  it('is absent when off, refuses without the bearer token, serves with it', async () => {
    const state = { enabled: false, token: 's3cret-token' as string | null };
    const url = await serve(state);
    expect((await fetch(url)).status).toBe(404);
    state.enabled = true;
    const bare = await fetch(url);
    expect(bare.status).toBe(401);
    expect(bare.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await fetch(url, { headers: { Authorization: 'Bearer wrong' } })).status).toBe(401);
    expect((await fetch(url, { headers: { Authorization: 'Basic s3cret-token' } })).status).toBe(
      401,
    );
    const good = await fetch(url, { headers: { Authorization: 'Bearer s3cret-token' } });
    expect(good.status).toBe(200);
    expect(good.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(parseExposition(await good.text()).get('up')!.samples[0]!.value).toBe(1);
    state.token = null; // enabled, but no token set up: nobody gets in
    expect((await fetch(url, { headers: { Authorization: 'Bearer s3cret-token' } })).status).toBe(
      401,
    );
  });

  // Before: 'see DATA/secrets/metrics-token on the node', also when no such file was
  // there (deleted, or a directory in its place).
  it('refuses every way with one answer that names no path and tells no state', async () => {
    const state = { enabled: true, token: 's3cret-token' as string | null };
    const url = await serve(state);
    const answers = [];
    for (const token of ['s3cret-token', null]) {
      state.token = token;
      for (const auth of [undefined, 'Bearer wrong', 'Basic s3cret-token']) {
        const res = await fetch(url, { headers: auth ? { Authorization: auth } : {} });
        answers.push([res.status, res.headers.get('www-authenticate'), await res.text()]);
      }
    }
    expect(new Set(answers.map((a) => JSON.stringify(a))).size).toBe(1);
    expect(answers[0]).toEqual([401, 'Bearer realm="branchsan-metrics"', REFUSED]);
    expect(REFUSED).not.toMatch(/secrets|metrics-token|DATA|\//);
    expect(REFUSED).toContain('metrics.settings.set');
  });
});
