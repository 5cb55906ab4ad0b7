/**
 * The main-thread half of the storage I/O path: a few worker threads
 * (io-worker.ts), each with a fixed number of tags, fed through shared memory.
 *
 * Why this shape: Node's fs.read/fs.write pay 11-18 µs per I/O for the libuv pool
 * hop; here the main thread pays a memcpy into a shared slot and an Atomics store,
 * wakes a sleeping worker at most once per microtask batch, and is woken back at
 * most once per batch of completions (see io-worker-protocol.ts).
 *
 * Bounded: at most `slots` I/Os per worker are in flight; more wait in a FIFO of
 * jobs (the caller's buffers are referenced there, not copied). A job larger than
 * a slot is issued as several slot-sized pieces.
 */
import { once } from 'node:events';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  Ctrl,
  Op,
  Status,
  controlBytes,
  ringViews,
  type OpCode,
  type RingViews,
  type OpenedTarget,
  type WorkerInit,
  type WorkerMessage,
  type WorkerReady,
} from './io-worker-protocol.js';

export interface PoolOptions extends OpenedTarget {
  /** Threads for reads and plain writes (page-cache speed, CPU-bound). */
  workers: number;
  /**
   * Threads for operations that wait on the medium: FUA writes, flush, zeroing,
   * deallocate. Kept apart so a 5 ms fdatasync never stalls reads queued behind
   * it, and several of them let the file system group concurrent syncs. 0 sends
   * everything to the data threads.
   */
  syncWorkers: number;
  /** In-flight I/O limit per class of threads (data, sync), split across them. */
  maxInflight: number;
  /** Microseconds a worker polls for new work before sleeping (QD1 latency vs CPU). */
  spinMicros: number;
  /** Bytes per shared data slot; larger I/Os are split. Multiple of 4096. */
  slotSize: number;
  nativePath: string | null;
}

/** status: Status.ok, an errno number, or a negative Status; data only for reads. */
export type JobDone = (status: number, data?: Buffer) => void;

/** One caller request; issued as one or more pieces of at most slotSize bytes. */
class Job {
  /** Bytes handed to workers so far. */
  issued = 0;
  /** Pieces in flight. */
  outstanding = 0;
  status: number = Status.ok;
  constructor(
    readonly op: OpCode,
    readonly offset: number,
    readonly length: number,
    /** Source for writes, destination for reads, null otherwise. */
    readonly data: Buffer | null,
    readonly done: JobDone,
  ) {}
  /** Only reads and writes move payload through slots, so only they are split. */
  get split(): boolean {
    return this.data !== null;
  }
}

/** Which operations a lane takes. */
type LaneRole = 'data' | 'sync';

/** One worker thread and its tags. */
class Lane {
  readonly views: RingViews;
  readonly slotBufs: Buffer[] = [];
  readonly free: number[] = [];
  readonly tagJob: (Job | undefined)[];
  /** Offset of the piece inside its job. */
  readonly tagPos: Float64Array;
  sqTail = 0;
  cqHead = 0;
  needsKick = false;
  inflight = 0;
  constructor(
    readonly worker: Worker,
    readonly role: LaneRole,
    control: SharedArrayBuffer,
    readonly slab: SharedArrayBuffer,
    readonly slots: number,
  ) {
    this.views = ringViews(control, slots);
    this.tagJob = new Array<Job | undefined>(slots);
    this.tagPos = new Float64Array(slots);
    for (let t = slots - 1; t >= 0; t--) this.free.push(t);
  }
}

/** running → draining (close called) → stopped; any → failed when a worker dies. */
type PoolState = 'running' | 'draining' | 'stopped' | 'failed';

export interface PoolInfo {
  native: boolean;
  nativeNote: string | null;
  canDeallocate: boolean;
  canWriteZeroes: boolean;
}

export class IoWorkerPool {
  private state: PoolState = 'running';
  private readonly queue: Job[] = [];
  private queueHead = 0;
  private inflight = 0;
  private kickScheduled = false;
  private idleWaiters: (() => void)[] = [];
  /** Why the pool failed, for error messages. */
  failure: string | null = null;

  private readonly dataLanes: Lane[];
  private readonly syncLanes: Lane[];

