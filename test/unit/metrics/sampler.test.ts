/**
 * The sampler against an in-process target (loop transport, MemoryBackend) and
 * synthetic /proc text, with the clock stepped by hand: rates divide by the clock's
 * interval, host figures group per connection, node figures come from counter deltas.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { IoStats } from '../../../engine/src/core/stats.js';
import type { ControllerSummary } from '../../../engine/src/core/index.js';
import type { NodeSources } from '../../../engine/src/metrics/node.js';
import {
  MAX_UNLISTED_LINKS,
  MetricsSampler,
  targetIoSource,
  type IoSource,
} from '../../../engine/src/metrics/sampler.js';
import { samplePoints } from '../../../engine/src/metrics/series.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import {
  BLOCK,
  HOSTNQN,
  NS_BYTES,
  SUBNQN,
  makeTarget,
  ok,
  readSqe,
  session,
  writeSqe,
} from '../core/helpers.js';

/** /proc as text the test changes between samples. */
function fakeProc() {
  const state = {
    cpu: [100, 0, 50, 800, 50, 0, 0, 0], // user nice system idle iowait irq softirq steal
    eth0: [1000, 0],
    lo: [5, 5],
  };
  const sources: NodeSources = {
    readText: async (p) => {
      if (p === '/proc/stat') return `cpu  ${state.cpu.join(' ')} 0 0\ncpu0 1 2 3 4\nintr 1\n`;
      if (p === '/proc/meminfo')
        return 'MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    6000000 kB\n';
      if (p === '/proc/net/dev')
        return [
          'Inter-|   Receive                                                |  Transmit',
          ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
          `    lo: ${state.lo[0]} 1 0 0 0 0 0 0 ${state.lo[1]} 1 0 0 0 0 0 0`,
          `  eth0: ${state.eth0[0]} 10 0 0 0 0 0 0 ${state.eth0[1]} 10 0 0 0 0 0 0`,
          '',
        ].join('\n');
      throw new Error(`unexpected ${p}`);
    },
    statfs: async () => ({ bsize: 4096, blocks: 1000, bfree: 250 }),
  };
  return { state, sources };
}

function clockAt(ms: number) {
  const c = { now: ms, fn: () => c.now };
  return c;
}

/** A sampler over `io` with synthetic /proc and a hand-stepped clock. */
function syntheticSampler(io: IoSource, clock: ReturnType<typeof clockAt>, dataDir = '/') {
  return new MetricsSampler({ io, dataDir, node: fakeProc().sources, clock: clock.fn });
}

/** A live I/O controller of `hostnqn` on the test subsystem, as the target lists one. */
function controller(cntlid: number, hostnqn: string, stats = new IoStats()): ControllerSummary {
  return {
    cntlid,
    kind: 'io',
    subnqn: SUBNQN,
    hostnqn,
    state: 'live' as ControllerSummary['state'],
    ioQueues: 1,
    kato: 0,
    stats: stats.snapshot(),
  };
}

