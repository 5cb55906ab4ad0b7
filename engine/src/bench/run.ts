/**
 * `branchsan bench`: in one run and one process tree, for each pattern,
 *   local  - the target's own backend driven directly (this process),
 *   remote - the same pattern through the engine's NVMe/TCP target (child process)
 *            with the host library (this process),
 *   floor  - a bare TCP request/response of the same sizes between the same two processes.
 * Figures are compared as ratios within the run, never against fixed numbers.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { holdCpuLatency, type CpuLatencyHold } from '../service/cpu-latency.js';
import { openBackend } from '../storage/open.js';
import { connectFloor } from './floor.js';
import { backendSubmit, prepareBackingFile } from './local.js';
import { FULL_PATTERNS, QUICK_PATTERNS, runLoop, type Pattern, type Submit } from './patterns.js';
import { BENCH_NQN, type PeerReply, type PeerRequest } from './peer.js';
import { connectRemote } from './remote.js';
import { round, type RunStats } from './stats.js';

export interface BenchOptions {
  quick: boolean;
  /** Directory on a real disk for the 'disk' backend (default: the system temp dir). */
  diskDir?: string;
  /** Measured seconds per run (default 2.5, quick 1). */
  seconds?: number;
  /**
   * Hold a 0 µs CPU wake-up latency request for the whole run, as the engine does
   * while I/O flows (settings.performance.cpuLatency). Default true; every leg runs
   * under the same condition either way, and the report says which it was.
   */
  cpuLatency?: boolean;
  progress: (line: string) => void;
}

export type BackendName = 'shm' | 'disk';

export interface BenchResult extends Pattern {
  backend: BackendName;
  local: RunStats;
  remote: RunStats & { target_cpu_us_per_io: number; host_cpu_us_per_io: number };
  floor: RunStats;
  ratio_iops: number;
  added_lat_us: number;
}

export interface BenchReport {
  machine: Record<string, unknown>;
  config: Record<string, unknown>;
  results: BenchResult[];
}

const MALLOC_ENV = {
  MALLOC_TRIM_THRESHOLD_: '1073741824',
  MALLOC_TOP_PAD_: '67108864',
  MALLOC_MMAP_THRESHOLD_: '33554432',
};

