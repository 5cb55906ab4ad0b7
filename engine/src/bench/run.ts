/**
 * `branchsan bench`: in one run and one process tree, for each pattern,
 *   local  - the target's own backend driven directly (this process),
 *   remote - the same pattern through the engine's NVMe/TCP target (child process)
 *            with the host library (this process),
 *   floor  - a bare TCP request/response moving the bytes NVMe/TCP moves per I/O (floor.ts),
 *            between the same two processes.
 *   floor_io - the floor with the same backend I/O done by its server (4 KiB patterns,
 *            first backend): network plus backend with nothing of NVMe/TCP, so
 *            remote vs floor_io is the engine's own cost, and floor_io vs local the
 *            best ratio these two processes allow on this machine.
 * Figures are compared as ratios within the run, never against fixed numbers. Each
 * pattern runs in rounds that interleave its legs, after one unmeasured run of each
 * leg; each leg reports its median round, and the report keeps every round's IOPS.
 */
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  heldNote,
  holdCpuLatency,
  requestWithoutEffect,
  type CpuLatencyHold,
} from '../service/cpu-latency.js';
import { BackendError } from '../storage/backend.js';
import { probeBlockDevice, servedSize, type BlockDeviceInfo } from '../storage/block.js';
import { FdBackend } from '../storage/file.js';
import { openBackend } from '../storage/open.js';
import { errorCode, isDiskFull, UserError } from '../util/errors.js';
import { benchBackend, type BenchVolume } from './bench-volume.js';
import { withLegs } from './legs.js';
import { backendSubmit, prepareBackingFile } from './local.js';
import {
  FULL_PATTERNS,
  isWrite,
  QUICK_PATTERNS,
  runLoop,
  warmUp,
  WARM_UP,
  type LoopOptions,
  type Pattern,
  type Submit,
} from './patterns.js';
import type { PeerReply, PeerRequest } from './peer-protocol.js';
import { medianRound, round, type RunStats } from './stats.js';

export interface BenchOptions {
  quick: boolean;
  /** Directory on a real disk for the 'disk' backend (default: diskDir()). */
  diskDir?: string;
  /**
   * A block device to measure instead of the two files (backend 'device'), over its
   * whole capacity, as the target serves one. Only reads, unless deviceWrites.
   */
  device?: string;
  /** Run the write patterns on the device too: they overwrite its data. */
  deviceWrites?: boolean;
  /** Measured seconds per leg and round (default 0.75, quick 0.5). */
  seconds?: number;
  /** Rounds of local, remote and floor per pattern (default 3); each leg reports its median. */
  rounds?: number;
  /**
   * Hold a 0 µs CPU wake-up latency request for the whole run, as the engine does
   * while I/O flows (settings.performance.cpuLatency). Default true; every leg runs
   * under the same condition either way, and the report says which it was.
   */
  cpuLatency?: boolean;
  /**
   * Let the file backend serve cached reads on the event loop (the engine's default).
   * false sends every read through the I/O thread, on both sides of the comparison.
   */
  inlineReads?: boolean;
  /**
   * Let the file backend run lone writes to a RAM-only file on the event loop (the
   * engine's default). false sends every write through the I/O thread, on both sides.
   */
  inlineWrites?: boolean;
  progress: (line: string) => void;
}

export type BackendName = 'shm' | 'disk' | 'device';
/** The backends whose benchmark file the run makes itself. */
type FileBackendName = Exclude<BackendName, 'device'>;

export interface BenchResult extends Pattern {
  backend: BackendName;
  /** cpu_us_per_io: this process (event loop and storage threads) per I/O. */
  local: RunStats & { cpu_us_per_io: number };
  remote: RunStats & { target_cpu_us_per_io: number; host_cpu_us_per_io: number };
  /** The same split for the bare-TCP floor: its server (the target's process) and client. */
  floor: FloorStats;
  /** The floor with the backend I/O done by its server; see floorIoMeasured(). */
  floor_io?: FloorStats;
  ratio_iops: number;
  /** floor_io IOPS / local IOPS: the ratio a target that added nothing would reach. */
  ratio_iops_floor_io?: number;
  added_lat_us: number;
  /** IOPS of every round, per leg, in the order they ran. */
  rounds_iops: { local: number[]; remote: number[]; floor: number[]; floor_io?: number[] };
  /**
   * remote / local of each round: the two legs ran seconds apart, so a drift of the
   * machine's speed shows as a spread here (see NOISY_SPREAD).
   */
  ratio_iops_rounds: number[];
}

