import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { PduWriter } from '../../../engine/src/transport/tcp/writer.js';
import { RecycledBuffers } from '../../../engine/src/util/read-buffers.js';

const cleanups: (() => void)[] = [];
afterEach(() => cleanups.splice(0).forEach((f) => f()));

/** A connected pair of real loopback sockets. */
async function pair(): Promise<{ server: net.Socket; client: net.Socket }> {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const accepted = once(srv, 'connection');
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  await once(client, 'connect');
  const [server] = (await accepted) as [net.Socket];
  cleanups.push(() => {
    client.destroy();
    server.destroy();
    srv.close();
  });
  return { server, client };
}

function receive(sock: net.Socket, bytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let got = 0;
  return new Promise((resolve) => {
    sock.on('data', (d: Buffer) => {
      parts.push(d);
      got += d.length;
      if (got >= bytes) resolve(Buffer.concat(parts));
    });
  });
}

/** Frame i is filled with the byte i + 1. */
function expectFrames(bytes: Buffer, size: number, count: number): void {
  expect(bytes.length).toBe(size * count);
  for (let i = 0; i < count; i++) {
    const frame = bytes.subarray(i * size, (i + 1) * size);
    expect(frame.every((x) => x === i + 1)).toBe(true);
  }
}

describe('PduWriter frames', () => {
  it('go back to the pool once the socket took their bytes, and reuse never changes what was sent', async () => {
    const { server, client } = await pair();
    const pool = new RecycledBuffers(1 << 20);
    const writer = new PduWriter(server, () => undefined, pool);
    const frames = [pool.take(4096), pool.take(4096)];
    frames.forEach((f, i) => f.fill(i + 1));
    const got = receive(client, 8192);
    frames.forEach((f) => writer.writeFrame(f));
    expect(pool.heldBytes).toBe(0); // still corked: nothing has been written yet
    writer.flush();
    expect(pool.heldBytes).toBe(8192);
    const again = [pool.take(4096), pool.take(4096)];
    expect(new Set(again)).toEqual(new Set(frames));
    again.forEach((f) => f.fill(0xee)); // the next reads land in them
    expectFrames(await got, 4096, 2);
  });

  it('stay out of the pool while the socket still holds them (a host that does not read)', async () => {
    const { server, client } = await pair();
    client.pause(); // the kernel's buffers fill, then Node's queue
    const size = 1 << 20;
    const count = 32;
    const pool = new RecycledBuffers(64 * size);
    const writer = new PduWriter(server, () => undefined, pool);
    const frames = Array.from({ length: count }, (_, i) => pool.take(size).fill(i + 1));
    frames.forEach((f) => writer.writeFrame(f));
    writer.flush();
    expect(server.writableLength).toBeGreaterThan(0);
    expect(pool.heldBytes).toBe(0);
    // What the next reads would get: never a frame Node or libuv still points into.
    const next = Array.from({ length: count }, () => pool.take(size));
    expect(next.filter((b) => frames.includes(b))).toEqual([]);
    next.forEach((b) => b.fill(0xee));
    const got = receive(client, size * count);
    client.resume();
    expectFrames(await got, size, count);
    await new Promise((r) => setImmediate(r));
    expect(pool.heldBytes).toBe(0); // and they do not come back later either
  });
});
