/**
 * The main-thread half of the storage I/O path: a few worker threads
 * (io-worker.ts), each with a fixed number of tags, fed through shared memory.
 *
 * Why this shape: Node's fs.read/fs.write pay 11-18 µs per I/O for the libuv pool
 * hop; here the main thread pays an Atomics store (and with the native addon nothing
 * more: the worker reads and writes the caller's buffer at its address; without it a
 * copy through a shared slot), wakes a sleeping worker at most once per microtask
 * batch, and is woken back at most once per batch of completions (see
 * io-worker-protocol.ts), or, for a job alone in the pool, polls for its completion
 * instead of sleeping (pollLone()).
 *
 * Bounded: at most `slots` I/Os per worker are in flight; more wait in a FIFO of
 * jobs (the caller's buffers are referenced there, not copied), one FIFO per class
 * of threads, so syncs stuck on a stalled medium never hold reads and plain writes
 * that the data threads could run. A job larger than a slot is issued as several
 * slot-sized pieces.
 *
 * Reads that cannot wait are served on the main thread (see InlineReads): a read
 * the page cache (or RAM) already holds costs one copy, and a thread hop (two
 * ring updates, a futex wake, a message back, a second copy) costs more than
 * the copy. So does a lone write to a file whose pages are RAM (tmpfs without swap):
 * with nothing else in the pool it can pass nothing. Misses, other writes and
 * everything behind a pending write go to workers.
 */
import { once } from 'node:events';
import { readFileSync, readSync, statfsSync, writeSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import {
  Ctrl,
  DESC64,
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
  /**
   * Microseconds the event loop polls for the completion of a lone read or write (the
   * only job in flight, on a data thread) before it goes back to sleep; 0: never (see
   * pollLone()).
   */
  completionSpinMicros?: number;
  /** Bytes per shared data slot; larger I/Os are split. Multiple of 4096. */
  slotSize: number;
  nativePath: string | null;
  /** Serve cached reads on the calling thread when the target allows it (default true). */
  inlineReads?: boolean;
  /** Run lone writes on the calling thread when the file is RAM (InlineReads 'ram'; default true). */
  inlineWrites?: boolean;
  /**
   * A write-back failure already seen on this file (errno; a pool that replaces a
   * failed one): flushes keep failing, as if this pool had seen it itself.
   */
  writebackErrno?: number;
}

/**
 * How reads may run on the main thread:
 * - 'nowait': preadv2(RWF_NOWAIT) through the addon; the kernel copies from the
 *   page cache or answers EAGAIN, and the read goes to a worker (ext4, xfs,
 *   btrfs, block devices opened without O_DIRECT);
 * - 'ram': the file lives in tmpfs and no swap is active, so every page is in
 *   memory and a plain pread never waits on a device;
 * - null: never (O_DIRECT, no addon on a disk file system, or turned off).
 */
export type InlineReads = 'nowait' | 'ram' | null;

/** The addon calls the main thread uses (see engine/native/src/branchsan_native.c). */
type ReadInline = (fd: number, into: Uint8Array, offset: number, nowait: boolean) => number;
/** Writes all of `from` at offset: its length, or -errno. */
type WriteInline = (fd: number, from: Uint8Array, offset: number) => number;
/** Where a buffer's bytes are, for a worker's readAt/writeAt (see Job.address). */
type AddressOf = (view: Uint8Array) => number;
/** Wakes up to `count` threads in the addon's futexWait on view[index]. */
type FutexWake = (view: Int32Array, index: number, count: number) => number;

const EAGAIN = 11;
const TMPFS_MAGIC = 0x01021994;
/**
 * Reads larger than this go to a worker: one copy would hold the event loop too long.
 * Up to it, the inline copy holds the loop about as long as the copy out of a worker's
 * slot (128 KiB by default) would, without the hop: 128 KiB sequential reads at QD8
 * through NVMe/TCP went from 13.6k to 20.1k per second (target CPU per read 72.8 →
 * 46.9 µs) when this rose from 64 to 128 KiB; the local leg barely moved (41.0k →
 * 44.5k).
 */
export const INLINE_READ_MAX = 128 * 1024;
/** Inline completion batches run back to back on microtasks before the loop must turn. */
const INLINE_CHAIN_MAX = 32;

/** status: Status.ok, an errno number, or a negative Status; data only for reads. */
export type JobDone = (status: number, data?: Buffer) => void;

/** Who issued a job (the backend seam's IoOwner): once closed, its jobs need not start. */
export interface JobOwner {
  readonly isClosed: boolean;
}

/** One caller request; issued as one or more pieces of at most slotSize bytes. */
class Job {
  /** Bytes handed to workers so far. */
  issued = 0;
  /**
   * Where `data`'s bytes are (the addon's addressOf) when workers move them straight to
   * or from the file; 0: through their slots. The job holds `data` until it finishes,
   * so the memory stays the caller's while any piece of it is in a worker.
   */
  address = 0;
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
    /** Who asked (a host queue), so abandon() can drop what it has not started. */
    readonly owner: JobOwner | null,
  ) {}
  /** Only reads and writes move payload through slots, so only they are split. */
  get split(): boolean {
    return this.data !== null;
  }
}