/** Round ratios further apart than this (max / min − 1) get a "noisy" line in the table. */
export const NOISY_SPREAD = 0.15;

type FloorStats = RunStats & { server_cpu_us_per_io: number; client_cpu_us_per_io: number };

/**
 * Where the floor with backend I/O runs: the 4 KiB patterns (the ratio and latency
 * targets) on the first backend (the RAM-backed file in a full run), which keeps a
 * full run within its 3 minutes.
 */
export function floorIoMeasured(p: Pattern, backend: BackendName, first: BackendName): boolean {
  return p.bs === 4096 && backend === first;
}

export interface BenchReport {
  machine: Record<string, unknown>;
  config: Record<string, unknown>;
  results: BenchResult[];
  /** Wall-clock seconds of the whole run, set-up and clean-up included. */
  elapsed_s: number;
}

const MALLOC_ENV = {
  MALLOC_TRIM_THRESHOLD_: '1073741824',
  MALLOC_TOP_PAD_: '67108864',
  MALLOC_MMAP_THRESHOLD_: '33554432',
};

export async function runBenchmark(o: BenchOptions): Promise<BenchReport> {
  const began = performance.now();
  const report = await runAll(o);
  // Every report shows whether the run kept to its budget (a full run: under 3 minutes).
  return { ...report, elapsed_s: round((performance.now() - began) / 1000, 1) };
}

async function runAll(o: BenchOptions): Promise<Omit<BenchReport, 'elapsed_s'>> {
  // before any work: a device that cannot be measured, or written, is refused now
  const device = o.device ? await claimDevice(o.device, o.deviceWrites === true) : null;
  try {
    return await runOn(o, device);
  } finally {
    if (device?.claim !== undefined) fs.closeSync(device.claim);
  }
}