  private constructor(
    private readonly lanes: Lane[],
    readonly info: PoolInfo,
    private readonly slotSize: number,
  ) {
    this.dataLanes = lanes.filter((l) => l.role === 'data');
    const sync = lanes.filter((l) => l.role === 'sync');
    this.syncLanes = sync.length > 0 ? sync : this.dataLanes;
    for (const lane of lanes) {
      lane.worker.on('message', () => this.drain(lane));
      lane.worker.on('error', (err) => this.fail(`I/O thread error: ${err.message}`));
      lane.worker.on('exit', (code) => {
        if (this.state !== 'stopped') this.fail(`I/O thread exited (code ${code})`);
      });
      lane.worker.unref(); // ref'd only while it has I/O in flight
    }
  }

  /** Starts the workers and waits until each has reported what it can do. */
  static async start(opts: PoolOptions): Promise<IoWorkerPool> {
    const lanes: Lane[] = [];
    const readies: WorkerReady[] = [];
    const roles: [LaneRole, number][] = [
      ['data', Math.max(1, opts.workers)],
      ['sync', Math.max(0, opts.syncWorkers)],
    ];
    try {
      for (const [role, count] of roles) {
        const per = Math.max(1, Math.ceil(opts.maxInflight / Math.max(1, count)));
        const started = await Promise.allSettled(
          Array.from({ length: count }, () => startLane(opts, role, per)),
        );
        for (const s of started) {
          if (s.status === 'fulfilled') {
            lanes.push(s.value.lane);
            readies.push(s.value.ready);
          }
        }
        const failed = started.find((s) => s.status === 'rejected');
        if (failed) throw failed.reason;
      }
    } catch (err) {
      await Promise.all(lanes.map((l) => l.worker.terminate()));
      throw err;
    }
    const first = readies[0]!;
    const info: PoolInfo = {
      native: first.native,
      nativeNote: first.nativeNote,
      canDeallocate: readies.every((r) => r.canDeallocate),
      canWriteZeroes: readies.every((r) => r.canWriteZeroes),
    };
    return new IoWorkerPool(lanes, info, opts.slotSize);
  }

  /** Queues one I/O. The caller checked range and state; done runs exactly once. */
  submit(op: OpCode, offset: number, length: number, data: Buffer | null, done: JobDone): void {
    if (this.state === 'failed') {
      queueMicrotask(() => done(Status.workerLost));
      return;
    }
    const job = new Job(op, offset, length, data, done);
    if (this.queueHead === this.queue.length) {
      this.issue(job);
      if (this.fullyIssued(job)) return;
    }
    this.queue.push(job);
  }

  /** Resolves once nothing is queued or in flight, then stops the workers. */
  async close(): Promise<void> {
    if (this.state === 'stopped') return;
    if (this.state === 'running') this.state = 'draining';
    if (this.inflight > 0 || this.queueHead < this.queue.length) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    const failed = this.state === 'failed';
    this.state = 'stopped';
    await Promise.all(
      this.lanes.map(async (lane) => {
        if (failed) return void (await lane.worker.terminate());
        const exited = once(lane.worker, 'exit');
        lane.worker.ref(); // keep the process alive until the thread is gone
        Atomics.store(lane.views.ctrl, Ctrl.stop, 1);
        ring(lane);
        await exited;
      }),
    );
  }

  /** Issues as many pieces of `job` as free tags allow. */
  private issue(job: Job): void {
    while (!this.fullyIssued(job)) {
      const lane = this.pickLane(
        job.op === Op.read || job.op === Op.write ? this.dataLanes : this.syncLanes,
      );
      if (!lane) return;
      const tag = lane.free.pop()!;
      const pos = job.issued;
      const len = job.split ? Math.min(this.slotSize, job.length - pos) : job.length;
      job.issued += job.split ? len : Math.max(len, 1);
      job.outstanding++;
      lane.tagJob[tag] = job;
      lane.tagPos[tag] = pos;
      const { desc32, desc64, sq, ctrl, mask } = lane.views;
      desc32[tag * 2] = job.op;
      desc64[tag * 2] = job.offset + pos;
      desc64[tag * 2 + 1] = len;
      if (job.op !== Op.read && job.data) job.data.copy(lane.slotBufs[tag]!, 0, pos, pos + len);
      sq[lane.sqTail & mask] = tag;
      lane.sqTail = (lane.sqTail + 1) | 0;
      Atomics.store(ctrl, Ctrl.sqTail, lane.sqTail);
      if (lane.inflight++ === 0) lane.worker.ref();
      this.inflight++;
      lane.needsKick = true;
      this.scheduleKick();
    }
  }

