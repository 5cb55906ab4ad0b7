/**
 * The benchmark's floor server, over real sockets and a real file: plain requests
 * (the network alone) and requests with backend I/O (network plus backend, the
 * ceiling the report compares the target with). The bench test checks the report;
 * this one checks that the floor with I/O really reads and writes the file, so its
 * IOPS can never come from skipping the work.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectFloor, nvmeTcpWireBytes, startFloorServer } from '../../engine/src/bench/floor.js';
import { FULL_PATTERNS, isWrite, type Submit } from '../../engine/src/bench/patterns.js';
import { BENCH_NQN } from '../../engine/src/bench/peer-protocol.js';
import { connectRemote } from '../../engine/src/bench/remote.js';
import { serveBenchFile } from '../../engine/src/bench/bench-volume.js';
import { TargetRuntime } from '../../engine/src/service/target-runtime.js';
import type { BlockBackend } from '../../engine/src/storage/backend.js';
import { openBackend } from '../../engine/src/storage/open.js';
import { createLogger } from '../../engine/src/util/log.js';
import { tempDir } from '../helpers/engine.js';

const RESP = 24;
const FILE_BYTES = 1 << 20;

interface Answer {
  tag: number;
  status: number;
  payload: Buffer;
}

/** A request's header, zero-padded to the NVMe/TCP header bytes of its I/O. */
function request(o: { len: number; write?: boolean; io?: boolean; tag: number; offset?: number }) {
  const wire = nvmeTcpWireBytes(o.write ?? false, o.len);
  const h = Buffer.alloc(wire.toTarget - (o.write ? o.len : 0));
  h.writeUInt32LE(o.len, 0);
  h[4] = o.write ? 1 : 0;
  h[5] = o.io ? 1 : 0;
  h.writeUInt32LE(o.tag, 8);
  h.writeUIntLE(o.offset ?? 0, 16, 6);
  return h;
}

/**
 * Sends raw bytes (pieces apart: one socket read each) and collects `count` answers as
 * the floor client would parse them.
 */