async function runOn(
  o: BenchOptions,
  device: BenchDevice | null,
): Promise<Omit<BenchReport, 'elapsed_s'>> {
  const patterns = (o.quick ? QUICK_PATTERNS : FULL_PATTERNS).filter(
    (p) => !device || device.writes || !isWrite(p.pattern),
  );
  const files: FileBackendName[] = device ? [] : o.quick ? ['shm'] : ['shm', 'disk'];
  const backends: BackendName[] = device ? ['device'] : files;
  const span = device ? device.span : (o.quick ? 64 : 128) << 20;
  const rounds = Math.max(1, o.rounds ?? 3);
  const loop = {
    span,
    // each leg's own warm-up: the connection and its code are warm by then (warmUp)
    warmupMs: o.quick ? 100 : 150,
    warmupIos: 1000,
    warmupMaxMs: 2000,
    durationMs: (o.seconds ?? (o.quick ? 0.5 : 0.75)) * 1000,
  };
  const disk = o.quick || device ? null : diskDir(o.diskDir);
  const baseDir = (b: FileBackendName) => (b === 'shm' ? '/dev/shm' : disk!);
  // before any work: a file that does not fit failed half-way through its write, the
  // disk's after every pattern on the RAM-backed file had run
  for (const b of files) checkRoom(b, baseDir(b), span, o.quick);
  o.progress('MB/s below: MB = 10^6 bytes; latencies in µs');
  if (device) for (const line of deviceNotes(device)) o.progress(line);
  if (disk && onRam(disk)) {
    o.progress(
      `${disk} is in RAM (tmpfs or ramfs): the "disk" rows measure memory, not a disk; ` +
        'give --disk-dir DIR, a directory on the disk, to measure one',
    );
  }
  const peer = new Peer();
  let qos: CpuLatencyHold | null = null;
  let qosNote = 'not requested (--no-cpu-latency)';
  if (o.cpuLatency !== false) {
    try {
      qos = holdCpuLatency(0);
      qosNote = heldNote('for the whole run');
      if (requestWithoutEffect()) o.progress(`CPU wake-up latency request ${qosNote}`);
    } catch (err) {
      qosNote = (err as Error).message;
      o.progress(`${qosNote}; measuring with the CPUs free to sleep`);
    }
  }
  try {
    // The bare-TCP floor does not depend on the backend: measured with the first one.
    const floors = new Map<string, FloorStats[]>();
    /** How each backend served reads: 'ram' / 'nowait' inline, or 'off' (see InlineReads). */
    const inlineModes: Partial<Record<BackendName, string>> = {};
    /** Whether each backend ran lone writes on the event loop (see PoolInfo.inlineWrites). */
    const inlineWrites: Partial<Record<BackendName, boolean>> = {};
    const results: BenchResult[] = [];
    for (const backend of backends) {
      const volume: BenchVolume =
        backend === 'device'
          ? { kind: 'block', path: device!.path, readOnly: !device!.writes }
          : { kind: 'file', path: await prepareFile(backend, baseDir(backend), span, o) };
      const io = { inlineReads: o.inlineReads ?? true, inlineWrites: o.inlineWrites ?? true };
      const ports = await peer.call({ cmd: 'start', volume, io });
      if (!('nvmePort' in ports)) throw new Error('benchmark peer did not start');
      // shared with the peer's target and floor server (peer.ts): no exclusive lock
      const be = await openBackend(benchBackend(volume, io));
      inlineModes[backend] = be instanceof FdBackend ? (be.inlineReads ?? 'off') : 'off';
      inlineWrites[backend] = be instanceof FdBackend && be.inlineWrites;
      try {
        for (const p of patterns) {
          const fkey = `${p.pattern}/${p.bs}/${p.qd}/${p.queues}`;
          const legs = {
            local: [] as BenchResult['local'][],
            remote: [] as RemoteStats[],
            floor: [] as FloorStats[],
            floorIo: [] as FloorStats[],
          };
          const floorIoToo = floorIoMeasured(p, backend, backends[0]!);
          const want = { floor: !floors.has(fkey), floorIo: floorIoToo };
          await withLegs(ports, p, want, async ({ remote, floor, floorIo }) => {
            // unmeasured: each leg on its fresh connection until its rate settles (warmUp)
            await warmUp(p, backendSubmit(be), span);
            await warmUp(p, remote, span);
            if (floor) await warmUp(p, floor, span);
            if (floorIo) await warmUp(p, floorIo, span);
            // Rounds interleave the legs, so a slow spell of this noisy machine lands on
            // all of them rather than on one; each leg reports its median round.
            for (let r = 0; r < rounds; r++) {
              legs.local.push(localLeg(await measure(p, backendSubmit(be), loop, peer)));
              legs.remote.push(remoteLeg(await measure(p, remote, loop, peer)));
              if (floor) legs.floor.push(floorLeg(await measure(p, floor, loop, peer)));
              if (floorIo) legs.floorIo.push(floorLeg(await measure(p, floorIo, loop, peer)));
            }
          });
          if (want.floor) floors.set(fkey, legs.floor);
          const local = medianRound(legs.local);
          const remote = medianRound(legs.remote);
          const fl = medianRound(floors.get(fkey)!);
          const fio = floorIoToo ? medianRound(legs.floorIo) : null;
          o.progress(`${label(p, backend)} ${fmt('local', local)}`);
          o.progress(`${label(p, backend)} ${fmt('remote', remote)}`);
          o.progress(`${label(p, backend)} ${fmt('floor', fl)}`);
          if (fio) o.progress(`${label(p, backend)} ${fmt('floor+io', fio)}`);
          const perLocal = (x: RunStats) => round(x.iops / Math.max(1, local.iops), 3);
          results.push({
            ...p,
            backend,
            local,
            remote,
            floor: fl,
            ...(fio ? { floor_io: fio } : {}),
            ratio_iops: perLocal(remote),
            ...(fio ? { ratio_iops_floor_io: perLocal(fio) } : {}),
            added_lat_us: round(remote.lat_us.mean - local.lat_us.mean),
            ratio_iops_rounds: legs.remote.map((x, i) =>
              round(x.iops / Math.max(1, legs.local[i]!.iops), 3),
            ),
            rounds_iops: {
              local: legs.local.map((x) => x.iops),
              remote: legs.remote.map((x) => x.iops),
              floor: floors.get(fkey)!.map((x) => x.iops),
              ...(fio ? { floor_io: legs.floorIo.map((x) => x.iops) } : {}),
            },
          });
        }
      } finally {
        await be.close();
      }
    }
    return {
      machine: { ...machineInfo(), cpu_latency_request: qosNote, cpu_latency_held: qos !== null },
      config: {
        quick: o.quick,
        span_bytes: span,
        rounds,
        ...loop,
        warmup_leg: WARM_UP,
        qd_is_per_queue: true,
        ...(disk ? { disk_dir: disk, disk_dir_in_ram: onRam(disk) } : {}),
        ...(device ? { device: deviceConfig(device) } : {}),
        inline_reads: inlineModes,
        inline_writes: inlineWrites,
      },
      results,
    };
  } catch (err) {
    throw await peer.explain(err);
  } finally {
    await peer.stop();
    qos?.close();
    removeScratch();
  }
}

