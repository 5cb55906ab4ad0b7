/**
 * The file backend (a sparse file) and the engine shared with the block-device
 * backend (block.ts): both are "an fd plus worker threads"; they differ in how
 * the size is found and how zeroing and freeing reach the storage (fallocate vs
 * BLKZEROOUT/BLKDISCARD, decided inside io-worker.ts).
 *
 * Durability: writes land in the page cache (a volatile write cache, so caps say
 * so); flush is fdatasync; a FUA write goes through an fd opened O_DSYNC, which
 * syncs only that range instead of every dirty page of the file. Each I/O thread
 * syncs through open file descriptions of its own (io-worker.ts): the kernel reports
 * a lost write-back once per description. Once an fdatasync has failed, every later
 * flush fails too (Status.writebackLost): the lost data stays lost.
 */
import * as fs from 'node:fs';
import { constants as os } from 'node:os';
import { promisify } from 'node:util';
import { join } from 'node:path';
import {
  BackendError,
  type BackendCapabilities,
  type BackendErrorKind,
  type BackendPathCounts,
  type BlockBackend,
  type IoCallback,
  type IoOwner,
  type ReadCallback,
  defer,
} from './backend.js';
import {
  IoWorkerPool,
  mainThreadAddon,
  resolveNativeAddon,
  type InlineReads,
  type JobDone,
  type PoolInfo,
  type PoolOptions,
} from './io-worker-pool.js';
import { Op, Status, type OpCode, type OpenedTarget } from './io-worker-protocol.js';
import type { DeviceIdentity } from './device-identity.js';
import { ReadBuffers } from '../util/read-buffers.js';
import { SERVICE_VOLUME_DIRS, underSystemd } from '../util/paths.js';

/**
 * Waits before replacing a failed I/O thread pool, by failures in a row: the first at
 * once, then ever more slowly, so a thread that dies on every start costs little.
 */
const RESTART_BACKOFF_MS = [0, 1000, 5000, 30_000, 60_000];
/** A pool that ran this long without failing resets the count. */
const RESTART_FORGET_MS = 10 * 60_000;

const openAsync = promisify(fs.open);
const closeAsync = promisify(fs.close);
const fstatAsync = promisify(fs.fstat);
const statAsync = promisify(fs.stat);
const ftruncateAsync = promisify(fs.ftruncate);
const unlinkAsync = promisify(fs.unlink);
const fdatasync = promisify(fs.fdatasync);
const realpathAsync = promisify(fs.realpath);
const readFileAsync = promisify(fs.readFile);

/**
 * Opens a backing file without access-time updates: a read then skips the inode's
 * atime check and update (measured: 4 KiB page-cache reads from tmpfs 1.38 → 1.26 µs).
 * O_NOATIME needs the file's owner or CAP_FOWNER; without either (EPERM) the file
 * opens as usual. With O_CREAT | O_EXCL that EPERM comes after the file was created
 * (a file system that gives new files another owner, such as a squashing NFS
 * export), so the second open drops O_EXCL: an existing file would have failed with
 * EEXIST before any permission check.
 */
