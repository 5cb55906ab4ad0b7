/**
 * The one place that turns a volume's stored backend spec into a BlockBackend.
 * The service layer calls this; the core only ever sees the BlockBackend.
 */
import type { BlockBackend } from './backend.js';
import { openBlockBackend } from './block.js';
import { openFileBackend, type IoOptions } from './file.js';
import { MemoryBackend } from './memory.js';

export type BackendSpec =
  | {
      kind: 'file';
      path: string;
      /** Required with create; checked against the file when opening. */
      sizeBytes?: number;
      /** Create a new sparse file (fails if it exists) instead of opening one. */
      create?: boolean;
      blockSize?: 512 | 4096;
      readOnly?: boolean;
      /** See FileBackendOptions.exclusive (default true). */
      exclusive?: boolean;
      io?: IoOptions;
    }
  | { kind: 'block'; path: string; direct?: boolean; readOnly?: boolean; io?: IoOptions }
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
