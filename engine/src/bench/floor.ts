/**
 * The floor: a bare TCP request/response with the same sizes as NVMe/TCP (a 72-byte
 * command, plus payload for writes; a 24-byte answer, plus 24 + payload for reads),
 * no NVMe and no backend. Server and client batch writes per received chunk, as the
 * target and the host library do, so the floor is a fair lower bound.
 */
import net from 'node:net';
import type { Submit } from './patterns.js';

const REQ = 72;
const RESP = 24;

/** Starts the echo server; resolves with its port. */
export function startFloorServer(): Promise<net.Server> {
  const server = net.createServer((sock) => serveFloor(sock));
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function serveFloor(sock: net.Socket): void {
  sock.setNoDelay(true);
  let pending: Buffer | null = null;
  let replyCache = Buffer.alloc(0);
  const replyFor = (len: number) => {
    if (replyCache.length < RESP + len) replyCache = Buffer.alloc(RESP + len + RESP);
    return replyCache;
  };
  sock.on('data', (chunk: Buffer) => {
    let buf = pending ? Buffer.concat([pending, chunk]) : chunk;
    pending = null;
    let corked = false;
    while (buf.length >= REQ) {
      const write = buf[4] === 1;
      const len = buf.readUInt32LE(0);
      const need = REQ + (write ? len : 0);
      if (buf.length < need) break;
      if (!corked) {
        sock.cork();
        corked = true;
      }
      const out = replyFor(len);
      out.writeUInt32LE(write ? 0 : len, 0);
      // reads: C2H header + data + CapsuleResp; writes: CapsuleResp only
      sock.write(write ? out.subarray(0, RESP) : out.subarray(0, RESP + len + RESP));
      buf = buf.subarray(need);
    }
    if (buf.length) pending = Buffer.from(buf);
    if (corked) sock.uncork();
  });
  sock.on('error', () => undefined);
}

/** Connects `queues` client connections; returns a Submit for the benchmark loop. */
export async function connectFloor(
  port: number,
  queues: number,
): Promise<{ submit: Submit; close(): void }> {
  const conns = await Promise.all(Array.from({ length: queues }, () => floorConnection(port)));
  return {
    submit: (write, _offset, len, queue, done) => conns[queue]!.send(write, len, done),
    close: () => conns.forEach((c) => c.sock.destroy()),
  };
}

async function floorConnection(port: number) {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.setNoDelay(true);
  const waiting: { len: number; done: (err?: Error | null) => void }[] = [];
  let head = 0;
  let skip = 0; // payload bytes of the current answer still to arrive
  let hdr: Buffer = Buffer.alloc(0);
  sock.on('data', (chunk: Buffer) => {
    let pos = 0;
    while (pos < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - pos);
        skip -= n;
        pos += n;
        if (skip === 0) waiting[head++]!.done();
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
      hdr = Buffer.alloc(0);
      if (len === 0) waiting[head++]!.done();
      else skip = len + RESP;
      if (head > 1024) {
        waiting.splice(0, head);
        head = 0;
      }
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
    send(write: boolean, len: number, done: (err?: Error | null) => void) {
      waiting.push({ len, done });
      const h = Buffer.from(header);
      h.writeUInt32LE(len, 0);
      h[4] = write ? 1 : 0;
      if (batch.length === 0) setImmediate(flush);
      batch.push(h);
      if (write) {
        if (payload.length < len) payload = Buffer.alloc(len, 0x5a);
        batch.push(payload.subarray(0, len));
      }
    },
  };
}