async function openNoAtime(path: string, flags: number, mode?: number): Promise<number> {
  const { O_NOATIME, O_CREAT, O_EXCL } = fs.constants;
  try {
    return await openAsync(path, flags | O_NOATIME, mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    return openAsync(path, flags & O_CREAT ? flags & ~O_EXCL : flags, mode);
  }
}

/** How the I/O threads are set up; the defaults suit a 2-4 core appliance. */
export interface IoOptions {
  /** Threads for reads and plain writes (default 1: with the event loop it fills two cores). */
  workers?: number;
  /** Threads for FUA writes, flush, zeroing, deallocate (default 2; they mostly sleep in the kernel). */
  syncWorkers?: number;
  /** In-flight limit per thread class (data, sync); more requests queue (default 64). */
  maxInflight?: number;
  /** µs a worker polls before sleeping: lower QD1 latency for CPU (default 0). */
  spinMicros?: number;
  /**
   * µs the event loop polls for the completion of a lone read or write on an I/O
   * thread before it sleeps (default 30; 0: never): lower QD1 latency, see
   * IoWorkerPool.pollLone().
   */
  completionSpinMicros?: number;
  /** Shared slot size in bytes, multiple of 4096 (default 128 KiB). */
  slotSize?: number;
  /** false: run without the native addon; a string: the addon's path. */
  native?: boolean | string;
  /** Serve reads the page cache (or RAM) holds on the event loop, skipping the worker hop (default true). */
  inlineReads?: boolean;
  /**
   * Run a lone write (nothing else pending) on the event loop when the file is RAM
   * (tmpfs, no swap: inlineReads 'ram'), skipping the worker hop (default true).
   */
  inlineWrites?: boolean;
}

/** What an open found, for the opener's verify: the size, and which device it is. */
export interface OpenedBacking {
  sizeBytes: number;
  /** Its logical block size: what every LBA a host sends is counted in. */
  blockSize: number;
  /** A block device's identity (device-identity.ts); absent for a file. */
  device?: DeviceIdentity;
}

export interface FileBackendOptions {
  path: string;
  /** Required with create; when opening, checked against the file if given. */
  sizeBytes?: number;
  /** true: create a new sparse file (fails if it exists); otherwise open an existing one. */
  create?: boolean;
  /** 512 (default: every host OS and hypervisor accepts it) or 4096. */
  blockSize?: 512 | 4096;
  readOnly?: boolean;
  /**
   * Lock the file against other openers (default true): read-write opens exclusively,
   * read-only opens shared, so two processes never serve one file and nothing writes a
   * file another process exports read-only. false only for a caller that opens its own
   * file several times on purpose (the benchmark).
   */
  exclusive?: boolean;
  io?: IoOptions;
  /**
   * Called once the file is open, before anything is served from it: throwing refuses
   * it (closed again, the error passed on). The service compares it with what was
   * configured.
   */
  verify?: (opened: OpenedBacking) => void;
}

/** See FdBackend.backingState. */
export type BackingState = 'ok' | 'deleted' | 'moved';

/** What FdBackend needs; produced by openFileBackend or openBlockBackend. */
export interface FdTarget extends OpenedTarget {
  /**
   * Which file or device it is, from the descriptor opened (`file:DEV:INO`, `dev:RDEV`):
   * what the volume serves whatever its path names later (see fdIdentity).
   */
  identity: string;
  /** A block device's identity as sysfs tells it (device-identity.ts). */
  device?: DeviceIdentity;
  /**
   * A block device's sysfs entry: `link` (/sys/dev/block/MAJ:MIN) resolves to `dir` while
   * the kernel has the device; after an EIO, one that no longer does says it was removed.
   */
  sysfs?: { link: string; dir: string };
  /** Extra limits from the device (block: discard support, write cache). */
  allowDeallocate: boolean;
  readZeroesAfterDeallocate: boolean;
  volatileWriteCache: boolean;
}

/**
 * What happens to a backend's I/O threads, for the log, the event log and alerts:
 * they failed (the I/O they held fails once they have all stopped; new ones start
 * `retryInMs` after that), new ones could not start (the `attempt`-th time in a row;
 * tried again after `retryInMs`), or new ones took over after `downMs` without threads.
 */
export type IoThreadsEvent =
  | { kind: 'failed'; reason: string; retryInMs: number }
  | { kind: 'start-failed'; reason: string; retryInMs: number; attempt: number }
  | { kind: 'restarted'; downMs: number; restarts: number };

/**
 * Where a backend is. 'gone' can only follow 'open'; 'closing' any other state but
 * 'closed' (close() called, in-flight I/O finishing); 'closed' only 'closing'.
 */
type BackendState =
  /** Serving. */
  | 'open'
  /** Its storage went away under it (GONE_ERRNOS; see StorageGone): nothing is served. */
  | 'gone'
  | 'closing'
  | 'closed';

/**
 * errnos by which the kernel says the storage under an open descriptor is no longer
 * there, rather than that a block of it failed (EIO): ENXIO (no such device: a removed
 * disk or driver), ENODEV (BLK_STS_OFFLINE since Linux 5.18: a SCSI disk set offline
 * or deleted), ENOTCONN (the server of a FUSE mount died: every access to the mount
 * fails so until it is mounted again) and ESTALE (a network file system's server no
 * longer knows the open file: removed or replaced there). Nothing on it can be served
 * any more, nor trusted when it comes back under the same name: the backend stops
 * serving for good (closed), which puts its namespace's ANA group in 'inaccessible' so
 * that hosts fail over or wait.
 */
const GONE_ERRNOS: ReadonlySet<number> = new Set([
  os.errno.ENXIO,
  os.errno.ENODEV,
  os.errno.ENOTCONN,
  os.errno.ESTALE,
]);

/** What a mount whose server is gone, or whose file the server lost, is said to be. */
const MOUNT_GONE: Readonly<Record<string, string>> = {
  ENOTCONN: 'the server of its network or FUSE mount is gone',
  ESTALE: 'its network mount is stale (the server no longer knows the file)',
};

/**
 * Why a file's storage went away, by the errno that said so (StorageGone.code), for the
 * backend's errors and the service's event alike.
 */
export function fileGoneCause(code: string): string {
  return MOUNT_GONE[code] ?? 'the storage under the file went away';
}

/** What FdBackend.onStorageGone is told: the first I/O that found the device gone. */
export interface StorageGone {
  /** 'ENXIO', 'ENODEV', 'ENOTCONN' or 'ESTALE'; 'EIO' for a block device sysfs no longer lists. */
  code: string;
  /** The operation that failed: read, write, flush, write zeroes, deallocate. */
  what: string;
  offset: number;
}

export class FdBackend implements BlockBackend {
  readonly kind: string;
  readonly location: string;
  readonly blockSize: number;
  readonly sizeBytes: number;
  readonly caps: BackendCapabilities;
  /** FdTarget.identity. */
  readonly identity: string;
  /** FdTarget.device: which disk a block device is; null for a file. */
  readonly device: DeviceIdentity | null;
  private state: BackendState = 'open';
  private closing: Promise<void> | null = null;
  /** Read destinations: slab views instead of one malloc per 4 KiB read. */
  private readonly readBuffers = new ReadBuffers();

  /** Replacements of failed pools in a row (see replacePool); and when the last started. */
  private restarts = 0;
  private restartedAt = 0;
  /** A replacement waiting out its back-off: close() ends the wait. */
  private restartWait: { timer: NodeJS.Timeout; resolve: () => void } | null = null;
  private replacing: Promise<void> | null = null;
  private replaced = 0;
  /** pathCounts() of the pools replaced so far. */
  private retiredCounts: BackendPathCounts = {
    inlineReads: 0,
    inlineReadsMissed: 0,
    inlineWrites: 0,
    pollsCaught: 0,
    pollsMissed: 0,
  };
  /** Told of each IoThreadsEvent; a throwing listener changes nothing here. */
  onIoThreads: ((e: IoThreadsEvent) => void) | null = null;
  /** Told once when the device goes away (state 'gone'); a throwing listener changes nothing. */
  onStorageGone: ((e: StorageGone) => void) | null = null;
  /** Why the backend is 'gone' (set with it). */
  private gone: StorageGone | null = null;
  /** BlockBackend.watchAvailable's listeners. */
  private readonly availability = new Set<() => void>();

  constructor(
    private readonly target: FdTarget,
    private pool: IoWorkerPool,
    /** How `pool` was started (and retuned): a replacement starts the same way. */
    private poolOptions: PoolOptions,
  ) {
    this.kind = target.kind;
    this.location = target.path;
    this.blockSize = target.blockSize;
    this.sizeBytes = target.sizeBytes;
    this.identity = target.identity;
    this.device = target.device ?? null;
    pool.onFail = () => this.replaceLater(pool);
    const info: PoolInfo = pool.info;
    this.caps = {
      flush: true,
      fua: true,
      writeZeroes: info.canWriteZeroes,
      deallocate: info.canDeallocate && target.allowDeallocate,
      readZeroesAfterDeallocate: target.readZeroesAfterDeallocate,
      volatileWriteCache: target.volatileWriteCache,
    };
  }

  /**
   * Whether the path still names the file this backend has open: 'deleted' when the
   * file has no name left (its data lives only while it stays open), 'moved' when the
   * path is gone or names another file (renamed, or replaced), so the next start would
   * open something else. Block devices, and anything that cannot be checked, say 'ok'.
   */
  async backingState(): Promise<{ state: BackingState; fd: number }> {
    const fd = this.target.fd;
    if (this.target.kind !== 'file' || this.state !== 'open') return { state: 'ok', fd };
    try {
      const open = await fstatAsync(fd);
      if (open.nlink === 0) return { state: 'deleted', fd };
      const named = await statAsync(this.target.path).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return null;
        throw err;
      });
      const same = named !== null && named.dev === open.dev && named.ino === open.ino;
      return { state: same ? 'ok' : 'moved', fd };
    } catch {
      return { state: 'ok', fd }; // closed meanwhile, or not checkable: say nothing
    }
  }

  /** Why the addon is not used (null when it is): for the start-up log. */
  get nativeNote(): string | null {
    return this.pool.info.nativeNote;
  }

  /** Whether cached reads run on the event loop, and how that was decided (see InlineReads). */
  get inlineReads(): InlineReads {
    return this.pool.info.inlineReads;
  }

  /** Whether lone writes run on the event loop (PoolInfo.inlineWrites). */
  get inlineWrites(): boolean {
    return this.pool.info.inlineWrites;
  }

  /** µs the event loop polls for a lone I/O on a thread (IoOptions.completionSpinMicros). */
  get completionSpinMicros(): number {
    return this.poolOptions.completionSpinMicros ?? 0;
  }

  /** Whether reads and writes skip the copy through a worker's slot (PoolInfo.pointerIo). */
  get pointerIo(): boolean {
    return this.pool.info.pointerIo;
  }

  /** Whether the I/O threads sleep in the addon's futexWait (PoolInfo.futex). */
  get futexDoorbell(): boolean {
    return this.pool.info.futex;
  }

  /**
   * Reads served on the event loop, those it handed to a worker (not cached), and
   * writes run on the event loop.
   */
  get inlineStats(): Readonly<{ served: number; punted: number; writes: number }> {
    return this.pool.inlineStats;
  }

  /**
   * Lone jobs whose completion the event loop polled for: caught in the poll, or
   * missed (the poll ran out). See IoOptions.completionSpinMicros.
   */
  get lonePolls(): Readonly<{ caught: number; missed: number }> {
    return this.pool.lonePolls;
  }

  /**
   * Runs the I/O submitted from now on as `io` asks, each left out at its default (a
   * volume's io tuning changed): this pool, and any that replaces it.
   */
  retune(io: IoTuningOptions): void {
    this.poolOptions = { ...this.poolOptions, ...tuning(io) };
    this.pool.retune(this.poolOptions);
  }

  /** Since the open: the pools replaced so far, and this one. */
  pathCounts(): BackendPathCounts {
    const { served, punted, writes } = this.pool.inlineStats;
    const { caught, missed } = this.pool.lonePolls;
    const r = this.retiredCounts;
    return {
      inlineReads: r.inlineReads + served,
      inlineReadsMissed: r.inlineReadsMissed + punted,
      inlineWrites: r.inlineWrites + writes,
      pollsCaught: r.pollsCaught + caught,
      pollsMissed: r.pollsMissed + missed,
    };
  }

  read(offset: number, length: number, cb: ReadCallback, into?: Buffer): void {
    const err = this.check('read', offset, length);
    if (err) return defer(cb, err);
    if (length === 0) return defer(cb, null, into ?? Buffer.alloc(0));
    const dest = into ?? this.readBuffers.take(length);
    this.pool.submit(Op.read, offset, length, dest, (st, data) =>
      st === Status.ok ? cb(null, data) : this.fail(st, 'read', offset, cb),
    );
  }

  write(offset: number, data: Buffer, fua: boolean, cb: IoCallback, owner?: IoOwner): void {
    const err = this.check('write', offset, data.length);
    if (err) return defer(cb, err);
    if (data.length === 0) return defer(cb, null);
    this.pool.submit(
      fua ? Op.writeFua : Op.write,
      offset,
      data.length,
      data,
      this.done(cb, 'write', offset),
      owner,
    );
  }

  flush(cb: IoCallback): void {
    const err = this.check('flush', 0, 0);
    if (err) return defer(cb, err);
    this.pool.submit(Op.flush, 0, 0, null, this.done(cb, 'flush', 0));
  }

  writeZeroes(offset: number, length: number, fua: boolean, cb: IoCallback, owner?: IoOwner): void {
    const err = this.check('write', offset, length);
    if (err) return defer(cb, err);
    if (length === 0) return defer(cb, null);
    const op = fua ? Op.writeZeroesFua : Op.writeZeroes;
    this.pool.submit(op, offset, length, null, this.done(cb, 'write zeroes', offset), owner);
  }

  /** Without hole punching/discard the worker writes zeroes, so data semantics hold. */
  deallocate(offset: number, length: number, cb: IoCallback, owner?: IoOwner): void {
    const err = this.check('write', offset, length);
    if (err) return defer(cb, err);
    if (length === 0) return defer(cb, null);
    const op: OpCode = this.caps.deallocate ? Op.deallocate : Op.writeZeroes;
    this.pool.submit(op, offset, length, null, this.done(cb, 'deallocate', offset), owner);
  }

  /** See BlockBackend.abandon: queued calls of `owner` never start (Status.dropped). */
  abandon(owner: IoOwner): void {
    this.pool.abandon(owner);
  }

  close(): Promise<void> {
    if (!this.closing) {
      this.state = 'closing';
      this.availabilityChanged();
      this.closing = (async () => {
        try {
          this.restartWait?.resolve();
          await this.replacing;
          await this.pool.close();
        } finally {
          await closeAsync(this.target.fd).catch(() => undefined);
          this.state = 'closed';
        }
      })();
    }
    return this.closing;
  }

  /** Failed pools replaced so far. */
  get poolRestarts(): number {
    return this.replaced;
  }

  /** The I/O threads failed and new ones have not taken over yet: I/O fails meanwhile. */
  get ioThreadsDown(): boolean {
    return this.replacing !== null;
  }

  /** BlockBackend.available: false while the I/O threads are down, and once closed. */
  get available(): boolean {
    return !this.ioThreadsDown && this.state === 'open';
  }

  /** Why nothing is served any more when the device went away (state 'gone'), else null. */
  get goneReason(): string | null {
    return this.gone ? this.goneError(this.gone.code).message : null;
  }

  /** BlockBackend.closed: close() was called, or the device went away ('gone'). */
  get closed(): boolean {
    return this.state !== 'open';
  }

  watchAvailable(listener: () => void): () => void {
    this.availability.add(listener);
    return () => this.availability.delete(listener);
  }

  private tell(e: IoThreadsEvent): void {
    quietly(() => this.onIoThreads?.(e));
  }

  private availabilityChanged(): void {
    for (const listener of [...this.availability]) quietly(listener);
  }

  private replaceLater(failed: IoWorkerPool): void {
    if (this.replacing || this.state !== 'open') return;
    this.replacing = this.replacePool(failed).finally(() => {
      this.replacing = null;
      this.availabilityChanged();
    });
    this.availabilityChanged();
  }

  /**
   * One dead I/O thread does not take the volume down until the engine restarts: the
   * failed pool is replaced. First every old thread stops and every job the pool held
   * fails (IoWorkerPool.fail), then new threads start, told of any write-back failure
   * the old ones recorded or the volume's first description reports
   * (unseenWritebackError), so no later flush reports success over writes the kernel
   * lost.
   * Until then I/O fails as unavailable (ANA Transition to hosts, which retry). A pool
   * that keeps failing is replaced ever more slowly (RESTART_BACKOFF_MS); after
   * RESTART_FORGET_MS without a failure the count starts again.
   */
  private async replacePool(failed: IoWorkerPool): Promise<void> {
    const downSince = Date.now();
    let writebackErrno = failed.writebackErrno;
    let startFailure: string | null = null;
    let attempt = 0;
    for (;;) {
      if (Date.now() - this.restartedAt > RESTART_FORGET_MS) this.restarts = 0;
      const backoff = RESTART_BACKOFF_MS[Math.min(this.restarts, RESTART_BACKOFF_MS.length - 1)]!;
      this.restarts++;
      if (startFailure === null) {
        this.tell({ kind: 'failed', reason: failed.failure ?? 'unknown', retryInMs: backoff });
      } else {
        this.tell({ kind: 'start-failed', reason: startFailure, retryInMs: backoff, attempt });
      }
      await failed.close();
      if (this.state !== 'open') return; // closed meanwhile: no wait, no new threads
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff);
        timer.unref();
        this.restartWait = { timer, resolve };
      });
      clearTimeout(this.restartWait!.timer);
      this.restartWait = null;
      if (this.state !== 'open') return;
      this.restartedAt = Date.now();
      let next: IoWorkerPool;
      try {
        // kept across attempts: the first description tells of an error only once
        writebackErrno ||= await this.unseenWritebackError();
        if (this.state !== 'open') return;
        next = await IoWorkerPool.start({ ...this.poolOptions, writebackErrno });
      } catch (err) {
        if (this.state !== 'open') return; // closed while they started: nothing to retry
        // threads that cannot start now: try again after the next back-off
        startFailure = err instanceof Error ? err.message : String(err);
        attempt++;
        continue;
      }
      if (this.state !== 'open') return void (await next.close());
      next.onFail = () => this.replaceLater(next);
      this.retiredCounts = this.pathCounts(); // a pool counts from its own start
      this.pool = next;
      this.replaced++;
      this.tell({ kind: 'restarted', downMs: Date.now() - downSince, restarts: this.replaced });
      return;
    }
  }

  /**
   * A write-back error since the volume was opened that no thread recorded, or 0. The
   * old threads may have been told of one and not kept it: a lone FUA write syncs
   * through an O_DSYNC description of its own, and a thread killed inside fdatasync
   * never returns to record it. The kernel tells each open file description once, and
   * marks the error seen, after which new descriptions (the new threads' own) never
   * hear of it. The volume's first description never syncs, so it still hears of
   * every one: an fdatasync of it, on libuv's thread pool, tells.
   */
  private async unseenWritebackError(): Promise<number> {
    if (this.target.readOnly) return 0;
    try {
      await fdatasync(this.target.fd);
      return 0;
    } catch (err) {
      const errno = Math.abs((err as NodeJS.ErrnoException).errno ?? 0);
      // a file that cannot be synced at all has nothing to tell
      return errno === os.errno.EINVAL || errno === os.errno.EBADF ? 0 : errno;
    }
  }

  private done(cb: IoCallback, what: string, offset: number): JobDone {
    return (st) => (st === Status.ok ? cb(null) : this.fail(st, what, offset, cb));
  }

  /**
   * Completes a failed call. Linux reports most removals of a disk as EIO, not ENXIO or
   * ENODEV (a disk marked dead fails every bio with BLK_STS_IOERR): after an EIO of a
   * block device, sysfs tells whether it is still there (deviceRemoved), and a removed
   * one is gone as for ENXIO. An EIO of a device still there stays a media error.
   */
  private fail(status: number, what: string, offset: number, cb: IoCallback): void {
    if (this.gone) return cb(this.goneError(this.gone.code)); // one in flight when it went
    if (status !== os.errno.EIO || !this.target.sysfs || this.state !== 'open')
      return cb(this.error(status, what, offset));
    void this.deviceRemoved().then((removed) => {
      if (!removed || this.state === 'closing' || this.state === 'closed')
        return cb(this.error(status, what, offset));
      this.lose({ code: 'EIO', what, offset });
      cb(this.goneError(this.gone?.code ?? 'EIO'));
    });
  }

  /**
   * Whether the kernel no longer has this block device: its /sys/dev/block entry is gone
   * or names another device (the number taken by a newer one), or its capacity is 0 (a
   * disk marked dead, a loop device cleared). Whatever cannot be read says no.
   */
  private async deviceRemoved(): Promise<boolean> {
    const { link, dir } = this.target.sysfs!;
    try {
      if ((await realpathAsync(link)) !== dir) return true;
      return (await readFileAsync(join(dir, 'size'), 'utf8')).trim() === '0';
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === 'ENOENT' || code === 'ENODEV';
    }
  }

  private check(what: string, offset: number, length: number): BackendError | null {
    if (this.gone) return this.goneError(this.gone.code);
    if (this.state !== 'open') {
      return new BackendError(
        'unavailable',
        `${this.describe()} is closed; the volume is being stopped`,
      );
    }
    if (what !== 'read' && what !== 'flush' && this.target.readOnly) {
      return new BackendError('read-only', `${this.describe()} was opened read-only`);
    }
    const bs = this.blockSize;
    if (!(offset >= 0 && length >= 0 && offset + length <= this.sizeBytes)) {
      return new BackendError(
        'out-of-range',
        `${what} of ${length} bytes at ${offset} is beyond the ${this.sizeBytes}-byte volume`,
      );
    }
    if (offset % bs !== 0 || length % bs !== 0) {
      return new BackendError(
        'out-of-range',
        `${what} of ${length} bytes at ${offset} is not aligned to ${bs}-byte blocks`,
      );
    }
    return null;
  }

  private describe(): string {
    return `${this.kind === 'block' ? 'block device' : 'backing file'} ${this.location}`;
  }

  private error(status: number, what: string, offset: number): BackendError {
    if (GONE_ERRNOS.has(status)) {
      const code = errnoNames.get(status)!;
      this.lose({ code, what, offset });
      return this.goneError(code);
    }
    return statusError(status, {
      what,
      offset,
      subject: this.describe(),
      block: this.kind === 'block',
      failure: this.pool.failure,
      writebackErrno: this.pool.writebackErrno,
    });
  }

  /** What every call answers once the device is gone. */
  private goneError(code: string): BackendError {
    const block = this.kind === 'block';
    const what = block ? 'the device was removed or went offline' : fileGoneCause(code);
    const fix = block
      ? 'Reconnect the device (check dmesg and lsblk)'
      : `Bring back the disk or mount it is on (check dmesg and findmnt -T '${this.location}')`;
    return new BackendError(
      'unavailable',
      `${this.describe()} is gone (${code}: ${what}), so this node no longer serves the volume: hosts use another path or wait. ` +
        `${fix}, then restart the engine service; or remove the volume`,
      code,
    );
  }

  /**
   * The device went away (GONE_ERRNOS): from now on every call fails 'unavailable' and
   * `closed` is true, so the core reports the namespace's group inaccessible and answers
   * its I/O ANA Inaccessible. Not even reads of what the page cache still holds are
   * served: a device that comes back under the same name may hold other data, and a
   * write this node acknowledged may have been lost with it.
   */
  private lose(gone: StorageGone): void {
    if (this.state !== 'open') return;
    this.state = 'gone';
    this.gone = gone;
    this.restartWait?.resolve(); // no new threads for a device that is not there
    quietly(() => this.onStorageGone?.(gone));
    this.availabilityChanged();
  }
}