/** Makes the benchmark file of a file backend in a scratch directory of `base`; its path. */
async function prepareFile(
  backend: FileBackendName,
  base: string,
  span: number,
  o: BenchOptions,
): Promise<string> {
  const dir = fs.mkdtempSync(path.join(base, 'branchsan-bench-'));
  scratch.add(dir);
  const file = path.join(dir, 'bench.img');
  o.progress(`preparing ${span >> 20} MiB on ${backend} (${base})`);
  await prepareBackingFile(file, span, span).catch((err: unknown) => {
    if (!(err instanceof BackendError && err.kind === 'no-space') && !isDiskFull(err)) throw err;
    // the space went meanwhile (checkRoom); free then: free now plus what the file took
    const free = freeBytes(base) + fs.statSync(file).blocks * 512;
    throw noRoom(backend, base, free, span, o.quick);
  });
  return file;
}

/** A block device a run measures (--device), checked and, when written, claimed. */
interface BenchDevice {
  path: string;
  info: BlockDeviceInfo;
  /** Bytes the patterns range over: the capacity in whole 128 KiB pieces. */
  span: number;
  writes: boolean;
  /** The page cache can hold all of it: blocks read once are memory's speed afterwards. */
  fitsInRam: boolean;
  /** The O_EXCL descriptor held for the run when its writes run (none may mount it). */
  claim?: number;
}

/** The largest I/O of any pattern: a device's span is a whole number of them. */
const LARGEST_IO = 128 * 1024;
/** The smallest device worth measuring: the files of a quick run are 64 MiB. */
const MIN_DEVICE_BYTES = 16 << 20;

/**
 * Checks `dev` before any work, and claims it (O_EXCL) when its writes run: a device
 * that is mounted, part of a RAID or LVM volume, or served by an engine is refused then,
 * and none of them can take it while the run writes. Reads change nothing, so a run
 * without writes neither claims it nor minds who else has it.
 */