/** Which operations a lane takes. */
type LaneRole = 'data' | 'sync';

/** Jobs waiting for a tag of one class of lanes, oldest first. */
class JobFifo {
  jobs: Job[] = [];
  head = 0;
  constructor(readonly lanes: Lane[]) {}
  get empty(): boolean {
    return this.head === this.jobs.length;
  }
  /** The waiting jobs, oldest first. */
  *waiting(): Generator<Job> {
    for (let i = this.head; i < this.jobs.length; i++) yield this.jobs[i]!;
  }
  replace(jobs: Job[]): void {
    this.jobs = jobs;
    this.head = 0;
  }
  shift(): void {
    this.jobs[this.head++] = undefined as unknown as Job;
    if (this.head > 1024 && this.head * 2 > this.jobs.length) {
      this.jobs.splice(0, this.head);
      this.head = 0;
    }
  }
}

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
    /** The addon's futexWake when the worker sleeps in futexWait; null: Atomics.notify. */
    readonly futexWake: FutexWake | null,
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
  /** Whether cached reads skip the worker hop, and how they know they can. */
  inlineReads: InlineReads;
  /**
   * Whether a lone write (nothing else in the pool) skips the worker hop: only for a
   * file whose pages are RAM (inlineReads 'ram'), where a write waits on no device.
   */
  inlineWrites: boolean;
  canDeallocate: boolean;
  canWriteZeroes: boolean;
  /**
   * Reads and writes move between the file and the caller's buffer with no copy through
   * a slot (every thread has the addon's readAt/writeAt, the main thread its addressOf,
   * and the file is not opened O_DIRECT).
   */
  pointerIo: boolean;
  /** Every thread sleeps on its doorbell in the addon's futexWait (see io-worker.ts). */
  futex: boolean;
}

export class IoWorkerPool {
  private state: PoolState = 'running';
  /** Waiting jobs for the data threads, and for the sync threads (the same FIFO without any). */
  private readonly dataFifo: JobFifo;
  private readonly syncFifo: JobFifo;
  private readonly fifos: JobFifo[];
  private inflight = 0;
  /** Jobs abandon() dropped whose callbacks are still to run (on a microtask). */
  private dropping = 0;
  /** Jobs a worker held when the pool failed, completed once every worker has stopped. */
  private lostInFlight = 0;
  private kickScheduled = false;
  /** Jobs that change data (writes, zeroing, deallocate) submitted and not finished. */
  private mutating = 0;
  /** Inline reads and writes done since the last completeInline(), completed together by it. */
  private inlineDone: { done: JobDone; status: number; data: Buffer | null }[] = [];
  /**
   * Reads served on this thread, reads it tried but sent to a worker (not cached), and
   * writes it ran itself.
   */
  readonly inlineStats = { served: 0, punted: 0, writes: 0 };
  /**
   * Lone jobs whose completion the event loop polled for (pollLone()): taken while it
   * polled, or the poll ran out and the worker's message brought it.
   */
  readonly lonePolls = { caught: 0, missed: 0 };
  private lonePollScheduled = false;
  /** Lone jobs still to go without a poll since one ran out, and the next such count. */
  private lonePollSkip = 0;
  private lonePollBackoff = 1;
  private readonly pollLoneFn = (): void => this.pollLone();
  /** Inline reads pass RWF_NOWAIT (mode 'nowait'); 'ram' reads never wait anyway. */
  private nowait: boolean;
  /** Inline batches completed on microtasks since the event loop last turned. */
  private inlineChain = 0;
  private chainResetScheduled = false;
  private readonly completeInlineFn = (): void => this.completeInline();
  private readonly resetChainFn = (): void => {
    this.chainResetScheduled = false;
    this.inlineChain = 0;
  };
  private idleWaiters: (() => void)[] = [];
  /**
   * Changes of data whose owner closed while a worker was already running them (see
   * abandon()): their host counts them as not done and resends them elsewhere after
   * its fence, and then writes on. Until each has ended, a new change overlapping it
   * waits in `held` (oldest first), so the stale one can never land after it.
   */
  private readonly orphans = new Set<Job>();
  private held: Job[] = [];
  /** Why the pool failed, for error messages. */
  failure: string | null = null;
  /** Told once, on a microtask, when the pool fails (the backend replaces it). */
  onFail: (() => void) | null = null;
  /** Shared with the workers: errno of the first failed fdatasync, 0 while none (WorkerInit). */
  private readonly syncFailure: Int32Array;