describe('metrics sampler', () => {
  it('turns counter deltas over the clock interval into per-namespace and per-host figures', async () => {
    const { target } = makeTarget();
    const { io, cntlid } = await session(target);
    const clock = clockAt(1_700_000_000_000);
    const proc = fakeProc();
    const sampler = new MetricsSampler({
      io: targetIoSource(target),
      dataDir: '/data',
      node: proc.sources,
      clock: clock.fn,
    });
    expect(await sampler.sample()).toBeNull(); // the baseline
    for (let i = 0; i < 4; i++) ok(await io.submit(writeSqe(i * 8, 8), randomBytes(8 * BLOCK)));
    ok(await io.submit(readSqe(0, 8)));
    clock.now += 2000;
    proc.state.cpu = [200, 0, 150, 1500, 150, 0, 0, 0]; // +100+100 busy of +1000
    proc.state.eth0 = [5000, 600];
    const r = (await sampler.sample())!;
    expect(r.sample.at).toBe(clock.now);
    expect(r.sample.intervalSec).toBe(2);
    const ns = r.sample.namespaces[0]!;
    expect(ns).toMatchObject({
      nqn: SUBNQN,
      nsid: 1,
      writeIops: 2,
      readIops: 0.5,
      writeBps: (4 * 8 * BLOCK) / 2,
      readBps: (8 * BLOCK) / 2,
      errorsPs: 0,
    });
    expect(ns.writeLatUs!.p50).toBeGreaterThan(0);
    expect(ns.writeLatUs!.p999).toBeGreaterThanOrEqual(ns.writeLatUs!.p99);
    expect(ns.queueDepth).toBeGreaterThanOrEqual(0);
    expect(r.sample.hosts).toEqual([
      expect.objectContaining({ nqn: SUBNQN, hostnqn: HOSTNQN, cntlid, writeIops: 2 }),
    ]);
    expect(r.links).toEqual([
      expect.objectContaining({ nqn: SUBNQN, hostnqn: HOSTNQN, readIops: 0.5 }),
    ]);
    expect(r.sample.node).toEqual({
      cpuPct: 20,
      memUsedBytes: 2_000_000 * 1024,
      memTotalBytes: 8_000_000 * 1024,
      diskUsedBytes: 750 * 4096,
      diskTotalBytes: 1000 * 4096,
      net: [{ interface: 'eth0', rxBps: 2000, txBps: 300 }], // lo left out
    });
    // an idle second: zero rates, and no latency rather than a latency of 0
    clock.now += 1000;
    const idle = (await sampler.sample())!.sample.namespaces[0]!;
    expect(idle).toMatchObject({ writeIops: 0, readLatUs: null, writeLatUs: null, queueDepth: 0 });
  });

  it('derives exact percentiles and queue depth from a synthetic source', async () => {
    const stats = new IoStats();
    const src: IoSource = {
      namespaces: () => [{ nqn: SUBNQN, nsid: 1, stats: stats.snapshot() }],
      controllers: () => [],
    };
    const clock = clockAt(0);
    const sampler = syntheticSampler(src, clock, '/data');
    await sampler.sample();
    for (let i = 0; i < 99; i++) stats.record('read', 4096, 100, false); // bucket [64, 128)
    stats.record('read', 4096, 3000, false); // [2048, 4096)
    stats.record('write', 0, 10, true); // failed: the core counts it, with no bytes moved
    clock.now += 1000;
    const ns = (await sampler.sample())!.sample.namespaces[0]!;
    expect(ns.readLatUs!.p50).toBe(64 + (64 * 50) / 99);
    expect(ns.readLatUs!.p99).toBe(128); // rank 99 is the last of [64, 128)
    expect(ns.readLatUs!.p999).toBeCloseTo(2048 + 2048 * 0.9, 9);
    expect(ns.errorsPs).toBe(1);
    expect(ns).toMatchObject({ writeIops: 1, writeBps: 0 });
    // Little's law: 99×100 + 3000 + 10 µs outstanding within 1 s
    expect(ns.queueDepth).toBeCloseTo((9900 + 3000 + 10) / 1e6, 12);
  });

  it('gives history to every listed host, but to at most MAX_UNLISTED_LINKS others', async () => {
    // A volume that allows any host: a peer that changes its NQN at will must not grow
    // the stored series without end (each pair is 7-13 series kept for a year).
    let ctrls: ControllerSummary[] = [];
    const src: IoSource = {
      namespaces: () => [],
      controllers: () => ctrls,
      listed: (_nqn, host) => host === HOSTNQN,
    };
    const clock = clockAt(0);
    const sampler = syntheticSampler(src, clock);
    await sampler.sample();
    const round = async (first: number) => {
      ctrls = [controller(1, HOSTNQN)];
      for (let i = 0; i < 100; i++)
        ctrls.push(controller(i + 2, `nqn.2026-11.test:peer-${first + i}`));
      clock.now += 1000;
      return (await sampler.sample())!.links.map((l) => l.hostnqn);
    };
    const one = await round(0);
    expect(one).toContain(HOSTNQN);
    expect(one).toHaveLength(1 + MAX_UNLISTED_LINKS);
    const two = await round(1000); // all new names: none gets history, the listed host does
    expect(two).toEqual([HOSTNQN]);
    const again = await round(0); // the names already recorded keep theirs
    expect(again).toEqual(one);
  });

  it('counts a host as listed from the subsystem allow-list (targetIoSource)', () => {
    const { target } = makeTarget();
    const src = targetIoSource(target);
    expect(src.listed?.(SUBNQN, HOSTNQN)).toBe(true);
    expect(src.listed?.(SUBNQN, 'nqn.2026-11.test:someone-else')).toBe(false);
  });

  it('groups several controllers of one host, and never reports a negative rate', async () => {
    const a = new IoStats();
    const b = new IoStats();
    let ctrls: ControllerSummary[] = [];
    const summary = (cntlid: number, stats: IoStats) => controller(cntlid, HOSTNQN, stats);
    let nsStats = new IoStats();
    const src: IoSource = {
      namespaces: () => [{ nqn: SUBNQN, nsid: 1, stats: nsStats.snapshot() }],
      controllers: () => ctrls,
    };
    const clock = clockAt(0);
    const sampler = syntheticSampler(src, clock);
    for (let i = 0; i < 10; i++) nsStats.record('write', 4096, 50, false);
    ctrls = [summary(1, a)];
    await sampler.sample();
    a.record('read', 4096, 10, false);
    b.record('read', 4096, 20, false); // a second path of the same host, new since the baseline
    b.record('read', 4096, 20, false);
    ctrls = [summary(1, a), summary(2, b)];
    nsStats = new IoStats(); // the namespace was removed and added again: counters restart
    nsStats.record('write', 4096, 50, false);
    clock.now += 1000;
    const r = (await sampler.sample())!;
    expect(r.sample.hosts.map((h) => [h.cntlid, h.readIops])).toEqual([
      [1, 1],
      [2, 2],
    ]);
    expect(r.links).toHaveLength(1);
    expect(r.links[0]).toMatchObject({ readIops: 3, readBps: 3 * 4096 });
    expect(r.sample.namespaces[0]!.writeIops).toBe(1);
    const keys = samplePoints(r).map((p) => p.series.key);
    expect(keys).toContain(`host:${SUBNQN}/${HOSTNQN}:read_iops`);
    expect(keys).toContain(`ns:${SUBNQN}/1:write_lat_p99_us`);
    expect(keys).not.toContain(`ns:${SUBNQN}/1:read_lat_p99_us`); // no reads, no point
    expect(keys).toContain('node:mem_used_bytes');
    expect(keys).not.toContain('node:cpu_pct'); // /proc/stat did not move: no reading
  });

  it('samples a namespace added after the baseline from zero', async () => {
    const { target } = makeTarget();
    const clock = clockAt(0);
    const sampler = syntheticSampler(targetIoSource(target), clock);
    await sampler.sample();
    const backend = new MemoryBackend({ sizeBytes: NS_BYTES, blockSize: BLOCK });
    target.addNamespace(SUBNQN, { nsid: 2, backend, nguid: 'ffeeddccbbaa99887766554433221100' });
    clock.now += 500;
    const r = (await sampler.sample())!;
    expect(r.sample.namespaces.map((n) => [n.nsid, n.readIops])).toEqual([
      [1, 0],
      [2, 0],
    ]);
  });
});