async function claimDevice(dev: string, writes: boolean): Promise<BenchDevice> {
  const notDevice = (what: string) =>
    new UserError(
      `bench: --device ${what}.`,
      'Give a block device, for example --device /dev/nvme1n1 (`lsblk` lists them); to measure a file system, use --disk-dir DIR instead.',
      'usage',
    );
  // before the probe, whose own words for this are for the API ("use kind file")
  if (fs.statSync(dev, { throwIfNoEntry: false })?.isBlockDevice() === false)
    throw notDevice(`${dev} is not a block device`);
  let info: BlockDeviceInfo;
  try {
    info = await probeBlockDevice(dev);
  } catch (err) {
    if (!(err instanceof BackendError)) throw err;
    throw notDevice(err.message);
  }
  let served: number;
  try {
    served = servedSize(dev, info); // what the target would serve of it, or why not
  } catch (err) {
    if (!(err instanceof BackendError)) throw err;
    throw new UserError(
      `bench: --device ${err.message}.`,
      'Give a device with 512- or 4096-byte logical blocks.',
      'usage',
    );
  }
  const span = Math.floor(served / LARGEST_IO) * LARGEST_IO;
  if (span < MIN_DEVICE_BYTES) {
    throw new UserError(
      `bench: --device ${dev} has ${mib(info.sizeBytes)}; the benchmark needs at least ${mib(MIN_DEVICE_BYTES)}.`,
      'Give a larger device.',
      'usage',
    );
  }
  if (writes && info.readOnly) {
    throw new UserError(
      `bench: --device ${dev} is read-only, so its write patterns cannot run.`,
      'Drop --device-writes to measure its reads.',
      'usage',
    );
  }
  const { O_RDONLY, O_RDWR, O_EXCL } = fs.constants;
  let fd: number;
  try {
    // the opens the run makes later (local leg, target, floor), tried now: a device this
    // user may not open failed the run at its first pattern, as if it were a bug
    fd = fs.openSync(dev, writes ? O_RDWR | O_EXCL : O_RDONLY);
  } catch (err) {
    throw cannotOpen(dev, writes, err);
  }
  const fitsInRam = info.sizeBytes <= os.totalmem();
  if (writes) return { path: dev, info, span, writes, fitsInRam, claim: fd };
  fs.closeSync(fd);
  return { path: dev, info, span, writes, fitsInRam };
}

function cannotOpen(dev: string, writes: boolean, err: unknown): UserError {
  const code = errorCode(err);
  if (writes && code === 'EBUSY') {
    return new UserError(
      `bench: --device ${dev} is in use (mounted, part of a RAID or LVM volume, or served by a program such as a BranchSAN engine); its write patterns would overwrite data in use.`,
      `Unmount it or stop what holds it (\`lsblk ${dev}\` shows mounts and holders), or drop --device-writes to measure its reads only.`,
    );
  }
  const user = process.getuid?.();
  const denied = code === 'EACCES' || code === 'EPERM';
  return new UserError(
    `bench: cannot open --device ${dev} for ${writes ? 'writing' : 'reading'} (${code || (err as Error).message}).`,
    !denied
      ? 'Check the device (`lsblk`, `dmesg`), then run the benchmark again.'
      : user === 0
        ? "Root was refused: a container's or sandbox's device rules (its device cgroup, or an AppArmor or SELinux policy) forbid this device here; measure it where it is allowed."
        : `This user (uid ${user}) may not ${writes ? 'write' : 'read'} it: run the benchmark as root${writes ? ', or drop --device-writes to measure its reads only' : ''}.`,
  );
}

/** What a run on a device says before it starts. */
function deviceNotes(d: BenchDevice): string[] {
  const notes = [
    `measuring ${d.path} (${d.info.name}, ${mib(d.info.sizeBytes)}) through the page cache, ` +
      `as the target serves a block device: ${d.writes ? 'reads and writes; ITS DATA IS OVERWRITTEN' : 'reads only (--device-writes adds the writes, which overwrite its data)'}`,
  ];
  if (d.fitsInRam) {
    notes.push(
      `${d.path} fits in this machine's RAM (${mib(os.totalmem())}): blocks read once come from ` +
        'the page cache afterwards, so the rows measure memory more than the device the longer a run goes',
    );
  }
  return notes;
}

function deviceConfig(d: BenchDevice): Record<string, unknown> {
  return {
    path: d.path,
    name: d.info.name,
    size_bytes: d.info.sizeBytes,
    logical_block_size: d.info.logicalBlockSize,
    writes: d.writes,
    fits_in_ram: d.fitsInRam,
  };
}

function mib(bytes: number): string {
  return `${Math.floor(bytes / 2 ** 20)} MiB`;
}

/** statfs types of file systems that live in RAM: tmpfs, ramfs. */
const RAM_FS_TYPES = new Set([0x01021994, 0x858458f6]);

function onRam(dir: string): boolean {
  try {
    return RAM_FS_TYPES.has(fs.statfsSync(dir).type);
  } catch {
    return false;
  }
}

