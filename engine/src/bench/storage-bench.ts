/**
 * Storage I/O micro-benchmark: 4 KiB random reads and writes at QD1 and QD32,
 * comparing the worker-thread backend (file.ts; with and without reads served on
 * the event loop when cached) with Node's libuv pool (fs.read/fs.write) and with
 * readSync/writeSync on the main thread (the upper bound for one core, and what
 * the data path must never do with I/O that can wait on a device).
 *
 *   node dist/engine/src/bench/storage-bench.js [--dirs /dev/shm,/var/tmp] [--seconds 2]
 *     [--warmup-seconds 0.3] [--json]
 *
 * Each measurement starts after an unmeasured warm-up (at least --warmup-seconds and
 * 2000 I/Os), and reads land in one reused buffer per I/O in flight (storage-loop.ts).
 *
 * The glibc malloc settings from PERF-NOTES.md are applied by re-running
 * ourselves with them: without them fs throughput swings by 5x between runs.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { openFileBackend, type IoOptions } from '../storage/file.js';
import { backendSubmit, BS, libuvSubmit, run } from './storage-loop.js';

const MALLOC_ENV = {
  MALLOC_TRIM_THRESHOLD_: '1073741824',
  MALLOC_TOP_PAD_: '67108864',
  MALLOC_MMAP_THRESHOLD_: '33554432',
};
if (!process.env.MALLOC_TRIM_THRESHOLD_) {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit',
    env: { ...process.env, ...MALLOC_ENV },
  });
  // A stop meant for this process (kill PID, a timeout) reaches the re-run too, which
  // removes its file; it ran on orphaned, with its file in /dev/shm, to the end.
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.on(sig, () => child.kill(sig));
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  process.exit(code ?? 128 + (signal ? (os.constants.signals[signal] ?? 0) : 1));
}

const args = process.argv.slice(2);
const opt = (name: string, dflt: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : dflt;
};
/** A usage error: one line that says what to give instead, no stack; exit code 2. */
function usage(message: string): never {
  console.error(`storage-bench: ${message}`);
  process.exit(2);
}

/** A number option > 0 (and a whole number when `whole`), or a usage error. */
function positive(name: string, dflt: string, whole = false): number {
  const raw = opt(name, dflt);
  const n = /^\d+(\.\d+)?$/.test(raw) ? Number(raw) : NaN;
  if (!(n > 0) || (whole && !Number.isInteger(n))) {
    usage(
      `--${name} ${raw}: give a ${whole ? 'whole ' : ''}number above 0, e.g. --${name} ${dflt}`,
    );
  }
  return n;
}

/** A number option ≥ 0, or a usage error (NaN made a warm-up that never ended). */
function nonNegative(name: string, dflt: string): number {
  const raw = opt(name, dflt);
  if (!/^\d+(\.\d+)?$/.test(raw))
    usage(`--${name} ${raw}: give a number of 0 or more, e.g. --${name} ${dflt}`);
  return Number(raw);
}

// the RAM-backed file and one on disk (/var/tmp: the FHS keeps it on disk, where /tmp
// is often a tmpfs)
const DIRS = opt('dirs', '/dev/shm,/var/tmp').split(',');
for (const dir of DIRS) {
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
    usage(
      `--dirs: ${dir || '(empty)'} is not a directory; give existing directories, e.g. --dirs /dev/shm,/var/tmp`,
    );
  }
}
const SECONDS = positive('seconds', '2');
const FILE_SIZE = positive('size-mib', '256', true) * 1024 * 1024;
const BLOCKS = FILE_SIZE / BS;
// Each directory must hold the file, checked before any work: a full one failed its
// write half-way (after minutes of results, for a later directory) with a stack trace,
// leaving the part written behind.
for (const dir of DIRS) {
  const st = fs.statfsSync(dir);
  // root may use the blocks a file system keeps back for it (ext4: 5% by default)
  const free = (process.getuid?.() === 0 ? st.bfree : st.bavail) * st.bsize;
  if (free < FILE_SIZE) {
    console.error(
      `storage-bench: ${dir} has ${Math.floor(free / 2 ** 20)} MiB free; the benchmark file needs ${FILE_SIZE / 2 ** 20} MiB there. ` +
        'Free space there, give a smaller --size-mib, or other --dirs.',
    );
    process.exit(1);
  }
}
const JSON_OUT = args.includes('--json');
/** --durable-only: just the FUA / flush comparison. */
const DURABLE_ONLY = args.includes('--durable-only');

/** Worker-backend set-ups compared for plain reads and writes. */
const VARIANTS: [string, IoOptions][] = [
  ['inline + worker x1 (default)', { workers: 1 }],
  ['worker x1', { workers: 1, inlineReads: false }],
  ['worker x2', { workers: 2, inlineReads: false }],
  ['worker x1 spin30', { workers: 1, spinMicros: 30, inlineReads: false }],
];