  private fullyIssued(job: Job): boolean {
    // Zero-length jobs without payload (flush) still need one piece.
    return job.split ? job.issued >= job.length : job.issued > 0;
  }

  /** The lane with the most free tags, or none when all are busy. */
  private pickLane(lanes: Lane[]): Lane | undefined {
    let best: Lane | undefined;
    for (const lane of lanes) {
      if (lane.free.length > 0 && (!best || lane.free.length > best.free.length)) best = lane;
    }
    return best;
  }

  /** Wakes sleeping workers once per microtask batch, not once per I/O. */
  private scheduleKick(): void {
    if (this.kickScheduled) return;
    this.kickScheduled = true;
    queueMicrotask(() => {
      this.kickScheduled = false;
      for (const lane of this.lanes) {
        if (!lane.needsKick) continue;
        lane.needsKick = false;
        if (Atomics.load(lane.views.ctrl, Ctrl.workerIdle) === 1) ring(lane);
      }
    });
  }

  /** Consumes every completion the worker has published. */
  private drain(lane: Lane): void {
    // After a failure every job was already completed with workerLost.
    if (this.state === 'failed') return;
    const { ctrl, cq, desc32, mask } = lane.views;
    // Clear first: a completion published after this load sends a new message.
    Atomics.store(ctrl, Ctrl.mainPending, 0);
    const tail = Atomics.load(ctrl, Ctrl.cqTail);
    const finished: Job[] = [];
    while (lane.cqHead !== tail) {
      const tag = cq[lane.cqHead & mask]!;
      lane.cqHead = (lane.cqHead + 1) | 0;
      const job = lane.tagJob[tag]!;
      const status = desc32[tag * 2 + 1]!;
      if (status === Status.ok && job.op === Op.read) {
        const pos = lane.tagPos[tag]!;
        lane.slotBufs[tag]!.copy(job.data!, pos, 0, Math.min(this.slotSize, job.length - pos));
      }
      this.release(lane, tag);
      if (status !== Status.ok && job.status === Status.ok) {
        job.status = status;
        job.issued = job.length; // stop issuing the rest of a failed job
      }
      if (--job.outstanding === 0 && this.fullyIssued(job)) finished.push(job);
    }
    Atomics.store(ctrl, Ctrl.cqHead, lane.cqHead);
    this.pump();
    for (const job of finished) this.finish(job);
    this.checkIdle();
  }

  private release(lane: Lane, tag: number): void {
    lane.tagJob[tag] = undefined;
    lane.free.push(tag);
    this.inflight--;
    if (--lane.inflight === 0) lane.worker.unref();
  }

  /** Issues queued jobs while tags are free. */
  private pump(): void {
    while (this.queueHead < this.queue.length) {
      const job = this.queue[this.queueHead]!;
      this.issue(job);
      if (!this.fullyIssued(job)) break;
      this.queue[this.queueHead++] = undefined as unknown as Job;
    }
    if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
      this.queue.splice(0, this.queueHead);
      this.queueHead = 0;
    }
  }

  private finish(job: Job): void {
    // A read hands its buffer to the caller; nothing else is returned.
    if (job.op === Op.read && job.status === Status.ok) job.done(Status.ok, job.data!);
    else job.done(job.status);
  }

  private checkIdle(): void {
    if (this.inflight > 0 || this.queueHead < this.queue.length) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /** A worker died: every job in flight or queued fails; the pool serves no more. */
  private fail(reason: string): void {
    if (this.state === 'failed' || this.state === 'stopped') return;
    this.state = 'failed';
    this.failure = reason;
    const jobs = new Set<Job>();
    for (const lane of this.lanes) {
      for (let tag = 0; tag < lane.slots; tag++) {
        const job = lane.tagJob[tag];
        if (!job) continue;
        jobs.add(job);
        this.release(lane, tag);
      }
    }
    for (let i = this.queueHead; i < this.queue.length; i++) jobs.add(this.queue[i]!);
    this.queue.length = 0;
    this.queueHead = 0;
    for (const job of jobs) job.done(Status.workerLost);
    this.checkIdle();
  }
}