/**
 * Where the on-disk benchmark file goes: --disk-dir, or the system temp dir; but that
 * is RAM on many systems (a tmpfs /tmp), which made the "disk" rows measure memory
 * under the disk's name, so then /var/tmp, which the FHS keeps on disk.
 */
function diskDir(given: string | undefined): string {
  if (given) return given;
  const tmp = os.tmpdir();
  return onRam(tmp) && fs.existsSync(VAR_TMP) && !onRam(VAR_TMP) ? VAR_TMP : tmp;
}

const VAR_TMP = '/var/tmp';

const FILE_KIND: Record<FileBackendName, string> = { shm: 'RAM-backed', disk: 'on-disk' };

/**
 * Refuses a run whose benchmark file does not fit in `base`: a /dev/shm smaller than
 * the file (a container's is 64 MiB) or a full --disk-dir made the file's write fail
 * half-way, with a storage error the CLI took for a bug.
 */
function checkRoom(backend: FileBackendName, base: string, bytes: number, quick: boolean): void {
  let free: number;
  try {
    free = freeBytes(base);
  } catch (err) {
    throw new UserError(
      `bench: cannot use ${base} for the ${FILE_KIND[backend]} benchmark file (${errorCode(err) || (err as Error).message}).`,
      roomHint(backend, quick),
    );
  }
  if (free < bytes) throw noRoom(backend, base, free, bytes, quick);
}

/** Bytes this process may still write in the file system holding `dir`. */
function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  // root may use the blocks a file system keeps back for it (ext4: 5% by default)
  return (process.getuid?.() === 0 ? s.bfree : s.bavail) * s.bsize;
}

function noRoom(
  backend: FileBackendName,
  base: string,
  free: number,
  bytes: number,
  quick: boolean,
): UserError {
  return new UserError(
    `bench: ${base} has ${Math.floor(free / 2 ** 20)} MiB free; the ${FILE_KIND[backend]} benchmark file needs ${bytes / 2 ** 20} MiB there.`,
    roomHint(backend, quick),
  );
}

function roomHint(backend: FileBackendName, quick: boolean): string {
  return backend === 'shm'
    ? 'Free space in /dev/shm, or enlarge it (mount -o remount,size=1G /dev/shm; in a container, --shm-size=1g)' +
        `${quick ? '' : ', or run with --quick, which needs 64 MiB there'}; then run the benchmark again.`
    : 'Free space there, or give a directory on another file system with --disk-dir DIR; then run the benchmark again.';
}

type RemoteStats = BenchResult['remote'];
type LegWithCpu = RunStats & { selfUs: number; peerUs: number };

/**
 * One leg, with the CPU time (all threads) this process and the peer process spent
 * in its measured window, per I/O.
 */
async function measure(
  p: Pattern,
  submit: Submit,
  loop: Omit<LoopOptions, 'onWindow'>,
  peer: Peer,
): Promise<LegWithCpu> {
  let self0 = process.cpuUsage();
  let selfUs = 0;
  let peer0: Promise<number> = Promise.resolve(0);
  let peer1: Promise<number> = Promise.resolve(0);
  const onWindow = (edge: 'start' | 'end') => {
    if (edge === 'start') {
      self0 = process.cpuUsage();
      peer0 = peer.cpu();
    } else {
      const d = process.cpuUsage(self0);
      selfUs = d.user + d.system;
      peer1 = peer.cpu();
    }
    // awaited once the loop ends; should the loop fail first, that error is the one reported
    peer0.catch(() => undefined);
    peer1.catch(() => undefined);
  };
  const stats = await runLoop(p, submit, { ...loop, onWindow });
  const peerUs = (await peer1) - (await peer0);
  const ios = Math.max(1, stats.ios);
  return { ...stats, selfUs: round(selfUs / ios), peerUs: round(peerUs / ios) };
}

function localLeg({ selfUs, peerUs: _, ...stats }: LegWithCpu): BenchResult['local'] {
  return { ...stats, cpu_us_per_io: selfUs };
}

