/**
 * The block I/O API shared by a single-path namespace (NvmeNamespace) and a multipath
 * one (MultipathNamespace): each call builds one NVMe command and hands it to the
 * subclass's submit(), which decides where it goes (one controller, or a path chosen
 * by ANA state with the multipath retry rules). No splitting: a transfer larger than
 * the limit is refused with a RangeError, so callers see their own mistake rather than
 * a silent split into non-atomic pieces.
 */
import { IO } from '../protocol/opcodes.js';
import { fillDeallocate, fillFlush, fillRw, fillWriteZeroes, type DsmRange } from './commands.js';
import { NvmeRequest } from './request.js';

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

export abstract class NamespaceIo {
  abstract readonly nsid: number;
  abstract readonly blockSize: number;

  /** Largest transfer in bytes; 0 when no limit is known. */
  protected abstract transferLimit(): number;

  /**
   * Runs one command. `what` names it in errors; `mutating` says whether it changes data
   * (a multipath namespace never resends an in-doubt mutating command early).
   */
  protected abstract submit(
    req: NvmeRequest,
    what: string,
    mutating: boolean,
    queue?: number,
  ): Promise<NvmeRequest>;

  /** Blocks in `bytes`, which must be whole blocks within the transfer limit. */
  blocks(bytes: number): number {
    if (bytes <= 0 || bytes % this.blockSize !== 0) {
      throw new RangeError(`${bytes} bytes is not a whole number of ${this.blockSize}-byte blocks`);
    }
    const max = this.transferLimit();
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
    return (await this.submit(req, `read slba ${slba} nlb ${nlb}`, false, opts.queue)).data!;
  }

  /** Write whole blocks at `slba`. `data` must stay unchanged until this settles. */
  async write(slba: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    const nlb = this.blocks(data.length);
    const req = fillRw(new NvmeRequest(), IO.WRITE, this.nsid, slba, nlb, opts.fua);
    req.dataOut = data;
    await this.submit(req, `write slba ${slba} nlb ${nlb}`, true, opts.queue);
  }

  /** Compare: rejects with NvmeStatusError COMPARE_FAILED on a mismatch. */
  async compare(slba: number, data: Buffer, opts: IoOptions = {}): Promise<void> {
    const nlb = this.blocks(data.length);
    const req = fillRw(new NvmeRequest(), IO.COMPARE, this.nsid, slba, nlb);
    req.dataOut = data;
    await this.submit(req, `compare slba ${slba} nlb ${nlb}`, false, opts.queue);
  }

  async flush(opts: IoOptions = {}): Promise<void> {
    await this.submit(fillFlush(new NvmeRequest(), this.nsid), 'flush', false, opts.queue);
  }

  async writeZeroes(
    slba: number,
    nlb: number,
    opts: WriteOptions & { deallocate?: boolean } = {},
  ): Promise<void> {
    const flags = { deac: opts.deallocate ?? false, fua: opts.fua ?? false };
    const req = fillWriteZeroes(new NvmeRequest(), this.nsid, slba, nlb, flags);
    await this.submit(req, `write zeroes slba ${slba} nlb ${nlb}`, true, opts.queue);
  }

  /** Dataset Management, Deallocate (TRIM) of up to 256 ranges. */
  async deallocate(ranges: readonly DsmRange[], opts: IoOptions = {}): Promise<void> {
    const req = fillDeallocate(new NvmeRequest(), this.nsid, ranges);
    await this.submit(req, `deallocate ${ranges.length} ranges`, true, opts.queue);
  }
}
