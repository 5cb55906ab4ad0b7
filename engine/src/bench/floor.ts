/**
 * The floor: a bare TCP request/response that moves, per I/O, exactly the bytes the
 * engine's NVMe/TCP target and host library put on the wire for it (nvmeTcpWireBytes),
 * with no NVMe. Server and client batch their writes per event-loop turn, as the
 * target and the host library do, so the floor is a fair lower bound.
 *
 * One exchange per I/O, always: a write larger than the in-capsule limit takes two
 * round trips through NVMe/TCP (CapsuleCmd, R2T, H2CData, CapsuleResp); the floor sends
 * the same bytes (R2T and H2CData headers included) in one request and one answer.
 * The extra round trip follows from the target's in-capsule size, a choice of the
 * engine's, so its cost belongs to the gap the report measures, not to the floor.
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
 * Request: a 72-byte header (u32 length, u8 write, u8 io, u16 0, u32 tag, u32 0,
 * u48 offset), zeros up to the NVMe/TCP size of the command and data headers, and a
 * write's payload. Answer: a 24-byte header (u32 bytes that follow, u32 tag, u32
 * status: 0 ok, 1 the backend I/O failed), then a read's data and zeros up to the
 * NVMe/TCP size; an answer with status 1 is the header alone.
 */
import net from 'node:net';
import { IO_QUEUE_RECEIVE_BYTES } from '../host/queue.js';
import { IN_CAPSULE_DATA_SIZE, MAX_C2H_DATA, MAXH2CDATA } from '../protocol/tcp-limits.js';
import type { BlockBackend } from '../storage/backend.js';
import { FRAME_POOL_BYTES } from '../transport/tcp/limits.js';
import { PduWriter } from '../transport/tcp/writer.js';
import { SHARED_RX, readInto } from '../util/socket-input.js';
import { RecycledBuffers } from '../util/read-buffers.js';
import type { Submit } from './patterns.js';

const REQ = 72;
const RESP = 24;
/** Larger than any pattern's block; a request above it is not from our client. */
const MAX_LEN = 1 << 20;

/** CapsuleCmd: common header and SQE. */
const CAPSULE_CMD = 72;
/** C2HData, H2CData and R2T headers, and a CapsuleResp (common header and CQE). */
const PDU_24 = 24;

/**
 * Bytes one I/O of `len` bytes puts on the wire through the engine's NVMe/TCP target
 * and host library as the benchmark connects them: no digests, CPDA 0, SQ flow
 * control disabled (host/controller.ts), so a successful read ends with a C2HData
 * that carries the SUCCESS flag and no CapsuleResp (transport/tcp/queue.ts).
 * - read: CapsuleCmd; back, one C2HData header per MAX_C2H_DATA of data, and the data.
 * - write of up to IN_CAPSULE_DATA_SIZE: CapsuleCmd with the data in it; back, a
 *   CapsuleResp.
 * - larger write: CapsuleCmd; back, one R2T for all of it; then one H2CData header per
 *   MAXH2CDATA and the data; back, a CapsuleResp.
 * test/integration/bench-floor.test.ts counts both paths' bytes on a real socket.
 */
export function nvmeTcpWireBytes(
  write: boolean,
  len: number,
): { toTarget: number; toHost: number } {
  const pieces = (max: number) => Math.max(1, Math.ceil(len / max));
  if (!write) return { toTarget: CAPSULE_CMD, toHost: pieces(MAX_C2H_DATA) * PDU_24 + len };
  if (len <= IN_CAPSULE_DATA_SIZE) return { toTarget: CAPSULE_CMD + len, toHost: PDU_24 };
  return { toTarget: CAPSULE_CMD + pieces(MAXH2CDATA) * PDU_24 + len, toHost: 2 * PDU_24 };
}

/**
 * Starts the floor server; resolves with it. `backend()` is what requests with I/O
 * use (the benchmark file); they are answered with status 1 when it returns nothing.
 */
