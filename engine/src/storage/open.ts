/**
 * The one place that turns a volume's stored backend spec into a BlockBackend.
 * The service layer calls this; the core only ever sees the BlockBackend.
 */
import type { BlockBackend } from './backend.js';
import { openBlockBackend, type BlockBackendOptions } from './block.js';
import { openFileBackend, type FileBackendOptions } from './file.js';
import { MemoryBackend } from './memory.js';

export type BackendSpec =
  | ({ kind: 'file' } & FileBackendOptions)
  | ({ kind: 'block' } & BlockBackendOptions)
  | { kind: 'memory'; sizeBytes: number; blockSize?: 512 | 4096; label?: string };

/** Opens (or creates) the backend a spec describes; rejects with a BackendError. */
export async function openBackend(spec: BackendSpec): Promise<BlockBackend> {
  switch (spec.kind) {
    case 'file':
      return openFileBackend(spec);
    case 'block':
      return openBlockBackend(spec);
    case 'memory':
      return new MemoryBackend(spec);
  }
}
