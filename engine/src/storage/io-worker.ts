/**
 * A storage I/O thread. It owns no state beyond its tags: the main thread opened
 * the fds and hands us descriptors through shared memory (io-worker-protocol.ts).
 *
 * Synchronous syscalls are the point here: this thread is not an event loop, so
 * readSync/writeSync/fdatasyncSync cost only the syscall and Node's thin binding
 * (about 5-7 µs on tmpfs) instead of the libuv pool's 18-25 µs hop.
 * While idle the thread sleeps on its doorbell (the addon's futexWait, else
 * Atomics.wait); it never returns to its own event loop until the main thread sets
 * `stop`.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { parentPort, workerData } from 'node:worker_threads';
import {
  Ctrl,
  DESC64,
  Op,
  Status,
  ringViews,
  type WorkerFailed,
  type WorkerInit,
  type WorkerReady,
} from './io-worker-protocol.js';

/** The native addon's surface (engine/native/src/branchsan_native.c). */
interface Native {
  fallocate(fd: number, mode: number, offset: number, length: number): void;
  blkdiscard(fd: number, offset: number, length: number): void;
  blkzeroout(fd: number, offset: number, length: number): void;
  addressMod(view: Uint8Array, n: number): number;
  /** Older builds lack it; then the thread sleeps in Atomics.wait. */
  futexWait?(view: Int32Array, index: number, expected: number, timeoutMs: number): number;
  /** Older builds lack these two; then every read and write goes through the slots. */
  writeAt?(fd: number, address: number, length: number, offset: number): number;
  readAt?(fd: number, address: number, length: number, offset: number): number;
  FALLOC_FL_KEEP_SIZE: number;
  FALLOC_FL_PUNCH_HOLE: number;
  FALLOC_FL_ZERO_RANGE: number;
}

const init = workerData as WorkerInit;
const port = parentPort!;
const rings = ringViews(init.control, init.slots);
const syncFailure = new Int32Array(init.syncFailure);

function loadNative(): { native: Native | null; note: string | null } {
  if (!init.nativePath) {
    return {
      native: null,
      note: 'native addon disabled or not built (node engine/native/build.js)',
    };
  }
  try {
    return { native: createRequire(import.meta.url)(init.nativePath) as Native, note: null };
  } catch (err) {
    return { native: null, note: `native addon not loaded: ${(err as Error).message}` };
  }
}

const { native, note: nativeNote } = loadNative();

/**
 * How the thread sleeps on its doorbell. V8's Atomics.wait and Atomics.notify go through
 * one process-wide mutex and a condition variable per waiter: with the event loop
 * ringing about once per write (128 KiB sequential writes at QD8 through NVMe/TCP), the
 * event loop and this thread met on that mutex and slept on it (perf: lock waits, lock
 * wake-ups and condition signals about 13% of the target's CPU samples). The addon's
 * futexWait sleeps on the doorbell word itself, and futexWake is one system call with no
 * lock. The sleep is cut into FUTEX_WAIT_MS pieces because V8 cannot stop a thread inside
 * a native call: a worker.terminate() takes effect when the piece ends.
 */
const futexWait = init.futex ? (native?.futexWait?.bind(native) ?? null) : null;
const FUTEX_WAIT_MS = 100;

function sleepOnDoorbell(ctrl: Int32Array, bell: number): void {
  if (futexWait) futexWait(ctrl, Ctrl.doorbell, bell, FUTEX_WAIT_MS);
  else Atomics.wait(ctrl, Ctrl.doorbell, bell);
}

/**
 * Where slot 0 starts in the slab. O_DIRECT needs memory aligned to the logical
 * block size (we use 4 KiB); a SharedArrayBuffer is only 16-byte aligned.
 */
function findSlabBase(): number {
  if (!init.direct) return 0;
  if (native) return (4096 - native.addressMod(new Uint8Array(init.slab), 4096)) % 4096;
  // Without the addon we cannot see addresses: try each 16-byte step until an
  // O_DIRECT read of the first 8 KiB is not refused with EINVAL. The read must
  // cross a page boundary: the kernel also wants every page-sized piece of the
  // buffer to be a multiple of the block size, which one short read never tests.
  const len = Math.min(8192, init.sizeBytes);
  for (let base = 0; base < 4096; base += 16) {
    try {
      fs.readSync(init.fd, new Uint8Array(init.slab, base, len), 0, len, 0);
      return base;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
    }
  }
  throw new Error(`no O_DIRECT-aligned buffer position found for ${init.path}`);
}

