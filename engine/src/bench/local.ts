/** The local baseline: the target's own backend driven directly, same loop, same pattern. */
import type { BlockBackend } from '../storage/backend.js';
import { openBackend } from '../storage/open.js';
import { RecycledBuffers } from '../util/read-buffers.js';
import type { Submit } from './patterns.js';

/** Enough for every pattern's reads in flight (QD8 × 2 queues × 128 KiB is 2 MiB). */
const LOCAL_READ_POOL_BYTES = 4 * 1024 * 1024;

/** Creates (or reuses) the benchmark file at path and fills span bytes so reads hit data, not holes. */
export async function prepareBackingFile(
  path: string,
  sizeBytes: number,
  span: number,
): Promise<void> {
  const backend = await openBackend({
    kind: 'file',
    path,
    sizeBytes,
    create: true,
    blockSize: 512,
  });
  try {
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < chunk.length; i += 8) chunk.writeDoubleLE(Math.random(), i);
    for (let off = 0; off < span; off += chunk.length) {
      await new Promise<void>((resolve, reject) =>
        backend.write(off, chunk, false, (err) => (err ? reject(err) : resolve())),
      );
    }
    await new Promise<void>((resolve, reject) =>
      backend.flush((err) => (err ? reject(err) : resolve())),
    );
  } finally {
    await backend.close();
  }
}

/**
 * Reads land in buffers that come back once counted, one per read in flight, as fio's
 * do: the same reuse the target's frames get (transport/tcp/writer.ts), so neither leg
 * pays for fresh memory the other does not.
 */
export function backendSubmit(backend: BlockBackend): Submit {
  const payloads = new Map<number, Buffer>();
  const reads = new RecycledBuffers(LOCAL_READ_POOL_BYTES);
  return (write, offset, len, _queue, done) => {
    if (write) {
      let data = payloads.get(len);
      if (!data) payloads.set(len, (data = Buffer.alloc(len, 0xa5)));
      backend.write(offset, data, false, done);
    } else {
      const into = reads.take(len);
      backend.read(
        offset,
        len,
        (err) => {
          if (!err) reads.give(into); // after a failure, nothing promises the backend let go
          done(err);
        },
        into,
      );
    }
  };
}
