/**
 * readInto(): an accepted socket read into a buffer of the caller's, on real loopback
 * sockets. Node's `onread` reuses that buffer for every read; the first socket object
 * is dropped without closing the connection.
 */
import net, { type AddressInfo, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { readInto } from '../../../engine/src/util/socket-input.js';

const cleanup: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

/** A server whose first connection is handed to `take`; and a client connected to it. */
async function pair(
  take: (accepted: Socket) => Socket,
  pauseOnConnect = true,
): Promise<{ server: net.Server; served: Socket; client: Socket }> {
  let served!: Socket;
  const server = net.createServer({ pauseOnConnect });
  const accepted = new Promise<void>((resolve) => {
    server.on('connection', (s) => {
      served = take(s);
      resolve();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
  cleanup.push(() => (client.destroy(), served?.destroy(), server.close()));
  await accepted;
  return { server, served, client };
}

const until = async (cond: () => boolean, what: string): Promise<void> => {
  const end = Date.now() + 5000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('readInto', () => {
  it('delivers every chunk as a view of the buffer given, copied before the next read', async () => {
    const rx = Buffer.alloc(1024);
    const got: Buffer[] = [];
    const memory = new Set<ArrayBufferLike>();
    let reused: boolean | null = null;
    const { served, client } = await pair((s) => {
      const input = readInto(s, rx, (chunk) => {
        memory.add(chunk.buffer);
        expect(chunk.byteOffset).toBe(rx.byteOffset);
        got.push(Buffer.from(chunk));
      });
      reused = input.reused;
      return input.socket;
    });
    expect(reused).toBe(true);
    const sent = Buffer.from(Array.from({ length: 5000 }, (_, i) => i & 0xff));
    client.write(sent);
    await until(() => Buffer.concat(got).length === sent.length, 'all bytes read');
    expect(Buffer.concat(got).equals(sent)).toBe(true);
    expect(got.length).toBeGreaterThanOrEqual(5); // at most 1024 bytes a read
    expect([...memory]).toEqual([rx.buffer]);
    // The moved socket writes, ends and closes like any other.
    const reply = new Promise<string>((resolve) => client.once('data', (d) => resolve(String(d))));
    served.write('pong');
    expect(await reply).toBe('pong');
    const closed = new Promise<void>((resolve) => served.once('close', () => resolve()));
    client.end();
    served.on('end', () => served.end());
    await closed;
  });

  it("moves net.Server's count with the connection: close() waits for it, getConnections() counts it", async () => {
    const { server, served } = await pair((s) => readInto(s, Buffer.alloc(64), () => {}).socket);
    const count = () =>
      new Promise<number>((resolve, reject) =>
        server.getConnections((err, n) => (err ? reject(err) : resolve(n))),
      );
    expect(await count()).toBe(1);
    let closed = false;
    const serverClosed = new Promise<void>((resolve) =>
      server.close(() => {
        closed = true;
        resolve();
      }),
    );
    await new Promise((r) => setTimeout(r, 50));
    expect(closed).toBe(false); // the moved connection is still open
    served.destroy();
    await serverClosed;
    expect(await count()).toBe(0);
  });

  it("falls back to Node's own buffers for a socket that is already reading", async () => {
    const rx = Buffer.alloc(64);
    const memory = new Set<ArrayBufferLike>();
    let reused: boolean | null = null;
    let bytes = 0;
    const { client } = await pair((s) => {
      const input = readInto(s, rx, (chunk) => {
        memory.add(chunk.buffer);
        bytes += chunk.length;
      });
      reused = input.reused;
      return input.socket;
    }, false);
    expect(reused).toBe(false);
    client.write(Buffer.alloc(300, 1));
    await until(() => bytes === 300, 'all bytes read');
    expect(memory.has(rx.buffer)).toBe(false);
  });
});