export function startFloorServer(
  backend: () => BlockBackend | undefined = () => undefined,
): Promise<net.Server> {
  // Its connections read into one buffer of its own, as the target's do (readInto).
  const server = net.createServer({ pauseOnConnect: true }, (sock) => serveFloor(sock, backend));
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function serveFloor(accepted: net.Socket, backend: () => BlockBackend | undefined): void {
  const sock = readInto(accepted, SHARED_RX, (chunk) => onChunk(chunk)).socket;
  sock.setNoDelay(true);
  // Read frames come back once sent, as the target's do (same bound).
  const frames = new RecycledBuffers(FRAME_POOL_BYTES);
  // A write's payload leaves the read buffer for one of these until its callback, as
  // the target copies in-capsule data into its connection's pool.
  const writeData = new RecycledBuffers(FRAME_POOL_BYTES);
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
  /** Zeros for plain reads' data and answers' padding, reused (the client skips them). */
  let zeros = Buffer.alloc(0);
  const tail = (n: number) => {
    if (zeros.length < n) zeros = Buffer.alloc(n);
    return zeros.subarray(0, n);
  };
  /**
   * An answer: its header, and what follows it (`after`: bytes sent as they are, or
   * `frame`: a read frame whose first RESP bytes are the header).
   */
  const answer = (tag: number, status: number, frame?: Buffer, after?: Buffer) => {
    const out = frame ?? Buffer.allocUnsafe(RESP);
    out.writeUInt32LE(frame ? frame.length - RESP : (after?.length ?? 0), 0);
    out.writeUInt32LE(tag, 4);
    out.writeUInt32LE(status, 8);
    if (frame) writer.writeFrame(frame);
    else if (after?.length) writer.writev([out, after]);
    else writer.write(out);
  };
  /** A successful write's answer: a CapsuleResp, and an R2T's bytes when NVMe/TCP sends one. */
  const answerWrite = (tag: number, len: number) =>
    answer(tag, 0, undefined, tail(nvmeTcpWireBytes(true, len).toHost - RESP));
  const withIo = (
    write: boolean,
    len: number,
    tag: number,
    offset: number,
    data: Buffer,
    inRx: boolean,
  ) => {
    const be = backend();
    if (!be) return answer(tag, 1);
    if (write) {
      // The payload must stay valid until the callback (backend.ts): one in the read
      // buffer is copied out (a split request's is in a buffer of its own already).
      const own = inRx ? writeData.take(data.length) : null;
      if (own) data.copy(own);
      be.write(offset, own ?? data, false, (err) => {
        if (own) writeData.give(own);
        if (err) answer(tag, 1);
        else answerWrite(tag, len);
      });
      return;
    }
    // the answer's header and the data in one frame, as the target's C2HData PDUs
    const frame = frames.take(nvmeTcpWireBytes(false, len).toHost);
    be.read(
      offset,
      len,
      (err) => (err ? answer(tag, 1) : answer(tag, 0, frame)),
      frame.subarray(RESP, RESP + len),
    );
  };
  /** One whole request (header, padding, and payload for a write): answer it. inRx: it
   * lies in SHARED_RX, which the next read overwrites. */
  const serve = (req: Buffer, inRx: boolean) => {
    const len = req.readUInt32LE(0);
    const write = req[4] === 1;
    const tag = req.readUInt32LE(8);
    if (req[5] === 1) {
      withIo(write, len, tag, req.readUIntLE(16, 6), req.subarray(req.length - len), inRx);
    } else if (write) {
      answerWrite(tag, len);
    } else {
      answer(tag, 0, undefined, tail(nvmeTcpWireBytes(false, len).toHost - RESP));
    }
  };
  /** Bytes of the request whose header starts `head`, or -1 when it is not our client's. */
  const requestLength = (head: Buffer): number => {
    const len = head.readUInt32LE(0);
    return len > MAX_LEN ? -1 : nvmeTcpWireBytes(head[4] === 1, len).toTarget;
  };
  /** Copy up to `want` bytes of `buf` into the split request; returns the rest of buf. */
  const fill = (buf: Buffer, want: number): Buffer => {
    const n = Math.min(want - splitHave, buf.length);
    buf.copy(split!, splitHave, 0, n);
    splitHave += n;
    return buf.subarray(n);
  };
  const onChunk = (chunk: Buffer): void => {
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
      serve(req, false);
    }
    while (buf.length >= REQ) {
      const need = requestLength(buf);
      if (need < 0) return void sock.destroy(); // not our client: drop it, keep serving others
      if (buf.length < need) break;
      serve(buf.subarray(0, need), true);
      buf = buf.subarray(need);
    }
    if (buf.length) {
      const need = buf.length >= REQ ? requestLength(buf) : REQ;
      split = Buffer.allocUnsafe(need);
      splitHave = 0;
      buf = fill(buf, need);
    }
  };
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
  const tries = await Promise.allSettled(
    Array.from({ length: queues }, () => floorConnection(port)),
  );
  const conns = tries.flatMap((t) => (t.status === 'fulfilled' ? [t.value] : []));
  const failed = tries.find((t) => t.status === 'rejected');
  if (failed) {
    // one that could not connect: those that did are not left open
    for (const c of conns) c.sock.destroy();
    throw failed.reason;
  }
  return {
    submit: (write, offset, len, queue, done) => conns[queue]!.send(write, io, offset, len, done),
    close: () => conns.forEach((c) => c.sock.destroy()),
  };
}

