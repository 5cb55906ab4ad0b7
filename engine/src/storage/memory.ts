/**
 * A RAM backend for tests and the lab. Sparse: untouched blocks read as zeroes and
 * cost nothing, so a large namespace is cheap until written.
 */
import {
  BackendError,
  type BackendCapabilities,
  type BlockBackend,
  type IoCallback,
  type ReadCallback,
  defer,
} from './backend.js';

const CHUNK = 1 << 20; // allocation granule

export interface MemoryBackendOptions {
  sizeBytes: number;
  blockSize?: 512 | 4096;
  label?: string;
}

export class MemoryBackend implements BlockBackend {
  readonly kind = 'memory';
  readonly location: string;
  readonly blockSize: number;
  readonly sizeBytes: number;
  readonly caps: BackendCapabilities = {
    flush: true,
    fua: true,
    writeZeroes: true,
    deallocate: true,
    readZeroesAfterDeallocate: true,
    volatileWriteCache: false,
  };
  private readonly chunks = new Map<number, Buffer>();
  private isClosed = false;
  /** BlockBackend.watchAvailable's listeners. */
  private readonly availability = new Set<() => void>();

  constructor(opts: MemoryBackendOptions) {
    this.blockSize = opts.blockSize ?? 512;
    if (opts.sizeBytes <= 0 || opts.sizeBytes % this.blockSize !== 0) {
      throw new BackendError(
        'out-of-range',
        `size ${opts.sizeBytes} is not a positive multiple of ${this.blockSize}`,
      );
    }
    this.sizeBytes = opts.sizeBytes;
    this.location = opts.label ?? 'memory';
  }

  read(offset: number, length: number, cb: ReadCallback, into?: Buffer): void {
    const err = this.check(offset, length);
    if (err) return defer(cb, err);
    const out = into ? into.fill(0) : Buffer.alloc(length); // holes read as zeroes
    this.walk(offset, length, (chunk, at, pos, n) => {
      if (chunk) chunk.copy(out, pos, at, at + n);
    });
    defer(cb, null, out);
  }

  write(offset: number, data: Buffer, _fua: boolean, cb: IoCallback): void {
    const err = this.check(offset, data.length);
    if (err) return defer(cb, err);
    this.walk(offset, data.length, (_c, at, pos, n, index) => {
      data.copy(this.chunkFor(index), at, pos, pos + n);
    });
    defer(cb, null);
  }

  flush(cb: IoCallback): void {
    defer(cb, this.isClosed ? closedError() : null);
  }

  writeZeroes(offset: number, length: number, _fua: boolean, cb: IoCallback): void {
    this.deallocate(offset, length, cb);
  }

  deallocate(offset: number, length: number, cb: IoCallback): void {
    const err = this.check(offset, length);
    if (err) return defer(cb, err);
    this.walk(offset, length, (chunk, at, _pos, n, index) => {
      if (!chunk) return;
      if (n === CHUNK) this.chunks.delete(index);
      else chunk.fill(0, at, at + n);
    });
    defer(cb, null);
  }

  /** BlockBackend.closed: close() was called. */
  get closed(): boolean {
    return this.isClosed;
  }

  watchAvailable(listener: () => void): () => void {
    this.availability.add(listener);
    return () => this.availability.delete(listener);
  }

  async close(): Promise<void> {
    if (this.isClosed) return;
    this.isClosed = true;
    this.chunks.clear();
    for (const listener of [...this.availability]) {
      try {
        listener();
      } catch {
        // the listener's own business: the close goes on
      }
    }
  }

  private check(offset: number, length: number): BackendError | null {
    if (this.isClosed) return closedError();
    if (offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      return new BackendError(
        'out-of-range',
        `range ${offset}+${length} is beyond ${this.sizeBytes} bytes`,
      );
    }
    return null;
  }

  private chunkFor(index: number): Buffer {
    let c = this.chunks.get(index);
    if (!c) {
      c = Buffer.alloc(CHUNK);
      this.chunks.set(index, c);
    }
    return c;
  }

  /** Calls fn for each chunk piece of [offset, offset+length). */
  private walk(
    offset: number,
    length: number,
    fn: (chunk: Buffer | undefined, at: number, pos: number, n: number, index: number) => void,
  ): void {
    let pos = 0;
    while (pos < length) {
      const abs = offset + pos;
      const index = Math.floor(abs / CHUNK);
      const at = abs - index * CHUNK;
      const n = Math.min(CHUNK - at, length - pos);
      fn(this.chunks.get(index), at, pos, n, index);
      pos += n;
    }
  }
}

function closedError(): BackendError {
  return new BackendError('unavailable', 'the memory backend is closed');
}