/** Calls a listener of the backend's; its failure must not stop the replacement. */
function quietly(listener: () => void): void {
  try {
    listener();
  } catch {
    // nothing to do: the listener's own business
  }
}

const errnoNames = new Map<number, string>(Object.entries(os.errno).map(([name, n]) => [n, name]));

interface ErrorContext {
  what: string;
  offset: number;
  /** "backing file /x" or "block device /dev/y" */
  subject: string;
  /** A block device: it has a fixed size instead of a file system's free space. */
  block?: boolean;
  failure: string | null;
  /** errno of the first failed fdatasync (0: none), for Status.writebackLost. */
  writebackErrno?: number;
}

/** Turns a worker status into an error that says what happened and what to do. */
export function statusError(status: number, ctx: ErrorContext): BackendError {
  const at = `${ctx.what} at offset ${ctx.offset}`;
  if (status === Status.workerLost) {
    const why = ctx.failure ?? 'unknown reason';
    return new BackendError(
      'unavailable',
      `the I/O thread for ${ctx.subject} stopped (${why}); new threads take over in a ` +
        'moment and the host retries. If this repeats, restart the engine service and ' +
        'send a diagnostics bundle',
    );
  }
  if (status === Status.dropped) {
    return new BackendError(
      'unavailable',
      `${at} on ${ctx.subject} was not started: the host connection that sent it closed ` +
        'first; the host resends it after reconnecting, or on another path',
    );
  }
  if (status === Status.shortRead) {
    const why = ctx.block ? 'the device shrank' : 'something truncated it';
    return new BackendError(
      'io',
      `${ctx.subject} ended before the ${at}: ${why}; restore the volume from its mirror`,
    );
  }
  if (status === Status.writebackLost) {
    const code = errnoNames.get(ctx.writebackErrno ?? 0) ?? 'EIO';
    return new BackendError(
      'io',
      `${at} on ${ctx.subject} failed: an earlier write-back to it failed (${code}), so writes acknowledged before that may not be on the medium, and every flush fails from now on; check the system log (dmesg) and the disk health, then restore the volume from its mirror`,
      code,
    );
  }
  if (status < 0)
    return new BackendError(
      'io',
      `internal error during ${at} on ${ctx.subject}; see the engine log`,
    );
  const code = errnoNames.get(status) ?? `errno ${status}`;
  const [kind, advice] = classify(code, ctx.what !== 'read', ctx.block === true);
  return new BackendError(kind, `${at} on ${ctx.subject} failed (${code}): ${advice}`, code);
}

