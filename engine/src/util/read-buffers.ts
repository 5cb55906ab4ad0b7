/**
 * Destinations for read data, carved from larger slabs.
 *
 * Why: Buffer.allocUnsafe pools only sizes below 4 KiB; a 4 KiB read buffer is one
 * malloc plus an external-memory backing store each (measured here ~0.8-1 µs and
 * GC pressure, the largest single allocation cost of a 4 KiB read on the target's
 * event loop). A view of a slab costs ~60 ns.
 *
 * Ownership: a slab is never reused. Each buffer handed out belongs to the caller
 * for as long as it likes (exactly like Buffer.allocUnsafe's pool); the slab is
 * freed by the GC once its last view is dropped. The cost of that rule: holding one
 * small read buffer keeps its whole slab alive, so slabs stay small and large reads
 * get buffers of their own. Contents are uninitialised until the read fills them.
 */
const SLAB_BYTES = 256 * 1024;
/** Larger reads pay one allocation over many bytes; a slab would only be pinned. */
const MAX_PIECE = 32 * 1024;

export class ReadBuffers {
  private slab: Buffer | null = null;
  private used = 0;

  /** An uninitialised buffer of `length` bytes that the caller owns. */
  take(length: number): Buffer {
    if (length > MAX_PIECE) return Buffer.allocUnsafe(length);
    let slab = this.slab;
    if (!slab || this.used + length > slab.length) {
      slab = this.slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
      this.used = 0;
    }
    const start = this.used;
    this.used = (start + length + 7) & ~7; // keep pieces 8-byte aligned for typed views
    return slab.subarray(start, start + length);
  }
}

/**
 * Buffers that come back: a free list per length, bounded in bytes, in front of
 * ReadBuffers. For memory its owner knows nobody uses any more (a read frame whose
 * bytes the socket has taken, a benchmark read that has been counted): the next
 * take() of that length gets it back while its cache lines are still in the CPU's
 * cache, instead of a fresh slab piece that every write has to pull in first.
 *
 * Measured (4 KiB random reads from a RAM-backed file, QD32): a recycled destination
 * cut the local read from 2.15 to 1.8 µs of CPU; a fresh piece costs the page cache's
 * copy into it that much more.
 *
 * give() hands ownership back: the caller must not touch the buffer afterwards, and
 * must give each buffer at most once per take(). What exceeds maxBytes is left to the
 * GC, so a burst of large reads does not stay pinned, and a pool nobody took from for
 * IDLE_RELEASE_MS to twice that lets go of everything it held (an idle connection, or
 * one that closed, pins nothing for long).
 */
export class RecycledBuffers {
  private readonly free = new Map<number, Buffer[]>();
  private held = 0;
  private readonly fresh = new ReadBuffers();
  /** take() ran since the last idle sweep. */
  private used = false;

  constructor(private readonly maxBytes: number) {}

  /** A buffer of `length` bytes the caller owns: a returned one if any, else fresh. */
  take(length: number): Buffer {
    this.used = true;
    const back = this.free.get(length)?.pop();
    if (back) {
      this.held -= length;
      return back;
    }
    return this.fresh.take(length);
  }

  /** Return a buffer taken here (or any of a length worth keeping); see the class note. */
  give(buf: Buffer): void {
    const length = buf.length;
    if (length === 0 || this.held + length > this.maxBytes) return;
    let list = this.free.get(length);
    if (!list) this.free.set(length, (list = []));
    list.push(buf);
    if (this.held === 0) {
      holdingPools.add(this);
      startSweeper();
    }
    this.held += length;
  }

  /** The idle sweep's visit: release everything unless take() ran since the last one. */
  releaseIfIdle(): void {
    if (this.used) {
      this.used = false;
      return;
    }
    this.free.clear();
    this.held = 0;
    holdingPools.delete(this);
  }

  /** Bytes waiting in the free lists. */
  get heldBytes(): number {
    return this.held;
  }
}

/** How often pools holding buffers are checked for idleness (see RecycledBuffers). */
export const IDLE_RELEASE_MS = 30_000;

/** Pools that hold buffers; only these are swept, and only while there are any. */
const holdingPools = new Set<RecycledBuffers>();
let sweeper: NodeJS.Timeout | null = null;

function startSweeper(): void {
  if (sweeper) return;
  sweeper = setInterval(sweepIdleBuffers, IDLE_RELEASE_MS);
  sweeper.unref(); // never what keeps a process alive
}

/** One idle sweep (the timer's job; exported for tests). */
export function sweepIdleBuffers(): void {
  for (const pool of holdingPools) pool.releaseIfIdle();
  if (holdingPools.size === 0 && sweeper) {
    clearInterval(sweeper);
    sweeper = null;
  }
}
