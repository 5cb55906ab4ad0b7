/**
 * NvmeNamespace: block I/O on one namespace of one controller, with promises, in logical
 * blocks of the namespace's format (the I/O methods are NamespaceIo's).
 */
import type { NamespaceIdentity, NamespaceIds } from './admin.js';
import { NamespaceIo } from './namespace-io.js';
import type { NvmeRequest } from './request.js';

/** What a namespace needs from its controller (NvmeController implements it). */
export interface IoController {
  submitIo(req: NvmeRequest, queue?: number): void;
  io(req: NvmeRequest, what: string, queue?: number): Promise<NvmeRequest>;
  readonly maxTransferBytes: number;
}

export type { IoOptions, ReadOptions, WriteOptions } from './namespace-io.js';

export class NvmeNamespace extends NamespaceIo {
  readonly nsid: number;
  readonly blockSize: number;
  /** Size in blocks. */
  readonly nsze: number;

  constructor(
    private readonly ctrl: IoController,
    readonly identity: NamespaceIdentity,
    readonly ids: NamespaceIds,
  ) {
    super();
    this.nsid = identity.nsid;
    this.blockSize = identity.blockSize;
    this.nsze = identity.nsze;
  }

  /** Size in bytes. */
  get sizeBytes(): number {
    return this.nsze * this.blockSize;
  }

  protected transferLimit(): number {
    return this.ctrl.maxTransferBytes;
  }

  protected submit(req: NvmeRequest, what: string, _mutating: boolean, queue?: number) {
    return this.ctrl.io(req, what, queue);
  }
}