function classify(code: string, writing: boolean, block: boolean): [BackendErrorKind, string] {
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      // A device refuses a write past its end with ENOSPC: it shrank, or a thin pool is full.
      if (block)
        return [
          'no-space',
          'the device has no room for it: it is smaller than when the volume was opened, or its thin pool is full; check the device',
        ];
      return ['no-space', 'the storage is full; free space on that file system or move the volume'];
    case 'EROFS':
    case 'EPERM':
    case 'EACCES':
      if (writing)
        return [
          'read-only',
          'the storage refuses writes; check that it is mounted read-write and the engine may write it',
        ];
      return ['io', 'the engine may not read it; check its permissions'];
    case 'EOPNOTSUPP':
    case 'ENOTTY':
      return ['unsupported', 'the storage does not support this operation'];
    default:
      return [
        'io',
        'the storage reported an error; check the system log (dmesg) and the disk health',
      ];
  }
}

/** Creates or opens a sparse backing file. */
export async function openFileBackend(opts: FileBackendOptions): Promise<FdBackend> {
  const blockSize = opts.blockSize ?? 512;
  if (blockSize !== 512 && blockSize !== 4096) {
    throw new BackendError(
      'out-of-range',
      `block size ${String(blockSize)} is not supported; use 512 or 4096`,
    );
  }
  const readOnly = opts.readOnly === true;
  const { fd, sizeBytes } = opts.create
    ? await createFile(opts, blockSize)
    : await openExisting(opts, blockSize, readOnly);
  try {
    opts.verify?.({ sizeBytes, blockSize });
    // resolved once, for the lock and for the pool
    const native = (await resolveNativeAddon(opts.io?.native)) ?? false;
    if (opts.exclusive !== false) lockFile(fd, opts.path, !readOnly, native || null);
    const target: FdTarget = {
      kind: 'file',
      path: opts.path,
      fd,
      identity: await fdIdentity(fd),
      direct: false,
      blockSize,
      sizeBytes,
      readOnly,
      allowDeallocate: true,
      readZeroesAfterDeallocate: true, // punched holes and the zero-writing fallback both read as zeroes
      volatileWriteCache: true, // the page cache
    };
    return await startBackend(target, { ...opts.io, native });
  } catch (err) {
    await closeAsync(fd).catch(() => undefined);
    // A file created just now for a backend that never started is not left behind.
    if (opts.create) await unlinkAsync(opts.path).catch(() => undefined);
    throw err;
  }
}