export async function runBenchmark(o: BenchOptions): Promise<BenchReport> {
  const patterns = o.quick ? QUICK_PATTERNS : FULL_PATTERNS;
  const backends: BackendName[] = o.quick ? ['shm'] : ['shm', 'disk'];
  const span = (o.quick ? 64 : 128) << 20;
  const loop = {
    span,
    warmupMs: o.quick ? 300 : 500,
    durationMs: (o.seconds ?? (o.quick ? 1 : 2.5)) * 1000,
  };
  const peer = new Peer();
  const dirs: string[] = [];
  let qos: CpuLatencyHold | null = null;
  let qosNote = 'not requested (--no-cpu-latency)';
  if (o.cpuLatency !== false) {
    try {
      qos = holdCpuLatency(0);
      qosNote = 'held at 0 µs for the whole run';
    } catch (err) {
      qosNote = (err as Error).message;
      o.progress(`${qosNote}; measuring with the CPUs free to sleep`);
    }
  }
  try {
    const floors = new Map<string, RunStats>();
    const results: BenchResult[] = [];
    for (const backend of backends) {
      const base = backend === 'shm' ? '/dev/shm' : (o.diskDir ?? os.tmpdir());
      const dir = fs.mkdtempSync(path.join(base, 'branchsan-bench-'));
      dirs.push(dir);
      const file = path.join(dir, 'bench.img');
      o.progress(`preparing ${span >> 20} MiB on ${backend} (${base})`);
      await prepareBackingFile(file, span, span);

      const local = new Map<Pattern, RunStats>();
      const be = await openBackend({ kind: 'file', path: file });
      try {
        for (const p of patterns) {
          local.set(p, await runLoop(p, backendSubmit(be), loop));
          o.progress(`local  ${label(p, backend)}: ${fmt(local.get(p)!)}`);
        }
      } finally {
        await be.close();
      }

      const ports = await peer.call({ cmd: 'start', path: file });
      if (!('nvmePort' in ports)) throw new Error('benchmark peer did not start');
      for (const p of patterns) {
        const conn = await connectRemote(ports.nvmePort, BENCH_NQN, p.queues);
        // CPU of both processes over the measured window only (warm-up excluded)
        let host0 = process.cpuUsage();
        let hostUs = 0;
        let target0: Promise<number> = Promise.resolve(0);
        let target1: Promise<number> = Promise.resolve(0);
        const onWindow = (edge: 'start' | 'end') => {
          if (edge === 'start') {
            host0 = process.cpuUsage();
            target0 = peer.cpu();
          } else {
            const d = process.cpuUsage(host0);
            hostUs = d.user + d.system;
            target1 = peer.cpu();
          }
        };
        const remote = await runLoop(p, conn.submit, { ...loop, onWindow }).finally(() =>
          conn.close(),
        );
        const targetUs = (await target1) - (await target0);
        const ios = Math.max(1, remote.ios);
        o.progress(`remote ${label(p, backend)}: ${fmt(remote)}`);
        const fkey = `${p.pattern}/${p.bs}/${p.qd}/${p.queues}`;
        if (!floors.has(fkey)) {
          const f = await connectFloor(ports.floorPort, p.queues);
          floors.set(fkey, await runLoop(p, f.submit as Submit, loop).finally(() => f.close()));
          o.progress(`floor  ${label(p, backend)}: ${fmt(floors.get(fkey)!)}`);
        }
        const l = local.get(p)!;
        results.push({
          ...p,
          backend,
          local: l,
          remote: {
            ...remote,
            target_cpu_us_per_io: round(targetUs / ios),
            host_cpu_us_per_io: round(hostUs / ios),
          },
          floor: floors.get(fkey)!,
          ratio_iops: round(remote.iops / Math.max(1, l.iops), 3),
          added_lat_us: round(remote.lat_us.mean - l.lat_us.mean),
        });
      }
    }
    return {
      machine: { ...machineInfo(), cpu_latency_request: qosNote, cpu_latency_held: qos !== null },
      config: { quick: o.quick, span_bytes: span, ...loop, qd_is_per_queue: true },
      results,
    };
  } finally {
    await peer.stop();
    qos?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

class Peer {
  private child?: ChildProcess;
  private waiting: ((r: PeerReply) => void)[] = [];

  call(req: PeerRequest): Promise<PeerReply> {
    if (!this.child) {
      const script = fileURLToPath(new URL('./peer.js', import.meta.url));
      this.child = fork(script, [], {
        env: { ...process.env, ...MALLOC_ENV },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      this.child.on('message', (m: PeerReply) => this.waiting.shift()?.(m));
      this.child.on('exit', (code) => {
        for (const w of this.waiting.splice(0))
          w({ ok: false, error: `benchmark peer exited (${code})` });
        this.child = undefined;
      });
    }
    return new Promise((resolve, reject) => {
      this.waiting.push((r) => (r.ok ? resolve(r) : reject(new Error(r.error))));
      this.child!.send(req);
    });
  }

  async cpu(): Promise<number> {
    const r = await this.call({ cmd: 'cpu' });
    return 'cpuUs' in r ? r.cpuUs : 0;
  }

  async stop(): Promise<void> {
    if (!this.child) return;
    const gone = new Promise((r) => this.child!.once('exit', r));
    await this.call({ cmd: 'stop' }).catch(() => undefined);
    await gone;
  }
}

function label(p: Pattern, backend: string): string {
  return `${p.pattern} bs=${p.bs >= 1024 ? `${p.bs / 1024}k` : p.bs} qd=${p.qd} queues=${p.queues} ${backend}`.padEnd(
    42,
  );
}

function fmt(s: RunStats): string {
  return `${String(s.iops).padStart(7)} IOPS ${String(s.mbps).padStart(8)} MB/s  lat mean ${s.lat_us.mean} p99 ${s.lat_us.p99} µs`;
}

function machineInfo(): Record<string, unknown> {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    cpus: cpus.length,
    cpu_model: cpus[0]?.model,
    mem_bytes: os.totalmem(),
    kernel: os.release(),
    node: process.version,
    malloc_tuned: process.env.MALLOC_TRIM_THRESHOLD_ !== undefined,
    loadavg: os.loadavg().map((x) => round(x)),
    at: new Date().toISOString(),
  };
}

/** The table people read (stderr). */
export function formatTable(r: BenchReport): string {
  const head =
    'pattern     bs    qd q backend |  local IOPS  remote IOPS  floor IOPS | ratio | lat µs local / remote / floor | +lat µs | cpu µs/io tgt/host';
  const rows = r.results.map((x) =>
    [
      x.pattern.padEnd(10),
      String(x.bs / 1024 + 'k').padStart(5),
      String(x.qd).padStart(4),
      String(x.queues).padStart(2),
      x.backend.padEnd(7),
      '|',
      String(x.local.iops).padStart(11),
      String(x.remote.iops).padStart(12),
      String(x.floor.iops).padStart(11),
      '|',
      x.ratio_iops.toFixed(2).padStart(5),
      '|',
      `${x.local.lat_us.mean} / ${x.remote.lat_us.mean} / ${x.floor.lat_us.mean}`.padStart(29),
      '|',
      String(x.added_lat_us).padStart(7),
      '|',
      `${x.remote.target_cpu_us_per_io} / ${x.remote.host_cpu_us_per_io}`,
    ].join(' '),
  );
  return [head, ...rows].join('\n');
}
