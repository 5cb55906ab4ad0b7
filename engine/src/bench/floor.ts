/**
 * The floor: a bare TCP request/response with the same sizes as NVMe/TCP (a 72-byte
 * command, plus payload for writes; a 24-byte answer, plus 24 + payload for reads),
 * no NVMe. Server and client batch their writes per event-loop turn, as the target
 * and the host library do, so the floor is a fair lower bound.
 *
 * Two kinds of request share one server:
 * - plain: no backend; reads answer with bytes from one reused buffer. This is the
 *   network alone.
 * - with I/O (`io`): the server does the same backend I/O the target would (the read
 *   lands in the answer's frame, as the target's reads do) before it answers. This
 *   is the network plus the backend, with nothing of NVMe/TCP or the engine, so the
 *   gap between it and the target is exactly the target's own cost, and its IOPS
 *   over the local leg's is the best ratio any target could reach with these two
 *   processes on this machine.
 *
 * Requests carry a tag that answers echo: backend I/O may complete out of order.
 *
 * Request (72 bytes): u32 length, u8 write, u8 io, u16 0, u32 tag, u32 0, u48 offset.
 * Answer (24 bytes): u32 length of payload that follows (+ 24 trailing bytes), u32 tag,
 * u32 status (0 ok, 1 the backend I/O failed).
 */
import net from 'node:net';
import type { BlockBackend } from '../storage/backend.js';
import { FRAME_POOL_BYTES } from '../transport/tcp/limits.js';
import { PduWriter } from '../transport/tcp/writer.js';
import { RecycledBuffers } from '../util/read-buffers.js';
import type { Submit } from './patterns.js';

const REQ = 72;
const RESP = 24;
/** Larger than any pattern's block; a request above it is not from our client. */
const MAX_LEN = 1 << 20;

/**
 * Starts the floor server; resolves with it. `backend()` is what requests with I/O
 * use (the benchmark file); they are answered with status 1 when it returns nothing.
 */