function remoteLeg({ selfUs, peerUs, ...stats }: LegWithCpu): RemoteStats {
  return { ...stats, target_cpu_us_per_io: peerUs, host_cpu_us_per_io: selfUs };
}

function floorLeg({ selfUs, peerUs, ...stats }: LegWithCpu): FloorStats {
  return { ...stats, server_cpu_us_per_io: peerUs, client_cpu_us_per_io: selfUs };
}

/** The run's scratch directories (a benchmark file in /dev/shm is RAM until removed). */
const scratch = new Set<string>();
/** The benchmark peer process of the run in progress, if any. */
let peerChild: ChildProcess | undefined;

function removeScratch(): void {
  for (const d of scratch) fs.rmSync(d, { recursive: true, force: true });
  scratch.clear();
}

/**
 * For a run cut short by a signal, right before the process exits: stops the peer
 * process and removes the benchmark files (64-128 MiB each, in /dev/shm among them),
 * which the run's own cleanup never reaches then. Synchronous.
 */
export function abandonBenchmark(): void {
  peerChild?.kill('SIGKILL');
  removeScratch();
}

/**
 * The benchmark's other process (peer.ts), started by the first call. It lives once:
 * after it has gone, every call fails with how it ended, rather than forking a new
 * one whose CPU time and target the rest of the run would quietly report instead.
 * `script` is for tests: a stand-in that speaks the same protocol.
 */
export class Peer {
  private child?: ChildProcess;
  private waiting: { resolve: (r: PeerReply) => void; reject: (err: Error) => void }[] = [];
  /** How the peer ended, once it has: what every call since fails with. */
  private gone?: UserError;

  constructor(
    private readonly script = fileURLToPath(new URL('./peer.js', import.meta.url)),
    /** How long stop() waits for the peer to exit before it kills it. */
    private readonly stopWaitMs = PEER_STOP_WAIT_MS,
  ) {}

  call(req: PeerRequest): Promise<PeerReply> {
    if (this.gone) return Promise.reject(this.gone);
    const child = this.child ?? this.start();
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      // a send to a peer that has gone fails (EPIPE): without a callback, that would be
      // an 'error' event, and without a listener an uncaught exception
      child.send(req, (err) => err && this.broken(child, err));
    });
  }

  private start(): ChildProcess {
    const child = fork(this.script, [], {
      env: { ...process.env, ...MALLOC_ENV },
      // the peer's stdout is our stderr: with --json our stdout carries only the report,
      // and nothing the target runtime ever prints may end up inside it
      stdio: ['ignore', 2, 'inherit', 'ipc'],
    });
    this.child = peerChild = child;
    child.on('message', (m: PeerReply) => {
      const w = this.waiting.shift();
      if (!w) return;
      if (m.ok) w.resolve(m);
      else w.reject(new Error(m.error));
    });
    child.on('error', (err) => this.broken(child, err));
    child.on('exit', (code, signal) => {
      peerChild = undefined;
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      this.fail(peerGone(`the benchmark peer process (pid ${child.pid}) ${how}`));
    });
    return child;
  }

  /**
   * The channel to the peer failed (it has gone, or is going): its 'exit' follows and
   * says how it ended; should it not come, the calls fail with what the channel said.
   */
  private broken(child: ChildProcess, err: Error): void {
    if (this.gone) return;
    const timer = setTimeout(() => {
      this.fail(
        peerGone(
          `the benchmark peer process (pid ${child.pid}) stopped answering (${err.message})`,
        ),
      );
    }, PEER_EXIT_WAIT_MS);
    child.once('exit', () => clearTimeout(timer));
  }

  private fail(err: UserError): void {
    this.gone ??= err;
    for (const w of this.waiting.splice(0)) w.reject(this.gone);
  }

  /**
   * The error to report for `err`, which ended the run: how the peer ended, when it has
   * (a leg that lost its connections to a killed peer fails first with a socket's error).
   */
  async explain(err: unknown): Promise<unknown> {
    if (!this.child || this.gone) return this.gone ?? err;
    let timer: NodeJS.Timeout | undefined;
    const alive = await Promise.race([
      this.call({ cmd: 'cpu' }).then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), PEER_EXIT_WAIT_MS))),
    ]);
    clearTimeout(timer);
    return alive ? err : (this.gone ?? err);
  }

  async cpu(): Promise<number> {
    const r = await this.call({ cmd: 'cpu' });
    return 'cpuUs' in r ? r.cpuUs : 0;
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || this.gone) return;
    const exited = new Promise((r) => child.once('exit', r));
    // a peer that hangs in its stop (a target that never finishes closing) must not
    // hang the benchmark: it is killed, as a run interrupted by Ctrl-C kills it
    const timer = setTimeout(() => child.kill('SIGKILL'), this.stopWaitMs);
    await this.call({ cmd: 'stop' }).catch(() => undefined);
    await exited;
    clearTimeout(timer);
  }
}