/**
 * A file's or device's identity from an open descriptor: what a path names (stat) is
 * compared with it to tell the same file or device under another name.
 */
export async function fdIdentity(fd: number): Promise<string> {
  return statIdentity(await fstatAsync(fd));
}

export function statIdentity(st: fs.Stats): string {
  return st.isBlockDevice() ? `dev:${st.rdev}` : `file:${st.dev}:${st.ino}`;
}

/** The part of IoOptions a volume's io tuning sets (FdBackend.retune), defaults filled in. */
type IoTuningOptions = Pick<IoOptions, 'inlineReads' | 'inlineWrites' | 'completionSpinMicros'>;

function tuning(io: IoTuningOptions): Required<IoTuningOptions> {
  return {
    inlineReads: io.inlineReads ?? true,
    inlineWrites: io.inlineWrites ?? true,
    completionSpinMicros: Math.max(0, io.completionSpinMicros ?? 30),
  };
}

/** Starts the worker pool for an opened target; closes nothing on failure. */
export async function startBackend(target: FdTarget, io: IoOptions = {}): Promise<FdBackend> {
  const slotSize = io.slotSize ?? 128 * 1024;
  if (slotSize < 4096 || slotSize % 4096 !== 0)
    throw new Error(`slotSize ${slotSize} is not a multiple of 4096`);
  const poolOptions: PoolOptions = {
    kind: target.kind,
    path: target.path,
    fd: target.fd,
    readOnly: target.readOnly,
    direct: target.direct,
    blockSize: target.blockSize,
    sizeBytes: target.sizeBytes,
    workers: Math.max(1, io.workers ?? 1),
    syncWorkers: Math.max(0, io.syncWorkers ?? 2),
    spinMicros: Math.max(0, io.spinMicros ?? 0),
    maxInflight: Math.max(1, io.maxInflight ?? 64),
    slotSize,
    nativePath: await resolveNativeAddon(io.native),
    ...tuning(io),
  };
  return new FdBackend(target, await IoWorkerPool.start(poolOptions), poolOptions);
}