type Done = (err?: Error | null) => void;

async function floorConnection(port: number) {
  // Reads land in one reused buffer of the size the host library's I/O queues use, so
  // the floor's client pays for its socket reads what the host does.
  const rx = Buffer.allocUnsafe(IO_QUEUE_RECEIVE_BYTES);
  const sock = net.connect({
    port,
    host: '127.0.0.1',
    onread: { buffer: rx, callback: (n) => (onChunk(rx.subarray(0, n)), true) },
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.setNoDelay(true);
  /** Callbacks by tag; freed tags are reused. */
  const waiting: (Done | null)[] = [];
  const freeTags: number[] = [];
  let skip = 0; // bytes of the current answer still to arrive after its header
  let skipTag = 0;
  let skipStatus = 0;
  let hdr: Buffer = Buffer.alloc(0);
  /** A broken exchange fails every request in flight, so the benchmark stops, not hangs. */
  const failAll = (err: Error) => {
    for (let tag = 0; tag < waiting.length; tag++) {
      const done = waiting[tag];
      waiting[tag] = null;
      done?.(err);
    }
  };
  /** Why the connection ended, once it has: what every later request fails with. */
  let closed: Error | null = null;
  sock.on('error', (err) => failAll((closed ??= err)));
  sock.on('close', () => failAll((closed ??= new Error('the floor connection closed'))));
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
  /** Answers' bytes as they arrive; a header cut by the end of a chunk is copied. */
  const onChunk = (chunk: Buffer) => {
    let pos = 0;
    while (pos < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - pos);
        skip -= n;
        pos += n;
        if (skip === 0) finish(skipTag, skipStatus);
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
      else [skip, skipTag, skipStatus] = [len, tag, status];
    }
  };
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
      // a write to a closed socket fails silently (no 'error' after 'close'): the request
      // would wait for ever, and the benchmark with it
      if (closed) return void setImmediate(done, closed);
      const tag = freeTags.pop() ?? waiting.length;
      waiting[tag] = done;
      // the header, zero-padded to the NVMe/TCP command's (and data PDU's) header bytes
      const h = Buffer.allocUnsafe(nvmeTcpWireBytes(write, len).toTarget - (write ? len : 0));
      h.fill(0);
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