export function startFloorServer(
  backend: () => BlockBackend | undefined = () => undefined,
): Promise<net.Server> {
  const server = net.createServer((sock) => serveFloor(sock, backend));
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function serveFloor(sock: net.Socket, backend: () => BlockBackend | undefined): void {
  sock.setNoDelay(true);
  // Read frames come back once sent, as the target's do (same bound).
  const frames = new RecycledBuffers(FRAME_POOL_BYTES);
  // Stop reading until the socket drains; once per stall, so 'drain' listeners never pile up.
  const writer = new PduWriter(
    sock,
    () => {
      if (sock.isPaused()) return;
      sock.pause();
      sock.once('drain', () => sock.resume());
    },
    frames,
  );
  /** A request split across socket reads, assembled here (each byte copied once). */
  let split: Buffer | null = null;
  let splitHave = 0;
  let dataCache = Buffer.alloc(0);
  /** An answer: its own header (in `frame` when the payload was read into one). */
  const answer = (tag: number, status: number, frame?: Buffer, shared?: Buffer) => {
    const out = frame ?? Buffer.allocUnsafe(RESP);
    const len = frame ? frame.length - 2 * RESP : shared ? shared.length - RESP : 0;
    out.writeUInt32LE(len, 0);
    out.writeUInt32LE(tag, 4);
    out.writeUInt32LE(status, 8);
    if (shared) writer.writev([out, shared]);
    else if (frame) writer.writeFrame(frame);
    else writer.write(out);
  };
  const withIo = (write: boolean, len: number, tag: number, offset: number, data: Buffer) => {
    const be = backend();
    if (!be) return answer(tag, 1);
    if (write) {
      // the payload is a view of received memory, valid until the callback (backend.ts)
      be.write(offset, data, false, (err) => answer(tag, err ? 1 : 0));
      return;
    }
    const frame = frames.take(RESP + len + RESP);
    be.read(
      offset,
      len,
      (err) => (err ? answer(tag, 1) : answer(tag, 0, frame)),
      frame.subarray(RESP, RESP + len),
    );
  };
  /** One whole request (header, and payload for a write): answer it. */
  const serve = (req: Buffer) => {
    const len = req.readUInt32LE(0);
    const write = req[4] === 1;
    const tag = req.readUInt32LE(8);
    if (req[5] === 1) {
      withIo(write, len, tag, req.readUIntLE(16, 6), req.subarray(REQ));
    } else if (write) {
      answer(tag, 0);
    } else {
      // reads: C2H header, then data + CapsuleResp from one reused buffer
      if (dataCache.length < len + RESP) dataCache = Buffer.alloc(len + RESP);
      answer(tag, 0, undefined, dataCache.subarray(0, len + RESP));
    }
  };
  /** Bytes of the request whose header starts `head`, or -1 when it is not our client's. */
  const requestLength = (head: Buffer): number => {
    const len = head.readUInt32LE(0);
    return len > MAX_LEN ? -1 : REQ + (head[4] === 1 ? len : 0);
  };
  /** Copy up to `want` bytes of `buf` into the split request; returns the rest of buf. */
  const fill = (buf: Buffer, want: number): Buffer => {
    const n = Math.min(want - splitHave, buf.length);
    buf.copy(split!, splitHave, 0, n);
    splitHave += n;
    return buf.subarray(n);
  };
  sock.on('data', (chunk: Buffer) => {
    let buf = chunk;
    if (split) {
      // Complete the split request: its header, then exactly its remaining bytes, so a
      // large write is copied once however many reads it arrives in.
      if (splitHave < REQ) {
        buf = fill(buf, REQ);
        if (splitHave < REQ) return;
        const need = requestLength(split);
        if (need < 0) return void sock.destroy();
        if (need > split.length) {
          const whole = Buffer.allocUnsafe(need);
          split.copy(whole, 0, 0, splitHave);
          split = whole;
        }
      }
      const need = requestLength(split);
      buf = fill(buf, need);
      if (splitHave < need) return;
      // A fresh buffer per split request: a write's payload stays valid until its callback.
      const req = split.subarray(0, need);
      split = null;
      serve(req);
    }
    while (buf.length >= REQ) {
      const need = requestLength(buf);
      if (need < 0) return void sock.destroy(); // not our client: drop it, keep serving others
      if (buf.length < need) break;
      serve(buf.subarray(0, need));
      buf = buf.subarray(need);
    }
    if (buf.length) {
      const need = buf.length >= REQ ? requestLength(buf) : REQ;
      split = Buffer.allocUnsafe(need);
      splitHave = 0;
      buf = fill(buf, need);
    }
  });
  sock.on('error', () => undefined);
}

/**
 * Connects `queues` client connections; returns a Submit for the benchmark loop.
 * With `io`, every request asks the server to do the backend I/O at its offset.
 */
export async function connectFloor(
  port: number,
  queues: number,
  io = false,
): Promise<{ submit: Submit; close(): void }> {
  const conns = await Promise.all(Array.from({ length: queues }, () => floorConnection(port)));
  return {
    submit: (write, offset, len, queue, done) => conns[queue]!.send(write, io, offset, len, done),
    close: () => conns.forEach((c) => c.sock.destroy()),
  };
}

type Done = (err?: Error | null) => void;

async function floorConnection(port: number) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.setNoDelay(true);
  /** Callbacks by tag; freed tags are reused. */
  const waiting: (Done | null)[] = [];
  const freeTags: number[] = [];
  let skip = 0; // payload bytes of the current answer still to arrive
  let skipTag = 0;
  let hdr: Buffer = Buffer.alloc(0);
  /** A broken exchange fails every request in flight, so the benchmark stops, not hangs. */
  const failAll = (err: Error) => {
    for (let tag = 0; tag < waiting.length; tag++) {
      const done = waiting[tag];
      waiting[tag] = null;
      done?.(err);
    }
  };
  sock.on('error', failAll);
  sock.on('close', () => failAll(new Error('the floor connection closed')));
  const finish = (tag: number, status: number) => {
    const done = waiting[tag];
    if (!done) {
      failAll(new Error(`the floor server answered tag ${tag}, which is not in flight`));
      sock.destroy();
      return;
    }
    waiting[tag] = null;
    freeTags.push(tag);
    done(status === 0 ? null : new Error('the floor server could not do the backend I/O'));
  };
  sock.on('data', (chunk: Buffer) => {
    let pos = 0;
    while (pos < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - pos);
        skip -= n;
        pos += n;
        if (skip === 0) finish(skipTag, 0);
        continue;
      }
      const take = Math.min(RESP - hdr.length, chunk.length - pos);
      hdr = hdr.length
        ? Buffer.concat([hdr, chunk.subarray(pos, pos + take)])
        : chunk.subarray(pos, pos + take);
      pos += take;
      if (hdr.length < RESP) {
        hdr = Buffer.from(hdr);
        continue;
      }
      const len = hdr.readUInt32LE(0);
      const tag = hdr.readUInt32LE(4);
      const status = hdr.readUInt32LE(8);
      hdr = Buffer.alloc(0);
      if (len === 0) finish(tag, status);
      else [skip, skipTag] = [len + RESP, tag];
    }
  });
  const header = Buffer.alloc(REQ);
  let payload = Buffer.alloc(0);
  let batch: Buffer[] = [];
  const flush = () => {
    const b = batch;
    batch = [];
    sock.cork();
    for (const x of b) sock.write(x);
    sock.uncork();
  };
  return {
    sock,
    send(write: boolean, io: boolean, offset: number, len: number, done: Done) {
      const tag = freeTags.pop() ?? waiting.length;
      waiting[tag] = done;
      const h = Buffer.from(header);
      h.writeUInt32LE(len, 0);
      h[4] = write ? 1 : 0;
      h[5] = io ? 1 : 0;
      h.writeUInt32LE(tag, 8);
      h.writeUIntLE(offset, 16, 6);
      if (batch.length === 0) setImmediate(flush);
      batch.push(h);
      if (write) {
        if (payload.length < len) payload = Buffer.alloc(len, 0x5a);
        batch.push(payload.subarray(0, len));
      }
    },
  };
}