async function exchange(port: number, bytes: Buffer | Buffer[], count: number): Promise<Answer[]> {
  const sock = net.connect(port, '127.0.0.1');
  await new Promise((resolve) => sock.once('connect', resolve));
  let acc = Buffer.alloc(0);
  const answers: Answer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    sock.on('error', reject);
    sock.on('data', (chunk: Buffer) => {
      acc = Buffer.concat([acc, chunk]);
      for (;;) {
        if (acc.length < RESP) break;
        const len = acc.readUInt32LE(0); // bytes after the header: a read's data and padding
        const total = RESP + len;
        if (acc.length < total) break;
        answers.push({
          tag: acc.readUInt32LE(4),
          status: acc.readUInt32LE(8),
          payload: Buffer.from(acc.subarray(RESP, RESP + len)),
        });
        acc = acc.subarray(total);
      }
      if (answers.length === count) resolve();
    });
  });
  if (Buffer.isBuffer(bytes)) sock.write(bytes);
  else {
    for (const piece of bytes) {
      sock.write(piece);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  await done;
  sock.destroy();
  return answers;
}

describe('bench floor server', () => {
  let dir: string;
  let file: string;
  let content: Buffer;
  let be: BlockBackend;
  let backendCalls = 0;
  let server: net.Server;
  let port: number;

  beforeAll(async () => {
    dir = tempDir('branchsan-floor-');
    file = path.join(dir, 'f.img');
    content = crypto.randomBytes(FILE_BYTES);
    fs.writeFileSync(file, content);
    be = await openBackend({ kind: 'file', path: file });
    server = await startFloorServer(() => {
      backendCalls++;
      return be;
    });
    port = (server.address() as net.AddressInfo).port;
  });

  afterAll(async () => {
    server.close();
    await be.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers a read with I/O with the file bytes at its offset, under its own tag', async () => {
    const offsets = [5 * 4096, 200 * 4096, 0];
    const bytes = Buffer.concat(
      offsets.map((offset, i) => request({ len: 4096, io: true, tag: 10 + i, offset })),
    );
    const answers = await exchange(port, bytes, offsets.length);
    expect(answers.map((a) => a.tag).sort()).toEqual([10, 11, 12]);
    for (const a of answers) {
      const offset = offsets[a.tag - 10]!;
      expect(a.status).toBe(0);
      expect(a.payload.equals(content.subarray(offset, offset + 4096))).toBe(true);
    }
  });

  it('writes the payload of a write with I/O into the file before answering', async () => {
    const data = crypto.randomBytes(8192);
    const offset = 64 * 4096;
    const req = request({ len: data.length, write: true, io: true, tag: 99, offset });
    const [a] = await exchange(port, Buffer.concat([req, data]), 1);
    expect(a).toMatchObject({ tag: 99, status: 0 });
    expect(a!.payload.length).toBe(0);
    const fd = fs.openSync(file, 'r');
    const back = Buffer.alloc(data.length);
    fs.readSync(fd, back, 0, back.length, offset);
    fs.closeSync(fd);
    expect(back.equals(data)).toBe(true);
    data.copy(content, offset); // later cases read this range as the file now holds it
  });

  it('assembles requests that arrive in pieces, split in the header and in the payload', async () => {
    const data = crypto.randomBytes(64 * 1024);
    const offset = 128 * 1024;
    const write = Buffer.concat([
      request({ len: data.length, write: true, io: true, tag: 5, offset }),
      data,
    ]);
    const read = request({ len: 4096, io: true, tag: 6, offset: offset + 4096 });
    const bytes = Buffer.concat([write, read]);
    // Cuts inside the write's header (72 bytes, then the 24 of the H2CData header a
    // 64 KiB write carries), at its end, through its payload, and one piece
    // that ends the write and starts the read.
    const cuts = [
      0,
      10,
      71,
      72,
      73,
      95,
      96,
      97,
      5000,
      40_000,
      write.length - 1,
      write.length + 30,
      bytes.length,
    ];
    const pieces = cuts.slice(1).map((end, i) => bytes.subarray(cuts[i], end));
    const answers = (await exchange(port, pieces, 2)).sort((a, b) => a.tag - b.tag);
    expect(answers.map((a) => [a.tag, a.status])).toEqual([
      [5, 0],
      [6, 0],
    ]);
    expect(answers[1]!.payload.equals(data.subarray(4096, 8192))).toBe(true);
    const fd = fs.openSync(file, 'r');
    const back = Buffer.alloc(data.length);
    fs.readSync(fd, back, 0, back.length, offset);
    fs.closeSync(fd);
    expect(back.equals(data)).toBe(true);
    data.copy(content, offset);
  });

  it('answers I/O the backend refuses (past the end of the file) with a failed status', async () => {
    const [a] = await exchange(
      port,
      request({ len: 4096, io: true, tag: 8, offset: FILE_BYTES }),
      1,
    );
    expect(a).toMatchObject({ tag: 8, status: 1 });
    expect(a!.payload.length).toBe(0);
  });

  it('answers plain requests without the backend, each under its own tag', async () => {
    const before = backendCalls;
    const bytes = Buffer.concat([
      request({ len: 4096, tag: 1 }),
      request({ len: 4096, tag: 2 }),
      request({ len: 512, write: true, tag: 3 }),
      Buffer.alloc(512),
      request({ len: 131072, tag: 4 }),
    ]);
    const answers = await exchange(port, bytes, 4);
    expect(answers.map((a) => [a.tag, a.status, a.payload.length])).toEqual([
      [1, 0, 4096],
      [2, 0, 4096],
      [3, 0, 0],
      [4, 0, 131072],
    ]);
    expect(backendCalls).toBe(before);
  });

  it('keeps 64 reads and writes with I/O in flight through connectFloor', async () => {
    const floor = await connectFloor(port, 1, true);
    try {
      let completed = 0;
      await new Promise<void>((resolve, reject) => {
        for (let i = 0; i < 64; i++) {
          const write = i % 2 === 1;
          floor.submit(write, ((i * 7) % 256) * 4096, 4096, 0, (err) => {
            if (err) return reject(err);
            if (++completed === 64) resolve();
          });
        }
      });
      expect(completed).toBe(64);
    } finally {
      floor.close();
    }
  });

  it('drops a connection that asks for an absurd length and keeps serving others', async () => {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((resolve) => sock.once('connect', resolve));
    const closed = new Promise((resolve) => sock.once('close', resolve));
    sock.on('error', () => undefined);
    sock.write(request({ len: 0xffffffff, io: true, tag: 1 }));
    await closed;
    const [a] = await exchange(port, request({ len: 4096, io: true, tag: 5, offset: 4096 }), 1);
    expect(a).toMatchObject({ tag: 5, status: 0 });
    expect(a!.payload.equals(content.subarray(4096, 8192))).toBe(true);
  });

  it('fails the requests in flight when the server answers a tag it was never sent', async () => {
    const liar = net.createServer((sock) =>
      sock.once('data', () => {
        const answer = Buffer.alloc(RESP);
        answer.writeUInt32LE(4242, 4); // no request has this tag
        sock.write(answer);
      }),
    );
    await new Promise<void>((resolve) => liar.listen(0, '127.0.0.1', resolve));
    const floor = await connectFloor((liar.address() as net.AddressInfo).port, 1, true);
    try {
      const errors = await Promise.all(
        [0, 1].map(
          (i) =>
            new Promise<Error | null | undefined>((resolve) =>
              floor.submit(false, i * 4096, 4096, 0, resolve),
            ),
        ),
      );
      for (const err of errors)
        expect(err?.message).toMatch(/answered tag 4242, which is not in flight/);
    } finally {
      floor.close();
      liar.close();
    }
  });

  it('fails a request sent after its connection closed, instead of leaving it waiting', async () => {
    // a server that drops the connection at its first request
    const dropper = net.createServer((sock) => sock.once('data', () => sock.destroy()));
    await new Promise<void>((resolve) => dropper.listen(0, '127.0.0.1', resolve));
    const floor = await connectFloor((dropper.address() as net.AddressInfo).port, 1);
    const submit = () =>
      new Promise<Error | null | undefined>((resolve) => floor.submit(false, 0, 4096, 0, resolve));
    try {
      expect(await submit()).toBeInstanceOf(Error); // in flight when it closed
      await new Promise((r) => setTimeout(r, 50)); // the close has been seen by now
      // sent after: a write to the closed socket went nowhere, and nothing answered it
      let timer: NodeJS.Timeout | undefined;
      const after = await Promise.race([
        submit(),
        new Promise<string>((r) => (timer = setTimeout(() => r('still waiting'), 5000))),
      ]);
      clearTimeout(timer);
      expect(after).toBeInstanceOf(Error);
    } finally {
      floor.close();
      dropper.close();
    }
  });

  it('reports a failed I/O to the caller when the server has no backend', async () => {
    const bare = await startFloorServer();
    const floor = await connectFloor((bare.address() as net.AddressInfo).port, 1, true);
    try {
      const err = await new Promise<Error | null | undefined>((resolve) =>
        floor.submit(false, 0, 4096, 0, resolve),
      );
      expect(err?.message).toMatch(/could not do the backend I\/O/);
    } finally {
      floor.close();
      bare.close();
    }
  });
});

/**
 * A TCP proxy that counts the bytes it forwards, per connection and direction.
 * `conns[i]` is the i-th connection accepted (for NVMe/TCP: the admin queue first).
 */
async function countingProxy(upstream: number) {
  const conns: { up: number; down: number }[] = [];
  const server = net.createServer((client) => {
    const count = { up: 0, down: 0 };
    conns.push(count);
    const target = net.connect(upstream, '127.0.0.1');
    client.setNoDelay(true);
    target.setNoDelay(true);
    client.on('data', (d: Buffer) => ((count.up += d.length), target.write(d)));
    target.on('data', (d: Buffer) => ((count.down += d.length), client.write(d)));
    client.on('close', () => target.destroy());
    target.on('close', () => client.destroy());
    client.on('error', () => undefined);
    target.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, conns, port: (server.address() as net.AddressInfo).port };
}

describe('the floor moves the bytes NVMe/TCP moves', () => {
  it('for every pattern the benchmark runs, in each direction, per I/O', async () => {
    const dir = tempDir('branchsan-floor-wire-');
    const file = path.join(dir, 'f.img');
    fs.writeFileSync(file, Buffer.alloc(FILE_BYTES));
    const rt = new TargetRuntime(createLogger({ level: 'error', sink: process.stderr }));
    const be = await openBackend({ kind: 'file', path: file, exclusive: false });
    const floorServer = await startFloorServer(() => be);
    try {
      await serveBenchFile(rt, file); // as the benchmark's peer serves it
      const port = await rt.addPort({ portId: 1, host: '127.0.0.1', port: 0 });
      const nvmeProxy = await countingProxy(port.port!);
      const floorProxy = await countingProxy((floorServer.address() as net.AddressInfo).port);
      const remote = await connectRemote(nvmeProxy.port, BENCH_NQN, 1);
      const plain = await connectFloor(floorProxy.port, 1);
      const withIo = await connectFloor(floorProxy.port, 1, true);
      /** Bytes each way of one I/O through `submit`, counted on connection `conn`. */
      const oneIo = async (
        conn: () => { up: number; down: number },
        submit: Submit,
        write: boolean,
        len: number,
      ) => {
        const before = { ...conn() };
        await new Promise<void>((resolve, reject) =>
          submit(write, 0, len, 0, (err) => (err ? reject(err) : resolve())),
        );
        return { up: conn().up - before.up, down: conn().down - before.down };
      };
      try {
        const sizes = new Set(FULL_PATTERNS.map((p) => `${isWrite(p.pattern)}/${p.bs}`));
        expect(sizes.size).toBe(4); // 4 KiB and 128 KiB, reads and writes
        for (const key of sizes) {
          const [w, bs] = key.split('/');
          const write = w === 'true';
          const len = Number(bs);
          // the I/O queue: the second connection (the admin queue is the first)
          const nvme = await oneIo(() => nvmeProxy.conns[1]!, remote.submit, write, len);
          const floor = await oneIo(() => floorProxy.conns[0]!, plain.submit, write, len);
          const floorIo = await oneIo(() => floorProxy.conns[1]!, withIo.submit, write, len);
          expect(floor, key).toEqual(nvme);
          expect(floorIo, key).toEqual(nvme);
          const wire = nvmeTcpWireBytes(write, len);
          expect({ up: wire.toTarget, down: wire.toHost }, key).toEqual(nvme);
        }
        // a successful read ends with its data: no CapsuleResp after it
        expect(nvmeTcpWireBytes(false, 4096)).toEqual({ toTarget: 72, toHost: 24 + 4096 });
      } finally {
        await remote.close();
        plain.close();
        withIo.close();
        nvmeProxy.server.close();
        floorProxy.server.close();
      }
    } finally {
      floorServer.close();
      await be.close();
      await rt.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
