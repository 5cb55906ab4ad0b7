/**
 * Which results carry the floor with backend I/O, and how the table shows a row
 * without it. (The full run is `npm run bench`; the quick run is in bench.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { FULL_PATTERNS } from '../../../engine/src/bench/patterns.js';
import { bench } from '../../../engine/src/cli/bench.js';
import {
  floorIoMeasured,
  fmt,
  formatTable,
  type BenchResult,
} from '../../../engine/src/bench/run.js';

const stats = (iops: number) => ({
  ios: iops,
  bytes: iops * 4096,
  seconds: 1,
  iops,
  mbps: (iops * 4096) / 1e6,
  lat_us: { mean: 10, p50: 9, p99: 20, p999: 30 },
});
const floor = (iops: number) => ({
  ...stats(iops),
  server_cpu_us_per_io: 3,
  client_cpu_us_per_io: 2,
});

describe('bench report', () => {
  it('runs the rows its help text lists: QD1 with one queue only, 128 KiB with one queue', () => {
    const rows = FULL_PATTERNS.map((p) => `${p.pattern} ${p.bs / 1024}k qd${p.qd} q${p.queues}`);
    expect(rows).toEqual([
      'randread 4k qd1 q1',
      'randread 4k qd32 q1',
      'randread 4k qd32 q2',
      'randwrite 4k qd1 q1',
      'randwrite 4k qd32 q1',
      'randwrite 4k qd32 q2',
      'read 128k qd8 q1',
      'write 128k qd8 q1',
    ]);
    expect(bench.help).toMatch(
      /4 KiB random read and random write\s+QD1 with 1 I\/O queue; QD32 with 1 and 2\n/,
    );
    expect(bench.help).toMatch(/128 KiB sequential read and write\s+QD8 with 1 I\/O queue\n/);
    expect(bench.help).toMatch(
      /QD1 measures one I\/O at a time: a second queue would put a second one in flight/,
    );
  });

  it('measures the floor with I/O for the 4 KiB patterns on the first backend only', () => {
    const on = (backend: 'shm' | 'disk') =>
      FULL_PATTERNS.filter((p) => floorIoMeasured(p, backend, 'shm')).map(
        (p) => `${p.pattern}/${p.qd}/${p.queues}`,
      );
    expect(on('shm')).toEqual([
      'randread/1/1',
      'randread/32/1',
      'randread/32/2',
      'randwrite/1/1',
      'randwrite/32/1',
      'randwrite/32/2',
    ]);
    expect(on('disk')).toEqual([]);
  });

  it("prints the floor+io columns, or '-' where that leg did not run", () => {
    const base = {
      pattern: 'randread' as const,
      bs: 4096,
      qd: 32,
      queues: 1,
      local: { ...stats(400000), cpu_us_per_io: 2 },
      remote: { ...stats(150000), target_cpu_us_per_io: 6, host_cpu_us_per_io: 3 },
      floor: floor(300000),
      ratio_iops: 0.375,
      added_lat_us: 100,
      rounds_iops: { local: [1], remote: [1], floor: [1] },
      ratio_iops_rounds: [0.375],
    };
    const rows: BenchResult[] = [
      {
        ...base,
        backend: 'shm',
        floor_io: { ...floor(180000), server_cpu_us_per_io: 4.5 },
        ratio_iops_floor_io: 0.45,
      },
      { ...base, backend: 'disk' },
    ];
    const lines = formatTable({ machine: {}, config: {}, results: rows, elapsed_s: 1 }).split('\n');
    expect(lines[0]).toMatch(/floor IOPS\s+floor\+io IOPS \| ratio\s+f\+io \|/);
    expect(lines[1]).toMatch(/300000\s+180000 \|\s+0\.38\s+0\.45 \|/);
    expect(lines[1]).toMatch(/\| 4\.5 \/ 2$/);
    expect(lines[2]).toMatch(/300000\s+- \|\s+0\.38\s+- \|/);
    expect(lines[2]).toMatch(/\| -$/);
  });

  it('adds a noisy line for a result whose round ratios are more than 15% apart, only for it', () => {
    const row = (backend: 'shm' | 'disk', ratio_iops_rounds: number[]): BenchResult => ({
      pattern: 'randread',
      bs: 4096,
      qd: 32,
      queues: 2,
      backend,
      local: { ...stats(400000), cpu_us_per_io: 2 },
      remote: { ...stats(150000), target_cpu_us_per_io: 6, host_cpu_us_per_io: 3 },
      floor: floor(300000),
      ratio_iops: 0.375,
      added_lat_us: 100,
      rounds_iops: { local: [1, 1, 1], remote: [1, 1, 1], floor: [1, 1, 1] },
      ratio_iops_rounds,
    });
    const table = formatTable({
      machine: {},
      config: {},
      results: [row('shm', [0.3, 0.32, 0.42]), row('disk', [0.4, 0.41, 0.45])],
      elapsed_s: 1,
    });
    const noisy = table.split('\n').filter((l) => l.startsWith('noisy:'));
    expect(noisy).toEqual([
      "noisy: randread bs=4k qd=32 queues=2 shm: the rounds' remote/local ratios were 0.300, 0.320, " +
        "0.420 (more than 15% apart: the machine's speed drifted); run it again, or with more " +
        '--rounds, before comparing this ratio',
    ]);
  });

  it("lines every leg's progress figures up, floor+io included", () => {
    const lines = ['local', 'remote', 'floor', 'floor+io'].map((leg) => fmt(leg, stats(123456)));
    const at = lines.map((l) => l.indexOf('123456 IOPS'));
    expect(new Set(at).size).toBe(1);
    expect(lines[3]).toMatch(/^floor\+io +123456 IOPS/);
  });
});
