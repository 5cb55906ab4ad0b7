/**
 * NvmeNamespace: block I/O on one namespace with promises, in logical blocks of the
 * namespace's format. Each call is one NVMe command (no splitting): a transfer larger
 * than the controller's limit (MDTS, 65536 blocks) is refused with a RangeError so
 * callers see their own mistake rather than a silent split into non-atomic pieces.
 */
import { IO } from '../protocol/opcodes.js';
import type { NamespaceIdentity, NamespaceIds } from './admin.js';
import { fillDeallocate, fillFlush, fillRw, fillWriteZeroes, type DsmRange } from './commands.js';
import { NvmeRequest } from './request.js';

/** What a namespace needs from its controller (NvmeController implements it). */
export interface IoController {
  submitIo(req: NvmeRequest, queue?: number): void;
  io(req: NvmeRequest, what: string, queue?: number): Promise<NvmeRequest>;
  readonly maxTransferBytes: number;
}

export interface IoOptions {
  /** I/O queue index; default round robin. */
  readonly queue?: number;
}

export interface WriteOptions extends IoOptions {
  /** Force Unit Access: durable on the media before completion. */
  readonly fua?: boolean;
}

export interface ReadOptions extends IoOptions {
  /** Destination (length = nlb * blockSize); default a view or a new Buffer. */
  readonly into?: Buffer;
}

export class NvmeNamespace {
  readonly nsid: number;
  readonly blockSize: number;
  /** Size in blocks. */
  readonly nsze: number;

  constructor(
    private readonly ctrl: IoController,
    readonly identity: NamespaceIdentity,
    readonly ids: NamespaceIds,
  ) {
    this.nsid = identity.nsid;
    this.blockSize = identity.blockSize;
    this.nsze = identity.nsze;
  }

  /** Size in bytes. */
  get sizeBytes(): number {
    return this.nsze * this.blockSize;
  }

  /** Blocks in `bytes`, which must be whole blocks within the transfer limit. */
  blocks(bytes: number): number {
    if (bytes <= 0 || bytes % this.blockSize !== 0) {
      throw new RangeError(`${bytes} bytes is not a whole number of ${this.blockSize}-byte blocks`);
    }
    const max = this.ctrl.maxTransferBytes;
    if (max > 0 && bytes > max) {
      throw new RangeError(`${bytes} bytes exceeds the ${max}-byte transfer limit`);
    }
    return bytes / this.blockSize;
  }

  /** Read `nlb` blocks at `slba`. See NvmeRequest.data for what the Buffer is. */
  async read(slba: number, nlb: number, opts: ReadOptions = {}): Promise<Buffer> {
    const req = fillRw(new NvmeRequest(), IO.READ, this.nsid, slba, nlb);
    req.readLength = nlb * this.blockSize;
    this.blocks(req.readLength);
    if (opts.into) {
      if (opts.into.length < req.readLength) throw new RangeError('read buffer too small');
      req.into =
        opts.into.length === req.readLength ? opts.into : opts.into.subarray(0, req.readLength);
    }
    return (await this.ctrl.io(req, 'read', opts.queue)).data!;
  }

  /** Write whole blocks at `slba`. `data` must stay unchanged until this settles. */
  async write(slba: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    const req = fillRw(
      new NvmeRequest(),
      IO.WRITE,
      this.nsid,
      slba,
      this.blocks(data.length),
      opts.fua,
    );
    req.dataOut = data;
    await this.ctrl.io(req, 'write', opts.queue);
  }

  /** Compare: rejects with NvmeStatusError COMPARE_FAILED on a mismatch. */
  async compare(slba: number, data: Buffer, opts: IoOptions = {}): Promise<void> {
    const req = fillRw(new NvmeRequest(), IO.COMPARE, this.nsid, slba, this.blocks(data.length));
    req.dataOut = data;
    await this.ctrl.io(req, 'compare', opts.queue);
  }

  async flush(opts: IoOptions = {}): Promise<void> {
    await this.ctrl.io(fillFlush(new NvmeRequest(), this.nsid), 'flush', opts.queue);
  }

  async writeZeroes(
    slba: number,
    nlb: number,
    opts: WriteOptions & { deallocate?: boolean } = {},
  ): Promise<void> {
    const flags = { deac: opts.deallocate ?? false, fua: opts.fua ?? false };
    const req = fillWriteZeroes(new NvmeRequest(), this.nsid, slba, nlb, flags);
    await this.ctrl.io(req, 'write zeroes', opts.queue);
  }

  /** Dataset Management, Deallocate (TRIM) of up to 256 ranges. */
  async deallocate(ranges: readonly DsmRange[], opts: IoOptions = {}): Promise<void> {
    const req = fillDeallocate(new NvmeRequest(), this.nsid, ranges);
    await this.ctrl.io(req, 'deallocate', opts.queue);
  }
}