/** The loop's settings for every method (storage-loop.ts). */
const LOOP = {
  seconds: SECONDS,
  blocks: BLOCKS,
  warmupSeconds: nonNegative('warmup-seconds', '0.3'),
  warmupIos: 2000,
};

interface Result {
  dir: string;
  method: string;
  op: string;
  qd: number;
  iops: number;
  meanUs: number;
  p99Us: number;
  /** I/Os run before the measurement (unmeasured warm-up). */
  warmupIos: number;
}

/** readSync/writeSync on this thread: sync, so QD is always 1 in effect. */
function runSync(
  fd: number,
  op: 'read' | 'write',
): { iops: number; meanUs: number; p99Us: number; warmupIos: number } {
  const buf = Buffer.alloc(BS, 1);
  let rnd = 12345;
  /** 256 I/Os; returns the time after them. */
  const batch = () => {
    for (let i = 0; i < 256; i++) {
      rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
      const pos = (rnd % BLOCKS) * BS;
      if (op === 'read') fs.readSync(fd, buf, 0, BS, pos);
      else fs.writeSync(fd, buf, 0, BS, pos);
    }
    return performance.now();
  };
  // unmeasured warm-up, as run() does
  let warmupIos = 0;
  const warmEnd = performance.now() + LOOP.warmupSeconds * 1000;
  for (let now = 0; warmupIos < LOOP.warmupIos || now < warmEnd; warmupIos += 256) now = batch();
  let n = 0;
  const start = performance.now();
  const end = start + SECONDS * 1000;
  let now = start;
  for (; now < end; n += 256) now = batch();
  const secs = (now - start) / 1000;
  return {
    iops: Math.round(n / secs),
    meanUs: Math.round((secs / n) * 1e7) / 10,
    p99Us: NaN,
    warmupIos,
  };
}

/** The benchmark file being measured, if any (256 MiB, in /dev/shm by default). */
let current: string | undefined;

// Ctrl-C signals this process and the re-running parent alike: remove the file (RAM in
// /dev/shm) before ending, as the run's own clean-up is never reached then.
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    if (current) fs.rmSync(current, { force: true });
    process.exit(128 + (os.constants.signals[sig] ?? 0));
  });
}

async function prepare(dir: string): Promise<string> {
  const path = `${dir}/branchsan-bench-${process.pid}.img`;
  current = path;
  fs.rmSync(path, { force: true });
  const fd = fs.openSync(path, 'w');
  try {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    for (let off = 0; off < FILE_SIZE; off += chunk.length)
      fs.writeSync(fd, chunk, 0, chunk.length, off);
    fs.fsyncSync(fd);
  } catch (err) {
    // the space went meanwhile (checked above), or the disk failed: not half a file left
    fs.rmSync(path, { force: true });
    throw err;
  } finally {
    fs.closeSync(fd);
  }
  return path;
}

async function main(): Promise<void> {
  const results: Result[] = [];
  const report = (r: Result) => {
    results.push(r);
    if (!JSON_OUT) {
      const p99 = Number.isNaN(r.p99Us) ? '' : ` p99 ${r.p99Us} µs`;
      console.log(
        `${r.dir.padEnd(9)} ${r.method.padEnd(16)} ${r.op.padEnd(11)} QD${String(r.qd).padEnd(3)} ${String(r.iops).padStart(7)} IOPS  mean ${r.meanUs} µs${p99}`,
      );
    }
  };
  for (const dir of DIRS) {
    const path = await prepare(dir);
    try {
      for (const op of DURABLE_ONLY ? [] : ['read', 'write']) {
        const fd = fs.openSync(path, 'r+');
        report({ dir, method: 'readSync-main', op, qd: 1, ...runSync(fd, op as 'read' | 'write') });
        for (const qd of [1, 32])
          report({
            dir,
            method: 'libuv-pool',
            op,
            qd,
            ...(await run(libuvSubmit(fd, op), qd, LOOP)),
          });
        fs.closeSync(fd);
        for (const [method, io] of VARIANTS) {
          const b = await openFileBackend({ path, io });
          for (const qd of [1, 32])
            report({ dir, method, op, qd, ...(await run(backendSubmit(b, op), qd, LOOP)) });
          await b.close();
        }
      }
      // Durable writes: FUA through the O_DSYNC fd vs a write then fdatasync,
      // with 1, 2 and 4 threads for the sync class.
      for (const syncWorkers of [1, 2, 4]) {
        const b = await openFileBackend({ path, io: { syncWorkers } });
        for (const op of ['write-fua', 'write+flush']) {
          for (const qd of [1, 32]) {
            report({
              dir,
              method: `worker sync x${syncWorkers}`,
              op,
              qd,
              ...(await run(backendSubmit(b, op), qd, LOOP)),
            });
          }
        }
        await b.close();
      }
    } finally {
      fs.rmSync(path, { force: true });
      current = undefined;
    }
  }
  if (JSON_OUT) console.log(JSON.stringify(results, null, 2));
}

await main();
