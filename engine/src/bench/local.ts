/** The local baseline: the target's own backend driven directly, same loop, same pattern. */
import type { BlockBackend } from '../storage/backend.js';
import { openBackend } from '../storage/open.js';
import type { Submit } from './patterns.js';

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

export function backendSubmit(backend: BlockBackend): Submit {
  const payloads = new Map<number, Buffer>();
  return (write, offset, len, _queue, done) => {
    if (write) {
      let data = payloads.get(len);
      if (!data) payloads.set(len, (data = Buffer.alloc(len, 0xa5)));
      backend.write(offset, data, false, done);
    } else {
      backend.read(offset, len, (err) => done(err));
    }
  };
}
