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