/** Probes whether freeing space works here (file system or device may refuse). */
function probeDeallocate(): boolean {
  if (!native) return false;
  if (init.kind === 'block') return true; // the main thread checked discard_max_bytes
  try {
    // Punching past EOF with KEEP_SIZE changes nothing but fails if unsupported.
    const mode = native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE;
    native.fallocate(init.fd, mode, init.sizeBytes, init.blockSize);
    return true;
  } catch {
    return false;
  }
}

let slabBase: number;
try {
  slabBase = findSlabBase();
} catch (err) {
  const failed: WorkerFailed = { type: 'failed', message: (err as Error).message };
  port.postMessage(failed);
  process.exit(0);
}
const slots: Buffer[] = [];
for (let t = 0; t < init.slots; t++) {
  slots.push(Buffer.from(init.slab, slabBase + t * init.slotSize, init.slotSize));
}
const canDeallocate = probeDeallocate();
/** Cleared after the first EOPNOTSUPP, so we stop asking (tmpfs has no ZERO_RANGE). */
let zeroRangeWorks = native !== null && init.kind === 'file';

/**
 * The addon's readAt/writeAt, when pieces may carry addresses (WorkerReady.pointerIo):
 * a write then goes to the file straight from the caller's buffer, and a read lands in
 * it, instead of through a copy in the tag's slot on the main thread (V8 copies into
 * shared memory with relaxed atomic moves: about 4 µs per 128 KiB here against 1 µs for
 * a memmove). The main thread keeps the buffer alive until the piece completes (its Job
 * holds it), so the memory is the caller's for the whole system call.
 */
const pointerIo =
  native?.writeAt && native.readAt && !init.direct
    ? { writeAt: native.writeAt.bind(native), readAt: native.readAt.bind(native) }
    : null;

function readAt(address: number, length: number, offset: number): number {
  let done = 0;
  while (done < length) {
    const n = pointerIo!.readAt(init.fd, address + done, length - done, offset + done);
    if (n === 0) return Status.shortRead;
    done += n;
  }
  return Status.ok;
}

function writeAt(fd: number, address: number, length: number, offset: number): void {
  let done = 0;
  while (done < length) {
    // A short write means the next call reports why (ENOSPC, EIO); loop to get it.
    done += pointerIo!.writeAt(fd, address + done, length - done, offset + done);
  }
}

function readInto(buf: Buffer, length: number, offset: number): number {
  let done = 0;
  while (done < length) {
    const n = fs.readSync(init.fd, buf, done, length - done, offset + done);
    if (n === 0) return Status.shortRead;
    done += n;
  }
  return Status.ok;
}

function writeFrom(fd: number, buf: Buffer, length: number, offset: number): void {
  let done = 0;
  while (done < length) {
    // A short write means the next call reports why (ENOSPC, EIO); loop to get it.
    done += fs.writeSync(fd, buf, done, length - done, offset + done);
  }
}

/** Zeroes by writing the tag's own slot: the slowest way, but always available. */
function writeZeroBlocks(tag: number, offset: number, length: number): void {
  const buf = slots[tag]!;
  buf.fill(0);
  for (let pos = 0; pos < length; pos += buf.length) {
    writeFrom(init.fd, buf, Math.min(buf.length, length - pos), offset + pos);
  }
}

function zeroRange(tag: number, offset: number, length: number): void {
  if (native && init.kind === 'block') return native.blkzeroout(init.fd, offset, length);
  if (native && zeroRangeWorks) {
    try {
      return native.fallocate(
        init.fd,
        native.FALLOC_FL_ZERO_RANGE | native.FALLOC_FL_KEEP_SIZE,
        offset,
        length,
      );
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EOPNOTSUPP') throw err;
      zeroRangeWorks = false;
    }
  }
  if (native && canDeallocate) {
    native.fallocate(
      init.fd,
      native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE,
      offset,
      length,
    );
    // Re-reserve the blocks: Write Zeroes without deallocate should not turn into
    // a later ENOSPC. Best effort: the range already reads as zeroes.
    try {
      native.fallocate(init.fd, native.FALLOC_FL_KEEP_SIZE, offset, length);
    } catch {
      /* thin file on a full or non-allocating file system: still zeroes */
    }
    return;
  }
  writeZeroBlocks(tag, offset, length);
}

