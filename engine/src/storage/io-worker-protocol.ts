/**
 * The shared-memory contract between the main thread (io-worker-pool.ts) and one
 * storage I/O thread (io-worker.ts). Both sides import only this file from each other.
 *
 * Shape (like a tiny io_uring): each worker owns `slots` tags. A tag names one
 * descriptor (op, offset, length, address, status) and one data slot in a shared slab.
 * A read or write whose descriptor carries an address moves its bytes straight
 * between the file and the caller's buffer (WorkerReady.pointerIo); with address 0 it
 * goes through the tag's slot. The
 * main thread fills a descriptor, pushes the tag on the submission ring and wakes
 * the worker only if it sleeps; the worker runs the syscall, pushes the tag on the
 * completion ring and posts one message only if the main thread is not already
 * due to drain. Neither ring can overflow: a ring holds at most `slots` tags.
 */

/** Operations a descriptor can carry. */
export const Op = {
  read: 1,
  write: 2,
  writeFua: 3,
  flush: 4,
  writeZeroes: 5,
  writeZeroesFua: 6,
  deallocate: 7,
} as const;
export type OpCode = (typeof Op)[keyof typeof Op];

/** Descriptor status: 0 ok, > 0 an errno number, < 0 one of these. */
export const Status = {
  ok: 0,
  /** End of file before the requested range ended (the file shrank under us). */
  shortRead: -1,
  /** A non-errno exception inside the worker (a bug); message goes to stderr. */
  internal: -2,
  /** The worker thread died; set by the main thread, never by a worker. */
  workerLost: -3,
  /**
   * A flush after an fdatasync of this target failed (WorkerInit.syncFailure): writes
   * acknowledged before that failure may not be on the medium, and the kernel reports
   * a write-back error to each open file only once, so every later flush says so.
   */
  writebackLost: -4,
  /**
   * Set by the main thread when it issues a descriptor: submitted, not yet started.
   * The worker claims it (queued -> running) right before the syscall; the main thread
   * may instead drop it (queued -> dropped) when its owner is gone. One
   * compare-and-exchange decides, so a descriptor either runs whole or not at all.
   */
  queued: -5,
  running: -6,
  /** Never started: its owner (a closed host queue) abandoned it while it was queued. */
  dropped: -7,
} as const;

/** Int32 indices in the control block. */
export const Ctrl = {
  sqTail: 0, // written by main: tags submitted so far
  sqHead: 1, // written by worker: tags taken so far
  cqTail: 2, // written by worker: tags completed so far
  cqHead: 3, // written by main: completions consumed so far
  workerIdle: 4, // 1 while the worker is (about to be) asleep on the doorbell
  mainPending: 5, // 1 while a wake-up message to main is in flight or not yet drained
  stop: 6, // set by main at close: the worker exits when its ring is empty
  // The one word the worker sleeps on. Main rings it (add + notify) for new work
  // and for stop; the worker reads it before its last look at the ring, so a ring
  // after that look makes wait() return at once: no wake-up can be lost.
  doorbell: 7,
} as const;
const CTRL_INTS = 8;
/** Doubles per tag in RingViews.desc64. */
export const DESC64 = 3;

/** Views over one worker's shared control memory. */
export interface RingViews {
  ctrl: Int32Array;
  sq: Int32Array;
  cq: Int32Array;
  /** Per tag: [op, status]; the status word also carries queued/running/dropped. */
  desc32: Int32Array;
  /**
   * Per tag: [offset, length, address] (doubles: exact up to 2^53). address: where the
   * piece's bytes are in the main thread's memory (the addon's addressOf, plus the
   * piece's position), or 0: in the tag's slot.
   */
  desc64: Float64Array;
  mask: number;
}

export function ringSize(slots: number): number {
  let n = 1;
  while (n < slots) n <<= 1;
  return n;
}

/** Bytes of the shared control buffer for a worker with `slots` tags. */
export function controlBytes(slots: number): number {
  const ints = CTRL_INTS + 2 * ringSize(slots) + 2 * slots;
  return Math.ceil((ints * 4) / 8) * 8 + slots * DESC64 * 8;
}

export function ringViews(sab: SharedArrayBuffer, slots: number): RingViews {
  const r = ringSize(slots);
  const ints = CTRL_INTS + 2 * r + 2 * slots;
  const f64At = Math.ceil((ints * 4) / 8) * 8;
  return {
    ctrl: new Int32Array(sab, 0, CTRL_INTS),
    sq: new Int32Array(sab, CTRL_INTS * 4, r),
    cq: new Int32Array(sab, (CTRL_INTS + r) * 4, r),
    desc32: new Int32Array(sab, (CTRL_INTS + 2 * r) * 4, 2 * slots),
    desc64: new Float64Array(sab, f64At, DESC64 * slots),
    mask: r - 1,
  };
}

/** What the device under the worker is; decides how zeroing and freeing work. */
export type TargetKind = 'file' | 'block';

/** An opened file or device, as the backend, the pool and each worker see it. */
export interface OpenedTarget {
  kind: TargetKind;
  path: string;
  /** Plain fd for reads and writes. Each I/O thread syncs through open file
   * descriptions of its own (io-worker.ts, ownSyncFds). */
  fd: number;
  readOnly: boolean;
  direct: boolean;
  blockSize: number;
  sizeBytes: number;
}

/** workerData for io-worker.ts. */
export interface WorkerInit extends OpenedTarget {
  slots: number;
  slotSize: number;
  /** Poll this long for more work before sleeping on the doorbell. */
  spinMicros: number;
  /**
   * The main thread rings doorbells with the addon's futexWake: the worker may then
   * sleep in the addon's futexWait (and says so in WorkerReady.futex) instead of in
   * Atomics.wait. Both sides must use the same one: Atomics.notify wakes only threads in
   * Atomics.wait, futexWake only threads in futexWait.
   */
  futex: boolean;
  control: SharedArrayBuffer;
  /** slots * slotSize + 4096 bytes, so the worker can align slot 0 for O_DIRECT. */
  slab: SharedArrayBuffer;
  /** Absolute path of the native addon, or null to run without it. */
  nativePath: string | null;
  /**
   * One Int32 shared by every thread of the target: the errno of the first failed
   * fdatasync, 0 while none has failed (see Status.writebackLost).
   */
  syncFailure: SharedArrayBuffer;
}

/** The one message a worker sends before serving: what it found. */
export interface WorkerReady {
  type: 'ready';
  /** Byte offset of slot 0 inside the slab (aligned to 4 KiB when it matters). */
  slabBase: number;
  native: boolean;
  /** Why the addon is not in use, for the log. */
  nativeNote: string | null;
  /** The thread sleeps in the addon's futexWait: ring it with futexWake (WorkerInit.futex). */
  futex: boolean;
  /**
   * The thread reads and writes at descriptor addresses (the addon's readAt/writeAt);
   * never with O_DIRECT, whose memory must be aligned as the caller's buffers are not.
   */
  pointerIo: boolean;
  /** fallocate(PUNCH_HOLE) or BLKDISCARD works on this target. */
  canDeallocate: boolean;
  /** Zeroing has an offload (fallocate ZERO_RANGE / punch+allocate, BLKZEROOUT). */
  canWriteZeroes: boolean;
}

/** A worker that could not start. */
export interface WorkerFailed {
  type: 'failed';
  message: string;
}

export type WorkerMessage = WorkerReady | WorkerFailed | 0;
