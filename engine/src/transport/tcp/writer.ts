/**
 * Batches every PDU a queue produces in one event-loop turn into one corked write, so a
 * turn costs one writev syscall instead of one per PDU (PERF-NOTES: 8-10 µs each here).
 * The first write of a turn corks the socket; a setImmediate after the poll phase
 * uncorks it, so all chunks read in that phase and the completions they caused share
 * the batch.
 *
 * Frames (writeFrame) go back to their pool once the batch they were in has been
 * written: when the uncork left nothing queued, the kernel holds a copy of every byte
 * and no write request of Node's or libuv's points into them any more. A batch that
 * left bytes queued (backpressure, an error) keeps its frames out of the pool for
 * good; the GC frees them once the socket is done with them.
 */
import type { Socket } from 'node:net';
import type { RecycledBuffers } from '../../util/read-buffers.js';

export class PduWriter {
  private corked = false;
  private readonly flushSoon = (): void => this.flush();
  /** Frames written in this batch, for the pool once it is written. */
  private readonly lent: Buffer[] = [];

  /**
   * @param onBackpressure called after a flush that left more than the socket's high
   *   water mark queued in user space; the owner stops reading until 'drain'.
   */
  constructor(
    private readonly socket: Socket,
    private readonly onBackpressure: () => void,
    private readonly pool: RecycledBuffers | null = null,
  ) {}

  /** Queue one PDU (or one piece of it). */
  write(buf: Buffer): void {
    if (!this.begin()) return;
    this.socket.write(buf);
  }

  /** Queue one whole PDU built in a frame of the pool; the frame returns to it once sent. */
  writeFrame(frame: Buffer): void {
    if (!this.begin()) return;
    this.socket.write(frame);
    if (this.pool) this.lent.push(frame);
  }

  /** Queue the pieces of a data PDU (header, payload view, digest) without joining them. */
  writev(pieces: readonly Buffer[]): void {
    if (!this.begin()) return;
    for (const p of pieces) this.socket.write(p);
  }

  /** Send what this turn queued now (before end(), or from the scheduled uncork). */
  flush(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
    const s = this.socket;
    if (this.lent.length > 0) this.recycle(s.writableLength === 0);
    if (s.writableNeedDrain && s.writableLength >= s.writableHighWaterMark) this.onBackpressure();
  }

  private recycle(written: boolean): void {
    if (written) for (const frame of this.lent) this.pool!.give(frame);
    this.lent.length = 0;
  }

  private begin(): boolean {
    if (!this.socket.writable) return false;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.flushSoon);
    }
    return true;
  }
}