const EWOULDBLOCK = 11; // also EAGAIN
const EACCES = 13;

/**
 * Takes the open file's locks, without waiting: exclusive for read-write, shared for
 * read-only. They live as long as `fd` stays open.
 * - flock: a second engine or export on the same file.
 * - a whole-file OFD lock (fcntl): the lock QEMU and libvirt take on disk images, which
 *   flock does not see. A file a virtual machine has open as its disk is refused, and
 *   such a machine cannot start on a file we serve. A read-only open, whose shared lock
 *   QEMU's shared locks do not conflict with, also refuses an image a VM writes.
 * Without the native addon, or on a file system without these locks (ENOLCK,
 * EOPNOTSUPP: some network and FUSE mounts), the file is served unlocked: the locks
 * guard against other programs on the same machine, where local file systems all
 * support them.
 */
function lockFile(fd: number, path: string, exclusive: boolean, nativePath: string | null): void {
  // Any of these calls may be missing: no addon, or one built before it.
  const { lock, rangeLock, rangeHolder } = mainThreadAddon(nativePath);
  const mode = exclusive ? 1 : 0;
  if (lock && lock(fd, mode) === -EWOULDBLOCK) {
    throw busy(
      path,
      `another process has it open ${exclusive ? '' : 'for writing '}` +
        '(a BranchSAN engine or "branchsan export" serving it, or another program that locked it)',
    );
  }
  const r = rangeLock ? rangeLock(fd, mode) : 0;
  if (r === -EWOULDBLOCK || r === -EACCES) {
    throw busy(
      path,
      'another program holds a lock on it (a QEMU or libvirt virtual machine using it as ' +
        'a disk image, or another program that locks it with fcntl)',
    );
  }
  // QEMU takes only shared locks, so a writing VM does not stop a shared lock; it marks
  // its "write" permission with a lock on byte 101. Hosts reading an image that a VM
  // writes meanwhile would see torn, changing data, so a read-only open refuses it,
  // as qemu-img does.
  if (!exclusive && r === 0 && qemuWrites(rangeHolder?.(fd, QEMU_WRITE_PERM_BYTE, 1))) {
    throw busy(
      path,
      'a QEMU or libvirt virtual machine has it open for writing, so a read-only volume ' +
        'would serve data that changes under the hosts; shut the VM down, or export a copy ' +
        'or snapshot of the image',
    );
  }
}

