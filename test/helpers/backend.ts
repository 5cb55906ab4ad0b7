/**
 * A backend that passes every call to `b` except those `over` replaces: the shape of
 * the tests' spies, stalls and fault injections around a real backend.
 */
import type { BlockBackend } from '../../engine/src/storage/backend.js';

export function overBackend(b: BlockBackend, over: Partial<BlockBackend> = {}): BlockBackend {
  return {
    kind: b.kind,
    location: b.location,
    blockSize: b.blockSize,
    sizeBytes: b.sizeBytes,
    caps: b.caps,
    read: (o, l, cb, into) => b.read(o, l, cb, into),
    write: (o, d, f, cb, owner) => b.write(o, d, f, cb, owner),
    flush: (cb) => b.flush(cb),
    writeZeroes: (o, l, f, cb, owner) => b.writeZeroes(o, l, f, cb, owner),
    deallocate: (o, l, cb, owner) => b.deallocate(o, l, cb, owner),
    close: () => b.close(),
    ...over,
  };
}