  private constructor(
    private readonly lanes: Lane[],
    readonly info: PoolInfo,
    private readonly slotSize: number,
    private readonly fd: number,
    private readInline: ReadInline | null,
    private writeInline: WriteInline | null,
    syncFailure: SharedArrayBuffer,
    /** Set when info.pointerIo: pieces then carry addresses instead of using slots. */
    private readonly addressOf: AddressOf | null,
    /** PoolOptions.completionSpinMicros, in ms. */
    private lonePollMs: number,
  ) {
    this.syncFailure = new Int32Array(syncFailure);
    this.nowait = info.inlineReads === 'nowait';
    this.dataFifo = new JobFifo(lanes.filter((l) => l.role === 'data'));
    const sync = lanes.filter((l) => l.role === 'sync');
    // Without sync threads, one FIFO keeps every job in submission order.
    this.syncFifo = sync.length > 0 ? new JobFifo(sync) : this.dataFifo;
    this.fifos = this.syncFifo === this.dataFifo ? [this.dataFifo] : [this.dataFifo, this.syncFifo];
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
    const syncFailure = new SharedArrayBuffer(4);
    new Int32Array(syncFailure)[0] = opts.writebackErrno ?? 0;
    const roles: [LaneRole, number][] = [
      ['data', Math.max(1, opts.workers)],
      ['sync', Math.max(0, opts.syncWorkers)],
    ];
    try {
      for (const [role, count] of roles) {
        const per = Math.max(1, Math.ceil(opts.maxInflight / Math.max(1, count)));
        const started = await Promise.allSettled(
          Array.from({ length: count }, () => startLane(opts, role, per, syncFailure)),
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
    const inline = inlinePaths(opts);
    const addressOf = readies.every((r) => r.pointerIo)
      ? (mainThreadAddon(opts.nativePath).addressOf ?? null)
      : null;
    const info: PoolInfo = {
      native: first.native,
      nativeNote: first.nativeNote,
      inlineReads: inline.mode,
      inlineWrites: inline.write !== null,
      canDeallocate: readies.every((r) => r.canDeallocate),
      canWriteZeroes: readies.every((r) => r.canWriteZeroes),
      pointerIo: addressOf !== null,
      futex: lanes.every((l) => l.futexWake !== null),
    };
    return new IoWorkerPool(
      lanes,
      info,
      opts.slotSize,
      opts.fd,
      inline.read,
      inline.write,
      syncFailure,
      addressOf,
      lonePollMs(opts),
    );
  }

  /**
   * Runs what is submitted from now on with the inline paths and the lone-job poll that
   * `opts` asks for (a volume's io tuning changed: FdBackend.retune). Nothing submitted
   * before changes path, and each later job is checked as a pool started with `opts`
   * checks it (a lone write, say, still runs here only with nothing else pending).
   */
  retune(opts: PoolOptions): void {
    const inline = inlinePaths(opts);
    this.readInline = inline.read;
    this.writeInline = inline.write;
    this.nowait = inline.mode === 'nowait';
    this.info.inlineReads = inline.mode;
    this.info.inlineWrites = inline.write !== null;
    this.lonePollMs = lonePollMs(opts);
    this.lonePollSkip = 0;
    this.lonePollBackoff = 1;
  }

  /** The errno of the first fdatasync that failed on this target, 0 while none has. */
  get writebackErrno(): number {
    return Atomics.load(this.syncFailure, 0);
  }

  /**
   * Queues one I/O. The caller checked range and state; done runs exactly once. A job
   * with an owner that is already closed never starts (Status.dropped).
   */
  submit(
    op: OpCode,
    offset: number,
    length: number,
    data: Buffer | null,
    done: JobDone,
    owner: JobOwner | null = null,
  ): void {
    // 'stopped': a failed pool that was closed, still its backend's until replaced.
    const gone = this.state === 'failed' || this.state === 'stopped';
    if (gone || owner?.isClosed) {
      const status = gone ? Status.workerLost : Status.dropped;
      queueMicrotask(() => done(status));
      return;
    }
    if (op === Op.read) {
      if (this.readInline && this.tryInline(offset, length, data!, done)) return;
    } else if (
      op === Op.write &&
      this.writeInline &&
      this.tryInlineWrite(offset, length, data!, done)
    ) {
      return;
    } else if (op !== Op.flush) {
      this.mutating++;
    }
    const job = new Job(op, offset, length, data, done, owner);
    // Only a buffer that holds the whole job: a worker moves `length` bytes at its address
    // (addressOf answers 0, the slots, for memory it cannot hand over).
    if (data && this.addressOf && data.length >= length) job.address = this.addressOf(data);
    if (this.orphans.size > 0 && changesData(op) && this.mustWait(job, this.held.length)) {
      this.held.push(job);
      return;
    }
    this.enqueue(job);
  }

  private enqueue(job: Job): void {
    const fifo = job.op === Op.read || job.op === Op.write ? this.dataFifo : this.syncFifo;
    if (fifo.empty) {
      this.issue(job, fifo.lanes);
      if (this.fullyIssued(job)) return;
    }
    fifo.jobs.push(job);
  }

  /**
   * Whether a change of data must wait: it overlaps an orphan, or one of the first
   * `before` held changes (which it must not overtake).
   */
  private mustWait(job: Job, before: number): boolean {
    for (const o of this.orphans) if (overlap(job, o)) return true;
    for (let i = 0; i < before; i++) if (overlap(job, this.held[i]!)) return true;
    return false;
  }

  /** An orphan ended: the held changes that need not wait any more go, oldest first. */
  private releaseHeld(): void {
    const held = this.held;
    this.held = [];
    for (const job of held) {
      if (this.mustWait(job, this.held.length)) this.held.push(job);
      else if (job.owner?.isClosed) {
        job.status = Status.dropped;
        this.finish(job);
      } else this.enqueue(job);
    }
  }

  /**
   * `owner` is gone (its host queue closed): none of its jobs that has not started
   * may start any more. Jobs still waiting for a tag complete now with
   * Status.dropped; pieces already in a worker's ring are marked dropped there and
   * complete so when the worker reaches them (it may be stuck on a stalled disk,
   * which is when this matters: the host resends elsewhere after its fence, and a
   * stale write landing here later would reorder writes). A piece the worker has
   * claimed runs to its end; until it has, a new change of data overlapping its job
   * waits (orphans), so the resent write and those after it land after the stale one.
   */
  abandon(owner: JobOwner): void {
    if (this.state === 'failed' || this.state === 'stopped') return;
    let dropped = 0;
    for (const lane of this.lanes) {
      const { desc32 } = lane.views;
      for (let tag = 0; tag < lane.slots; tag++) {
        const job = lane.tagJob[tag];
        if (job?.owner !== owner) continue;
        const at = tag * 2 + 1;
        const was = Atomics.compareExchange(desc32, at, Status.queued, Status.dropped);
        if (was === Status.queued) dropped++;
        else if (was === Status.running && changesData(job.op)) this.orphans.add(job);
      }
    }
    const finished: Job[] = [];
    if (this.held.some((j) => j.owner === owner)) {
      const kept: Job[] = [];
      for (const job of this.held) {
        if (job.owner !== owner) kept.push(job);
        else {
          job.status = Status.dropped;
          finished.push(job);
          dropped++;
        }
      }
      this.held = kept;
    }
    for (const fifo of this.fifos) {
      const kept: Job[] = [];
      for (const job of fifo.waiting()) {
        if (job.owner !== owner) {
          kept.push(job);
          continue;
        }
        // Its rest is never issued; pieces already issued finish through drain().
        if (job.status === Status.ok) job.status = Status.dropped;
        job.issued = job.split ? job.length : 1;
        dropped++;
        if (job.outstanding === 0) finished.push(job);
      }
      fifo.replace(kept);
    }
    if (dropped === 0) return;
    // Callbacks never run inside the call that caused them (the seam's rule).
    this.dropping += finished.length;
    queueMicrotask(() => {
      this.dropping -= finished.length;
      for (const job of finished) this.finish(job);
      this.checkIdle();
    });
  }

  /** Resolves once nothing is queued or in flight, then stops the workers. */
  async close(): Promise<void> {
    if (this.state === 'stopped') return;
    if (this.state === 'running') this.state = 'draining';
    if (this.busy()) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
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

  /**
   * Serves a read on this thread when that cannot wait on a device and cannot
   * overtake a write: only while no job that changes data is pending, so the read
   * sees exactly what a worker, which runs its ring in order, would have seen.
   * False: the caller queues it for a worker (a page-cache miss, or not allowed).
   */
  private tryInline(offset: number, length: number, into: Buffer, done: JobDone): boolean {
    if (this.mutating > 0 || length > INLINE_READ_MAX || this.state !== 'running') return false;
    const n = this.readInline!(this.fd, into, offset, this.nowait);
    // Not cached, only partly (NOWAIT stops at the first missing page), or short (end
    // of file): a worker reads it all and decides what a short read means. Its
    // result overwrites whatever part landed in `into`.
    if (n === -EAGAIN || (n >= 0 && n < length)) {
      this.inlineStats.punted++;
      return false;
    }
    this.inlineStats.served++;
    const status = n === length ? Status.ok : -n; // else an errno, as a worker reports it
    this.completeSoon(done, status, into);
    return true;
  }

  /**
   * Runs a write on this thread when the file is RAM and the write is alone: nothing
   * queued, in a worker, held or orphaned, so it can overtake no other job (a worker's
   * ring runs in order; here nothing is in one) and no read can see half of it. At QD1
   * this saves the two thread wake-ups of the hop (about 30 µs on a VM without a cpuidle
   * driver); under load writes still spread over the workers, since running them all
   * here cost 4 KiB QD32 writes through NVMe/TCP 13% (135k → 118k per second).
   * False: the caller queues it for a worker.
   */
  private tryInlineWrite(offset: number, length: number, from: Buffer, done: JobDone): boolean {
    if (
      this.mutating > 0 ||
      this.inflight > 0 ||
      this.held.length > 0 ||
      this.orphans.size > 0 ||
      length > INLINE_READ_MAX ||
      from.length < length ||
      this.state !== 'running'
    ) {
      return false;
    }
    const n = this.writeInline!(
      this.fd,
      from.length === length ? from : from.subarray(0, length),
      offset,
    );
    this.inlineStats.writes++;
    this.completeSoon(done, n === length ? Status.ok : -n, null); // else an errno, as a worker's
    return true;
  }

  /** Queues an inline read's or write's completion for completeInline(). */
  private completeSoon(done: JobDone, status: number, data: Buffer | null): void {
    if (this.inlineDone.length === 0) this.scheduleInline();
    this.inlineDone.push({ done, status, data });
  }

  /**
   * Completes inline reads on a microtask, so a transport that read a batch of
   * commands answers them all in this event-loop turn (measured: +5-11% 4 KiB QD32
   * through NVMe/TCP against setImmediate). But a caller that submits again from
   * each callback would keep the loop in microtasks forever and starve timers and
   * sockets: after INLINE_CHAIN_MAX batches without the loop turning, the next
   * batch waits for setImmediate.
   */
  private scheduleInline(): void {
    if (this.inlineChain >= INLINE_CHAIN_MAX) return void setImmediate(this.completeInlineFn);
    this.inlineChain++;
    queueMicrotask(this.completeInlineFn);
    if (!this.chainResetScheduled) {
      this.chainResetScheduled = true;
      setImmediate(this.resetChainFn);
    }
  }

  /** Completes the batch of inline reads (callbacks never run inside submit()). */
  private completeInline(): void {
    const batch = this.inlineDone;
    this.inlineDone = [];
    for (const r of batch) {
      if (r.status === Status.ok && r.data) r.done(Status.ok, r.data);
      else r.done(r.status);
    }
    this.checkIdle();
  }

  /** Issues as many pieces of `job` as free tags of `lanes` allow. */
  private issue(job: Job, lanes: Lane[]): void {
    while (!this.fullyIssued(job)) {
      const lane = this.pickLane(lanes);
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
      desc32[tag * 2 + 1] = Status.queued; // published to the worker by the sqTail store
      desc64[tag * DESC64] = job.offset + pos;
      desc64[tag * DESC64 + 1] = len;
      desc64[tag * DESC64 + 2] = job.address === 0 ? 0 : job.address + pos;
      if (job.op !== Op.read && job.data && job.address === 0) {
        job.data.copy(lane.slotBufs[tag]!, 0, pos, pos + len);
      }
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
      if (this.inflight === 1 && this.lonePollMs > 0 && !this.lonePollScheduled) {
        this.lonePollScheduled = true;
        setImmediate(this.pollLoneFn);
      }
    });
  }

  /**
   * Polls for the completion of the one job in flight, for up to completionSpinMicros,
   * and finishes it here. A job alone in the pool is I/O one at a time (QD1: a VM's
   * synchronous write), and the event loop has nothing else to do until it ends: asleep,
   * it would be woken by the worker's message, which costs more here than a page-cache
   * write takes (on the 2-vCPU VM, 4 KiB writes at QD1 to a disk-backed file driven
   * directly: 21.3 µs each, 13.3 µs with the poll; README). Runs from setImmediate, after
   * the poll phase has handed the loop everything that had arrived; what arrives meanwhile
   * waits at most the poll. Only a data thread's job (a read or a plain write): a flush
   * or a FUA write waits on the medium for milliseconds. A poll that runs out is followed
   * by 1, 2, 4 ... 64 lone jobs without one (a device slower than the poll: a read the
   * page cache misses on a disk), and one that catches its job ends that.
   */
  private pollLone(): void {
    this.lonePollScheduled = false;
    if (this.inflight !== 1 || this.state !== 'running') return;
    let lane: Lane | undefined;
    for (const l of this.lanes) if (l.inflight === 1) lane = l;
    if (!lane || lane.role !== 'data') return;
    if (this.lonePollSkip > 0) {
      this.lonePollSkip--;
      return;
    }
    const { ctrl } = lane.views;
    // Claim the wake-up: a completion the worker publishes while this holds posts no
    // message. Already claimed: the worker's message is on its way, and brings it.
    if (Atomics.compareExchange(ctrl, Ctrl.mainPending, 0, 1) !== 0) return;
    const until = performance.now() + this.lonePollMs;
    let caught = false;
    do caught = Atomics.load(ctrl, Ctrl.cqTail) !== lane.cqHead;
    while (!caught && performance.now() < until);
    if (caught) {
      this.lonePolls.caught++;
      this.lonePollBackoff = 1;
    } else {
      this.lonePolls.missed++;
      this.lonePollSkip = this.lonePollBackoff;
      this.lonePollBackoff = Math.min(64, this.lonePollBackoff * 2);
    }
    // drain() gives the claim back before it reads the ring: a completion published
    // after that read posts its message, as any other.
    this.drain(lane);
  }

  /** Consumes every completion the worker has published. */
  private drain(lane: Lane): void {
    // After a failure every job was completed (or will be, once the threads are gone)
    // with workerLost and its tags released; threads that survived it may still
    // publish completions, also after a close turned 'failed' into 'stopped'.
    if (this.state === 'failed' || this.state === 'stopped') return;
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
      if (status === Status.ok && job.op === Op.read && job.address === 0) {
        const pos = lane.tagPos[tag]!;
        lane.slotBufs[tag]!.copy(job.data!, pos, 0, Math.min(this.slotSize, job.length - pos));
      }
      this.release(lane, tag);
      if (status !== Status.ok && job.status === Status.ok) {
        job.status = status;
        // Stop issuing the rest of a failed read or write. Only those have a rest: a
        // flush (length 0) set to issued = 0 would never count as issued, so never finish.
        if (job.split) job.issued = job.length;
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

  /** Issues queued jobs, in order within each FIFO, while its lanes have free tags. */
  private pump(): void {
    for (const fifo of this.fifos) {
      while (!fifo.empty) {
        const job = fifo.jobs[fifo.head]!;
        this.issue(job, fifo.lanes);
        if (!this.fullyIssued(job)) break;
        fifo.shift();
      }
    }
  }

  private finish(job: Job): void {
    if (changesData(job.op)) this.mutating--;
    if (this.orphans.delete(job)) this.releaseHeld();
    // A read hands its buffer to the caller; nothing else is returned.
    if (job.op === Op.read && job.status === Status.ok) job.done(Status.ok, job.data!);
    else job.done(job.status);
  }

  /** Something is queued, in a worker, read inline or dropped but not yet completed. */
  private busy(): boolean {
    return (
      this.inflight > 0 ||
      this.fifos.some((f) => !f.empty) ||
      this.held.length > 0 ||
      this.inlineDone.length > 0 ||
      this.dropping > 0 ||
      this.lostInFlight > 0
    );
  }

  private checkIdle(): void {
    if (this.busy()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  /**
   * A worker died: the pool serves no more and every job fails (workerLost). A job no
   * worker holds fails at once. A job a worker holds fails only once every worker has
   * stopped: a surviving thread may still be writing it (for seconds, on a stalled
   * disk), and workerLost reaches a host as ANA Transition, "not executed, send it
   * elsewhere"; said early, the resent write could land first and this one after it.
   */
  private fail(reason: string): void {
    if (this.state === 'failed' || this.state === 'stopped') return;
    this.state = 'failed';
    this.failure = reason;
    const held = new Set<Job>();
    for (const lane of this.lanes) {
      for (let tag = 0; tag < lane.slots; tag++) {
        const job = lane.tagJob[tag];
        if (!job) continue;
        held.add(job);
        this.release(lane, tag);
      }
    }
    const waiting = new Set<Job>(this.held);
    this.held = [];
    this.orphans.clear();
    for (const fifo of this.fifos) {
      for (const job of fifo.waiting()) if (!held.has(job)) waiting.add(job);
      fifo.replace([]);
    }
    this.mutating = 0;
    for (const job of waiting) job.done(Status.workerLost);
    if (held.size > 0) {
      this.lostInFlight += held.size;
      // terminate() resolves once the thread is gone: after a system call it is blocked
      // in returns, and before it could start the next piece in its ring.
      void Promise.allSettled(this.lanes.map((l) => l.worker.terminate())).then(() => {
        this.lostInFlight -= held.size;
        for (const job of held) job.done(Status.workerLost);
        this.checkIdle();
      });
    }
    this.checkIdle();
    const told = this.onFail;
    if (told) queueMicrotask(told);
  }
}

/** Whether two jobs' byte ranges meet. */
function overlap(a: Job, b: Job): boolean {
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

/** Whether an operation changes the data (not a read, not a flush). */
function changesData(op: OpCode): boolean {
  return op !== Op.read && op !== Op.flush;
}

/**
 * Decides whether and how reads may run inline (see InlineReads), by asking the
 * kernel: one NOWAIT read of the first block. Anything unexpected means no.
 */
function chooseInlineReads(opts: PoolOptions): { mode: InlineReads; read: ReadInline } | null {
  if (opts.direct) return null; // O_DIRECT reads always wait for the device
  const native = mainThreadAddon(opts.nativePath).readInline ?? null;
  if (native) {
    const probe = native(opts.fd, Buffer.alloc(opts.blockSize), 0, true);
    if (probe >= 0 || probe === -EAGAIN) return { mode: 'nowait', read: native };
  }
  // Only a regular file: a device node's statfs describes /dev (devtmpfs), not the disk.
  if (opts.kind !== 'file' || !inRamWithoutSwap(opts.path)) return null;
  return { mode: 'ram', read: native ?? readSyncInline };
}

/** The inline read and write `opts` allows (see InlineReads and PoolInfo.inlineWrites). */
function inlinePaths(opts: PoolOptions): {
  mode: InlineReads;
  read: ReadInline | null;
  write: WriteInline | null;
} {
  const inline = opts.inlineReads === false ? null : chooseInlineReads(opts);
  const write =
    inline?.mode === 'ram' && opts.inlineWrites !== false
      ? (mainThreadAddon(opts.nativePath).writeInline ?? writeSyncInline)
      : null;
  return { mode: inline?.mode ?? null, read: inline?.read ?? null, write };
}

/** PoolOptions.completionSpinMicros in ms. */
const lonePollMs = (opts: PoolOptions): number =>
  Math.max(0, opts.completionSpinMicros ?? 0) / 1000;

/** The addon's calls made on the event loop; any may be missing (an older build). */
export interface MainThreadAddon {
  readInline?: ReadInline;
  writeInline?: WriteInline;
  /** flock(fd, LOCK_EX or LOCK_SH | LOCK_NB): 0 or -errno. */
  lock?: (fd: number, exclusive: number) => number;
  /** A whole-file OFD lock (F_OFD_SETLK, F_WRLCK or F_RDLCK): 0 or -errno. */
  rangeLock?: (fd: number, exclusive: number) => number;
  /**
   * A conflicting fcntl lock another open file holds on the bytes, as [start, length]
   * (length 0: to the end of the file); null when none; a number is -errno.
   */
  rangeHolder?: (fd: number, start: number, length: number) => [number, number] | null | number;
  /** SO_PEERCRED of a connected Unix socket (the API socket's callers). */
  peerCred?: (fd: number) => { pid: number; uid: number; gid: number };
  /** Whether nobody will read what is written to fd (POLLERR/POLLHUP); -errno on failure. */
  outputClosed?: (fd: number) => boolean | number;
  /** Where a Uint8Array's bytes are (see Job.address). */
  addressOf?: AddressOf;
  /** Rings an I/O thread's doorbell (see sleepOnDoorbell in io-worker.ts). */
  futexWake?: FutexWake;
}

/**
 * The addon for the event loop's own calls, or nothing when there is none or it does
 * not load (the workers report why in nativeNote).
 */
export function mainThreadAddon(nativePath: string | null): MainThreadAddon {
  return (nativePath && requireAddon(nativePath)) || {};
}

/** The addon file loaded, or null (`onLoadError` told why) when it does not load. */
function requireAddon(
  file: string,
  onLoadError: (err: unknown) => void = () => {},
): MainThreadAddon | null {
  try {
    return createRequire(import.meta.url)(file) as MainThreadAddon;
  } catch (err) {
    onLoadError(err);
    return null;
  }
}

/** WriteInline without the addon (tmpfs only): fs.writeSync, errors as -errno. */
function writeSyncInline(fd: number, from: Uint8Array, offset: number): number {
  try {
    let done = 0;
    // A short write means the next call reports why (ENOSPC); loop to get it.
    while (done < from.length) {
      const n = writeSync(fd, from, done, from.length - done, offset + done);
      if (n <= 0) return -5; // EIO: nothing written and no reason given
      done += n;
    }
    return done;
  } catch (err) {
    return -(Math.abs((err as NodeJS.ErrnoException).errno ?? 0) || 5); // -EIO when unknown
  }
}

/** ReadInline without the addon (tmpfs only): fs.readSync, errors as -errno. */
function readSyncInline(fd: number, into: Uint8Array, offset: number): number {
  try {
    return readSync(fd, into, 0, into.length, offset);
  } catch (err) {
    return -(Math.abs((err as NodeJS.ErrnoException).errno ?? 0) || 5); // -EIO when unknown
  }
}

/** The file is on tmpfs and no swap device is active: its pages cannot be paged out. */
function inRamWithoutSwap(path: string): boolean {
  try {
    if (statfsSync(path).type !== TMPFS_MAGIC) return false;
    // /proc/swaps: a header line, then one line per active swap area.
    return readFileSync('/proc/swaps', 'utf8').trim().split('\n').length <= 1;
  } catch {
    return false;
  }
}

/** Wakes a worker sleeping on its doorbell (see Ctrl.doorbell), the way it sleeps. */
function ring(lane: Lane): void {
  Atomics.add(lane.views.ctrl, Ctrl.doorbell, 1);
  if (lane.futexWake) lane.futexWake(lane.views.ctrl, Ctrl.doorbell, 1);
  else Atomics.notify(lane.views.ctrl, Ctrl.doorbell, 1);
}

/** Spawns one worker and waits for its 'ready' report. */
async function startLane(
  opts: PoolOptions,
  role: LaneRole,
  slots: number,
  syncFailure: SharedArrayBuffer,
): Promise<{ lane: Lane; ready: WorkerReady }> {
  const control = new SharedArrayBuffer(controlBytes(slots));
  const slab = new SharedArrayBuffer(slots * opts.slotSize + 4096);
  const futexWake = mainThreadAddon(opts.nativePath).futexWake ?? null;
  const init: WorkerInit = {
    kind: opts.kind,
    path: opts.path,
    fd: opts.fd,
    readOnly: opts.readOnly,
    direct: opts.direct,
    blockSize: opts.blockSize,
    sizeBytes: opts.sizeBytes,
    slots,
    slotSize: opts.slotSize,
    spinMicros: opts.spinMicros,
    futex: futexWake !== null,
    control,
    slab,
    nativePath: opts.nativePath,
    syncFailure,
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
  const lane = new Lane(worker, role, control, slab, slots, first.futex ? futexWake : null);
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

/**
 * The addon for callers outside the storage path (the API socket, the command line),
 * or null when it is not built, turned off, or fails to load (`onLoadError` is told
 * why). Each caller checks that the function it needs is there.
 */
export async function loadNativeAddon(
  onLoadError?: (err: unknown) => void,
): Promise<MainThreadAddon | null> {
  const file = await resolveNativeAddon(undefined);
  return file ? requireAddon(file, onLoadError) : null;
}