function deallocate(tag: number, offset: number, length: number): void {
  if (!native || !canDeallocate) return writeZeroBlocks(tag, offset, length);
  if (init.kind === 'block') return native.blkdiscard(init.fd, offset, length);
  native.fallocate(
    init.fd,
    native.FALLOC_FL_PUNCH_HOLE | native.FALLOC_FL_KEEP_SIZE,
    offset,
    length,
  );
}

/** Ops whose completion promises durability. */
function isDurable(op: number): boolean {
  return op === Op.writeFua || op === Op.flush || op === Op.writeZeroesFua;
}

/**
 * Runs one descriptor; returns its status. With `deferSync` a durable op skips
 * its own sync: the caller runs one fdatasync for the whole batch (group commit).
 */
function execute(tag: number, deferSync = false): number {
  const { desc32, desc64 } = rings;
  const op = desc32[tag * 2];
  const offset = desc64[tag * DESC64]!;
  const length = desc64[tag * DESC64 + 1]!;
  const address = desc64[tag * DESC64 + 2]!;
  try {
    switch (op) {
      case Op.read:
        if (address !== 0) return readAt(address, length, offset);
        return readInto(slots[tag]!, length, offset);
      case Op.write:
        if (address !== 0) writeAt(init.fd, address, length, offset);
        else writeFrom(init.fd, slots[tag]!, length, offset);
        return Status.ok;
      case Op.writeFua: {
        // Alone, one pwrite on the O_DSYNC fd syncs just this range: one syscall.
        const fd = deferSync ? init.fd : own.fdSync;
        if (address !== 0) writeAt(fd, address, length, offset);
        else writeFrom(fd, slots[tag]!, length, offset);
        return Status.ok;
      }
      case Op.flush:
        return deferSync ? Status.ok : flushStatus(datasync());
      case Op.writeZeroes:
      case Op.writeZeroesFua:
        zeroRange(tag, offset, length);
        return op === Op.writeZeroesFua && !deferSync ? datasync() : Status.ok;
      case Op.deallocate:
        deallocate(tag, offset, length);
        return Status.ok;
      default:
        throw new Error(`unknown op ${op}`);
    }
  } catch (err) {
    const errno = (err as NodeJS.ErrnoException).errno;
    if (typeof errno === 'number' && errno !== 0) return Math.abs(errno);
    console.error(`storage I/O thread for ${init.path}:`, err);
    return Status.internal;
  }
}

/**
 * Polls the submission tail for up to spinMicros. At QD1 the next request
 * usually arrives within a few tens of µs of the last completion; catching it
 * here saves the futex wake-up (an inter-processor interrupt in a VM).
 */
function spin(head: number): number {
  const { ctrl } = rings;
  const until = performance.now() + init.spinMicros / 1000;
  for (;;) {
    for (let i = 0; i < 64; i++) {
      const tail = Atomics.load(ctrl, Ctrl.sqTail);
      if (tail !== head) return tail;
    }
    if (performance.now() >= until || Atomics.load(ctrl, Ctrl.stop) === 1) return head;
  }
}

/** The loop: take tags until the ring is empty, then sleep on the tail. */
function serve(): void {
  const { ctrl, sq, desc32, mask } = rings;
  let head = Atomics.load(ctrl, Ctrl.sqHead);
  let cqTail = Atomics.load(ctrl, Ctrl.cqTail);
  for (;;) {
    let tail = Atomics.load(ctrl, Ctrl.sqTail);
    if (head === tail && init.spinMicros > 0) tail = spin(head);
    if (head === tail) {
      // Read the bell first, then announce sleep and look once more; main rings
      // only when it sees workerIdle, and any ring after the read ends the wait.
      const bell = Atomics.load(ctrl, Ctrl.doorbell);
      Atomics.store(ctrl, Ctrl.workerIdle, 1);
      tail = Atomics.load(ctrl, Ctrl.sqTail);
      if (Atomics.load(ctrl, Ctrl.stop) === 1 && head === tail) return;
      if (head === tail) sleepOnDoorbell(ctrl, bell);
      Atomics.store(ctrl, Ctrl.workerIdle, 0);
      continue;
    }
    // Everything submitted so far is one batch. Two or more durable ops in it
    // share one fdatasync (at QD32 on ext4: 5k -> 20k+ FUA writes/s).
    batch.length = 0;
    let durable = 0;
    while (head !== tail) {
      const tag = sq[head & mask]!;
      head = (head + 1) | 0;
      batch.push(tag);
      if (isDurable(desc32[tag * 2]!)) durable++;
    }
    Atomics.store(ctrl, Ctrl.sqHead, head);
    const group = durable > 1;
    synced.length = 0;
    for (const tag of batch) {
      // The main thread may have dropped it meanwhile (its owner is gone): then it never runs.
      const claimed = Atomics.compareExchange(desc32, tag * 2 + 1, Status.queued, Status.running);
      if (claimed !== Status.queued) {
        cqTail = complete(tag, Status.dropped, cqTail);
        continue;
      }
      const defer = group && isDurable(desc32[tag * 2]!);
      const status = execute(tag, defer);
      if (defer && status === Status.ok) synced.push(tag);
      else cqTail = complete(tag, status, cqTail);
    }
    if (synced.length > 0) {
      const status = datasync();
      for (const tag of synced) {
        const flushed = desc32[tag * 2] === Op.flush ? flushStatus(status) : status;
        cqTail = complete(tag, flushed, cqTail);
      }
    }
  }
}