/** Wakes a worker sleeping on its doorbell (see Ctrl.doorbell). */
function ring(lane: Lane): void {
  Atomics.add(lane.views.ctrl, Ctrl.doorbell, 1);
  Atomics.notify(lane.views.ctrl, Ctrl.doorbell, 1);
}

/** Spawns one worker and waits for its 'ready' report. */
async function startLane(
  opts: PoolOptions,
  role: LaneRole,
  slots: number,
): Promise<{ lane: Lane; ready: WorkerReady }> {
  const control = new SharedArrayBuffer(controlBytes(slots));
  const slab = new SharedArrayBuffer(slots * opts.slotSize + 4096);
  const init: WorkerInit = {
    kind: opts.kind,
    path: opts.path,
    fd: opts.fd,
    fdSync: opts.fdSync,
    direct: opts.direct,
    blockSize: opts.blockSize,
    sizeBytes: opts.sizeBytes,
    slots,
    slotSize: opts.slotSize,
    spinMicros: opts.spinMicros,
    control,
    slab,
    nativePath: opts.nativePath,
  };
  const worker = spawnWorker(init);
  const first = (await Promise.race([
    once(worker, 'message').then(([m]) => m as WorkerMessage),
    once(worker, 'error').then(
      ([e]) => ({ type: 'failed', message: (e as Error).message }) as const,
    ),
  ])) as WorkerMessage;
  if (first === 0 || first.type !== 'ready') {
    await worker.terminate();
    throw new Error(first === 0 ? 'I/O thread spoke before it was ready' : first.message);
  }
  const lane = new Lane(worker, role, control, slab, slots);
  for (let t = 0; t < slots; t++) {
    lane.slotBufs.push(Buffer.from(slab, first.slabBase + t * opts.slotSize, opts.slotSize));
  }
  return { lane, ready: first };
}

/**
 * Compiled (dist/…/io-worker-pool.js) we start io-worker.js directly. Run from
 * TypeScript sources (vitest, tsx) the worker must load tsx's loader first: Node
 * 20 does not apply a parent's --import hooks to a worker's entry module.
 */
function spawnWorker(init: WorkerInit): Worker {
  const here = import.meta.url;
  const name = 'io-worker';
  if (!here.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, here), { workerData: init });
  const require = createRequire(here);
  const tsxApi = pathToFileURL(
    join(dirname(require.resolve('tsx/package.json')), 'dist/esm/api/index.mjs'),
  );
  const entry = new URL(`./${name}.ts`, here);
  const boot = `import(${JSON.stringify(tsxApi.href)}).then((m) => { m.register(); return import(${JSON.stringify(entry.href)}); })`;
  return new Worker(boot, { eval: true, workerData: init });
}

/**
 * Where the native addon is: an explicit path, `false` for none, or the build
 * output next to the sources (engine/native/build/) in both the source tree and
 * the compiled tree (dist/engine/src/storage/ → engine/native/build/).
 * BRANCHSAN_NATIVE=off forces the fallback (tests, triage); BRANCHSAN_NATIVE_ADDON
 * names a file (packaged installs).
 */
export async function resolveNativeAddon(
  option: boolean | string | undefined,
): Promise<string | null> {
  if (option === false || process.env.BRANCHSAN_NATIVE === 'off') return null;
  if (typeof option === 'string') return option;
  if (process.env.BRANCHSAN_NATIVE_ADDON) return process.env.BRANCHSAN_NATIVE_ADDON;
  const { access } = await import('node:fs/promises');
  const file = 'native/build/branchsan_native.node';
  for (const rel of [`../../${file}`, `../../../../engine/${file}`]) {
    const candidate = new URL(rel, import.meta.url);
    try {
      await access(candidate);
      return fileURLToPath(candidate);
    } catch {
      /* try the next layout */
    }
  }
  return null;
}
