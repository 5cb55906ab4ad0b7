/**
 * The block backend seam. The core sees only this file; concrete backends (file,
 * block device, memory, and later the mirror decorator) implement it.
 *
 * Data-path calls take callbacks, not promises: one closure per I/O is the budget.
 * Buffers passed to write() are owned by the caller and stay valid only until the
 * callback runs; a backend that needs them later copies them. Buffers handed to a
 * read callback belong to the caller from then on. A reader may offer the buffer the
 * data should land in (`into`); the callback then hands back that very buffer, so a
 * transport can frame the data in place and send it without another copy.
 */

/** What a backend can do; the core advertises only what the backend declares. */
export interface BackendCapabilities {
  /** flush() makes earlier completed writes durable (fdatasync or equivalent). */
  readonly flush: boolean;
  /** write(..., fua=true) completes only once the data is durable. */
  readonly fua: boolean;
  /** writeZeroes() is cheaper than writing a zero buffer. */
  readonly writeZeroes: boolean;
  /** deallocate() frees space (punch hole / discard). */
  readonly deallocate: boolean;
  /** A deallocated range reads back as zeroes. */
  readonly readZeroesAfterDeallocate: boolean;
  /** A volatile write cache sits between write() and media (so hosts should Flush). */
  readonly volatileWriteCache: boolean;
}

/** Why an I/O failed; the core maps it to an NVMe status. */
export type BackendErrorKind =
  | 'out-of-range' // offset/length beyond the device
  | 'no-space' // the backing store is full (ENOSPC, EDQUOT)
  | 'read-only' // EROFS, EPERM on write
  | 'io' // EIO and anything else the medium reports
  | 'unavailable' // the backend is closed, fenced or not ready
  | 'unsupported'; // an operation the capabilities did not declare

export class BackendError extends Error {
  constructor(
    readonly kind: BackendErrorKind,
    message: string,
    readonly errno?: string,
  ) {
    super(message);
    this.name = 'BackendError';
  }
}

/**
 * Who issued a call that changes data: the core passes the host's queue. Once it is
 * closed, its host counts the command as in doubt and, after its fence, resends it on
 * another path; the call must then not start here any more, or it could land after
 * the resent write (see abandon()).
 */
export interface IoOwner {
  readonly isClosed: boolean;
}

/**
 * Counts since open of how a threaded backend ran its I/O: on the event loop instead of
 * a thread (reads the page cache held, and the reads tried so that were not cached and
 * went to a thread; lone writes to a RAM file), and lone I/Os on a thread whose
 * completion the event loop polled for (caught in the poll, or missed: it ran out).
 */
export interface BackendPathCounts {
  readonly inlineReads: number;
  readonly inlineReadsMissed: number;
  readonly inlineWrites: number;
  readonly pollsCaught: number;
  readonly pollsMissed: number;
}

export type IoCallback = (err: BackendError | null) => void;
export type ReadCallback = (err: BackendError | null, data?: Buffer) => void;

export interface BlockBackend {
  /** Short kind for logs and the UI: 'file', 'block', 'memory', 'mirror'. */
  readonly kind: string;
  /** Where the data lives (path, device, or a label). */
  readonly location: string;
  /** Logical block size in bytes: 512 or 4096. */
  readonly blockSize: number;
  /** Capacity in bytes; a multiple of blockSize. */
  readonly sizeBytes: number;
  readonly caps: BackendCapabilities;
  /**
   * Read length bytes at offset (both multiples of blockSize), into `into` when given
   * (exactly length bytes; the callback's data is then `into` itself).
   */
  read(offset: number, length: number, cb: ReadCallback, into?: Buffer): void;
  /** Write data at offset; with fua the callback waits for durability. */
  write(offset: number, data: Buffer, fua: boolean, cb: IoCallback, owner?: IoOwner): void;
  /** Make every write completed before this call durable. */
  flush(cb: IoCallback): void;
  /** Zero a range (fua as for write). */
  writeZeroes(offset: number, length: number, fua: boolean, cb: IoCallback, owner?: IoOwner): void;
  /** Free a range; reads may return zeroes afterwards if caps say so. */
  deallocate(offset: number, length: number, cb: IoCallback, owner?: IoOwner): void;
  /**
   * `owner` closed: calls it made that have not started never start; each completes
   * with an 'unavailable' error (perhaps only once a stalled device lets the call
   * before it finish). Calls already started finish. A backend that queues nothing
   * (every call starts at once) needs no such method.
   */
  abandon?(owner: IoOwner): void;
  /**
   * false while every call fails 'unavailable' until the backend recovers by itself
   * (its I/O threads being replaced): the core then reports the namespace's ANA group
   * in change, so hosts hold their I/O instead of resending it at once. Absent: true.
   */
  readonly available?: boolean;
  /**
   * true from close() on, or from when the backend found its storage gone (a removed
   * disk: file.ts, StorageGone): every later call fails 'unavailable' for good. The core then
   * reports the namespace's ANA group inaccessible, so hosts go to another path or wait,
   * instead of resending at once what an ANA Transition under a usable state refuses.
   * Absent: false.
   */
  readonly closed?: boolean;
  /** How its I/O went, for the metrics (a backend with threads; absent: not counted). */
  pathCounts?(): BackendPathCounts;
  /** Calls `listener` after each change of `available` or `closed`; returns what stops it. */
  watchAvailable?(listener: () => void): () => void;
  /** Finish in-flight I/O, then release files and threads. Idempotent. */
  close(): Promise<void>;
}

/** Calls a data-path callback on a later microtask: never synchronously from the call. */
export function defer<T>(
  cb: (err: BackendError | null, v?: T) => void,
  err: BackendError | null,
  v?: T,
): void {
  queueMicrotask(() => cb(err, v));
}