/** How long a peer whose channel failed gets to report its exit. */
const PEER_EXIT_WAIT_MS = 2000;
/** How long a peer asked to stop gets to close its target and exit. */
const PEER_STOP_WAIT_MS = 10_000;

function peerGone(what: string): UserError {
  return new UserError(
    `bench: ${what} mid-run; nothing after that was measured.`,
    'That process serves the NVMe/TCP target and the floor. Look above for its own error, ' +
      'and in the kernel log (`dmesg`) for an out-of-memory kill, then run the benchmark again.',
  );
}

function label(p: Pattern, backend: string): string {
  return `${p.pattern} bs=${p.bs >= 1024 ? `${p.bs / 1024}k` : p.bs} qd=${p.qd} queues=${p.queues} ${backend}`.padEnd(
    42,
  );
}

/** One leg's progress line; leg names are padded so the figures line up. */
export function fmt(leg: string, s: RunStats): string {
  return `${leg.padEnd(8)} ${String(s.iops).padStart(7)} IOPS ${String(s.mbps).padStart(8)} MB/s  lat mean ${s.lat_us.mean} p99 ${s.lat_us.p99} µs`;
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

/** The table people read (stderr). floor+io columns show '-' where it was not measured. */
export function formatTable(r: BenchReport): string {
  const head =
    'pattern     bs    qd q backend |  local IOPS  remote IOPS  floor IOPS  floor+io IOPS | ratio  f+io | lat µs local / remote / floor | +lat µs | cpu µs/io local | tgt/host | floor srv/cli | f+io srv/cli';
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
      String(x.floor_io?.iops ?? '-').padStart(14),
      '|',
      x.ratio_iops.toFixed(2).padStart(5),
      (x.ratio_iops_floor_io?.toFixed(2) ?? '-').padStart(5),
      '|',
      `${x.local.lat_us.mean} / ${x.remote.lat_us.mean} / ${x.floor.lat_us.mean}`.padStart(29),
      '|',
      String(x.added_lat_us).padStart(7),
      '|',
      String(x.local.cpu_us_per_io).padStart(15),
      '|',
      `${x.remote.target_cpu_us_per_io} / ${x.remote.host_cpu_us_per_io}`.padStart(8),
      '|',
      `${x.floor.server_cpu_us_per_io} / ${x.floor.client_cpu_us_per_io}`.padStart(13),
      '|',
      x.floor_io ? `${x.floor_io.server_cpu_us_per_io} / ${x.floor_io.client_cpu_us_per_io}` : '-',
    ].join(' '),
  );
  return [head, ...rows, ...noisyLines(r.results)].join('\n');
}

/** One line per result whose rounds disagree: its ratio is a weaker figure than the rest. */
function noisyLines(results: readonly BenchResult[]): string[] {
  return results.flatMap((x) => {
    const rs = x.ratio_iops_rounds;
    if (rs.length < 2 || Math.min(...rs) <= 0) return [];
    if (Math.max(...rs) / Math.min(...rs) - 1 <= NOISY_SPREAD) return [];
    return [
      `noisy: ${label(x, x.backend).trimEnd()}: the rounds' remote/local ratios were ${rs.map((v) => v.toFixed(3)).join(', ')} ` +
        `(more than ${NOISY_SPREAD * 100}% apart: the machine's speed drifted); ` +
        'run it again, or with more --rounds, before comparing this ratio',
    ];
  });
}