const batch: number[] = [];
const synced: number[] = [];

/**
 * This thread's own open file descriptions of the target, for all that syncs: fdatasync,
 * and a lone FUA write through the O_DSYNC one. Linux reports a write-back error once
 * per open file description (errseq): two threads syncing through one description let
 * the second see success for data the first was just told is lost (seen: flushes and
 * FUA writes acknowledged over a failed write-back). Each description opened here is
 * told of every write-back error after its opening. Through /proc/self/fd: the same
 * inode whatever became of the path, and no second exclusive claim on a block device.
 * A thread that dies never reaches the closes at the end of this file: Node closes
 * what a worker opened with fs.open when it exits (Worker's trackUnmanagedFds, on by
 * default; file.test.ts counts them).
 */
const own = ownSyncFds();
function ownSyncFds(): { fd: number; fdSync: number } {
  if (init.readOnly) return { fd: init.fd, fdSync: init.fd }; // nothing to make durable
  const { O_RDWR, O_DSYNC, O_DIRECT } = fs.constants;
  const flags = O_RDWR | (init.direct ? O_DIRECT : 0);
  const at = `/proc/self/fd/${init.fd}`;
  return { fd: fs.openSync(at, flags), fdSync: fs.openSync(at, flags | O_DSYNC) };
}

/**
 * fdatasync of the plain fd. Its first failure is kept for every thread: Linux
 * reports a write-back error once per open file (errseq) and then forgets it,
 * although the data it lost stays lost. Whichever command's sync happens to see
 * it (a flush, or a FUA write or Write Zeroes sharing or owning the sync) fails;
 * flushStatus() fails every flush after it.
 */
function datasync(): number {
  try {
    fs.fdatasyncSync(own.fd);
    return Status.ok;
  } catch (err) {
    const errno = Math.abs((err as NodeJS.ErrnoException).errno ?? 0);
    if (errno === 0) return Status.internal;
    Atomics.compareExchange(syncFailure, 0, 0, errno);
    return errno;
  }
}

/** A flush whose own sync passed still fails once any sync of this target has failed. */
function flushStatus(status: number): number {
  return status === Status.ok && Atomics.load(syncFailure, 0) !== 0 ? Status.writebackLost : status;
}

/** Publishes one completion; returns the new completion tail. */
function complete(tag: number, status: number, cqTail: number): number {
  const { ctrl, cq, desc32, mask } = rings;
  desc32[tag * 2 + 1] = status;
  cq[cqTail & mask] = tag;
  const next = (cqTail + 1) | 0;
  Atomics.store(ctrl, Ctrl.cqTail, next);
  // One message wakes the main thread; until it drains, later completions ride along.
  if (Atomics.compareExchange(ctrl, Ctrl.mainPending, 0, 1) === 0) port.postMessage(0);
  return next;
}

const ready: WorkerReady = {
  type: 'ready',
  slabBase,
  native: native !== null,
  nativeNote,
  futex: futexWait !== null,
  pointerIo: pointerIo !== null,
  canDeallocate,
  canWriteZeroes: native !== null && (init.kind === 'block' || zeroRangeWorks || canDeallocate),
};
port.postMessage(ready);
serve();
if (own.fd !== init.fd) {
  // Linux releases a descriptor even when close() fails, which it does on a mount whose
  // server is gone (ENOTCONN from a dead FUSE daemon). Nothing is lost by not telling:
  // durability is promised only by flushes, whose fdatasync reports a lost write-back,
  // and the main thread closes its own descriptor the same way.
  for (const fd of [own.fd, own.fdSync]) {
    try {
      fs.closeSync(fd);
    } catch {
      // released all the same
    }
  }
}