/** QEMU's lock byte for "this open file may write" (file-posix: 100 + the WRITE bit). */
const QEMU_WRITE_PERM_BYTE = 101;

/**
 * Whether the lock found on QEMU_WRITE_PERM_BYTE is QEMU's: a lock on a few bytes. A
 * whole-file shared lock (start 0, to the end) is another read-only open like ours.
 */
function qemuWrites(holder: [number, number] | null | number | undefined): boolean {
  return Array.isArray(holder) && !(holder[0] === 0 && holder[1] === 0);
}

function busy(path: string, why: string): BackendError {
  return new BackendError('unavailable', `cannot open ${path}: ${why}`, 'EBUSY');
}

async function createFile(
  opts: FileBackendOptions,
  blockSize: number,
): Promise<{ fd: number; sizeBytes: number }> {
  const size = opts.sizeBytes;
  if (size === undefined || !Number.isSafeInteger(size) || size <= 0 || size % blockSize !== 0) {
    throw new BackendError(
      'out-of-range',
      `cannot create ${opts.path}: size ${String(size)} is not a positive multiple of ${blockSize} bytes`,
    );
  }
  const { O_RDWR, O_CREAT, O_EXCL } = fs.constants;
  const fd = await openNoAtime(opts.path, O_RDWR | O_CREAT | O_EXCL, 0o600).catch(
    (err: NodeJS.ErrnoException) => {
      if (err.code === 'EEXIST') {
        throw new BackendError(
          'unavailable',
          `backing file ${opts.path} already exists; open it instead or choose another name`,
          'EEXIST',
        );
      }
      throw openError(opts.path, err);
    },
  );
  try {
    await ftruncateAsync(fd, size); // sparse: no blocks are allocated until written
  } catch (err) {
    await closeAsync(fd).catch(() => undefined);
    await unlinkAsync(opts.path).catch(() => undefined);
    throw openError(opts.path, err as NodeJS.ErrnoException);
  }
  return { fd, sizeBytes: size };
}

async function openExisting(
  opts: FileBackendOptions,
  blockSize: number,
  readOnly: boolean,
): Promise<{ fd: number; sizeBytes: number }> {
  const fd = await openNoAtime(
    opts.path,
    readOnly ? fs.constants.O_RDONLY : fs.constants.O_RDWR,
  ).catch((err: NodeJS.ErrnoException) => {
    throw openError(opts.path, err);
  });
  const st = await fstatAsync(fd);
  let problem: string | null = null;
  if (!st.isFile()) problem = 'is not a regular file (use kind "block" for devices)';
  else if (st.size === 0 || st.size % blockSize !== 0)
    problem = `is ${st.size} bytes, not a positive multiple of ${blockSize}`;
  else if (opts.sizeBytes !== undefined && opts.sizeBytes !== st.size)
    problem = `is ${st.size} bytes, expected ${opts.sizeBytes}`;
  if (problem) {
    await closeAsync(fd);
    throw new BackendError('out-of-range', `backing file ${opts.path} ${problem}`);
  }
  return { fd, sizeBytes: st.size };
}

export function openError(path: string, err: NodeJS.ErrnoException): BackendError {
  const code = err.code ?? 'EIO';
  const advice: Record<string, [BackendErrorKind, string]> = {
    ENOENT: ['unavailable', 'it does not exist; create the volume or fix the path'],
    EACCES: [
      'read-only',
      'permission denied; the engine service must be able to read and write it',
    ],
    EPERM: ['read-only', 'permission denied; the engine service must be able to read and write it'],
    EROFS: [
      'read-only',
      underSystemd()
        ? `its file system is read-only to the engine: the branchsan service may write only under ${SERVICE_VOLUME_DIRS.join(', ')}; keep the volume there, or allow its directory with \`systemctl edit branchsan\` ([Service] ReadWritePaths=DIR) and restart the service`
        : 'its file system is mounted read-only',
    ],
    ENOSPC: ['no-space', 'its file system is full; free space or choose another location'],
    EFBIG: [
      'no-space',
      'the file system cannot hold a file this large; choose a smaller size or another file system',
    ],
    EBUSY: ['unavailable', 'it is in use (mounted or opened exclusively by another program)'],
    ENOTCONN: ['unavailable', MOUNT_GONE.ENOTCONN!],
    ESTALE: ['unavailable', MOUNT_GONE.ESTALE!],
  };
  const [kind, what] = advice[code] ?? ['io', err.message];
  return new BackendError(kind, `cannot open ${path} (${code}): ${what}`, code);
}
