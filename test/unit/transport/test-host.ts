/**
 * Test doubles for the TCP transport: a scripted NVMe/TCP host on a real socket (built
 * on the codec), and a small fake CoreTarget with made-up commands.
 */
import net from 'node:net';
import type {
  Completion,
  CoreQueue,
  CoreTarget,
  ParseResult,
  TransportQueue,
} from '../../../engine/src/core/seam.js';
import {
  encodeCapsuleCmd,
  encodeH2CData,
  encodeICReq,
  PduType,
  type C2HPdu,
  type Digests,
  type ICRespPdu,
} from '../../../engine/src/protocol/pdu.js';
import { hostParser, type PduError } from '../../../engine/src/protocol/pdu-parser.js';
import {
  readCqe,
  setSgl,
  SGL_DATA_BLOCK_OFFSET,
  SGL_TRANSPORT_DATA_BLOCK,
  type Cqe,
} from '../../../engine/src/protocol/pdu-capsule.js';
import { SC, DNR } from '../../../engine/src/protocol/status.js';

// ---- made-up command set of the fake core ----
export const OP = {
  /** Write sglLength bytes; dw0 = number of bytes received. */
  WRITE: 0x01,
  /** Read cdw12 bytes of pattern(cdw10). */
  READ: 0x02,
  /** Complete only when the test calls release(). */
  HOLD: 0x03,
  KEEP_ALIVE: 0x18,
  /** parse() fails with Invalid Opcode. */
  BAD: 0xee,
  /** parse() throws. */
  THROW: 0xef,
  FABRICS: 0x7f,
} as const;

export function pattern(len: number, seed: number): Buffer {
  const b = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

export class FakeQueue implements CoreQueue {
  parsed = 0;
  closedCalls = 0;
  writes: Buffer[] = [];
  held: Completion[] = [];

  constructor(readonly tq: TransportQueue) {}

  parse(sqe: Buffer, sglLength: number): ParseResult {
    this.parsed++;
    const op = sqe[0]!;
    switch (op) {
      case OP.FABRICS: // Connect: 1024 bytes in-capsule; sets the queue size
        return {
          kind: 'exec',
          dir: 'h2c',
          length: sglLength,
          exec: (_data, done) => {
            this.tq.setQueueSize(sqe.readUInt16LE(44) + 1);
            done(0, 1);
          },
        };
      case OP.WRITE:
        return {
          kind: 'exec',
          dir: 'h2c',
          length: sglLength,
          exec: (data, done) => {
            this.writes.push(Buffer.from(data!));
            done(0, data!.length);
          },
        };
      case OP.READ: {
        const len = sqe.readUInt32LE(48);
        const seed = sqe.readUInt32LE(40);
        return {
          kind: 'exec',
          dir: 'c2h',
          length: len,
          exec: (_d, done) => setImmediate(() => done(0, 0, 0, pattern(len, seed))),
        };
      }
      case OP.HOLD:
        return { kind: 'exec', dir: 'none', length: 0, exec: (_d, done) => this.held.push(done) };
      case OP.KEEP_ALIVE:
        return { kind: 'exec', dir: 'none', length: 0, exec: (_d, done) => done(0) };
      case OP.THROW:
        throw new Error('core bug');
      default:
        return { kind: 'error', status: SC.INVALID_OPCODE | DNR };
    }
  }

  closed(): void {
    this.closedCalls++;
  }

  release(): void {
    for (const done of this.held.splice(0)) done(0);
  }
}

export class FakeCore implements CoreTarget {
  readonly queues: FakeQueue[] = [];
  openQueue(tq: TransportQueue): CoreQueue {
    const q = new FakeQueue(tq);
    this.queues.push(q);
    return q;
  }
}

// ---- SQE builders ----

export function sqe(op: number, cid: number, sgl = SGL_TRANSPORT_DATA_BLOCK, len = 0): Buffer {
  const s = Buffer.alloc(64);
  s[0] = op;
  s.writeUInt16LE(cid, 2);
  setSgl(s, sgl, len);
  return s;
}

export function connectSqe(cid: number, sqsize: number): Buffer {
  const s = sqe(OP.FABRICS, cid, SGL_DATA_BLOCK_OFFSET, 1024);
  s[4] = 0x01;
  s.writeUInt16LE(1, 42); // qid
  s.writeUInt16LE(sqsize, 44);
  return s;
}

export function readSqe(cid: number, len: number, seed: number): Buffer {
  const s = sqe(OP.READ, cid, SGL_TRANSPORT_DATA_BLOCK, len);
  s.writeUInt32LE(seed, 40);
  s.writeUInt32LE(len, 48);
  return s;
}

// ---- scripted host ----

type Dist<P, T> = P extends { type: infer U } ? (T extends U ? P : never) : never;
/** The PDU shape(s) with this type code (TermReq's type is a union of two codes). */
export type PduOf<T> = Dist<C2HPdu, T>;

export class TestHost {
  readonly socket: net.Socket;
  dg: Digests = { hdgst: false, ddgst: false };
  private readonly parser = hostParser(1 << 20);
  private readonly inbox: C2HPdu[] = [];
  private waiter: (() => void) | null = null;
  parseError: PduError | null = null;
  closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => {
      const err = this.parser.feed(c, (p) => {
        if (p.type === PduType.ICResp) this.parser.setDigests(p.hdgst, p.ddgst);
        this.inbox.push(p);
      });
      if (err) this.parseError = err;
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) => socket.on('close', () => (this.wake(), resolve())));
  }

  static connect(port: number): Promise<TestHost> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => resolve(new TestHost(s)));
      s.setNoDelay(true);
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  /** The next PDU received; rejects if the connection closes first. */
  async next(timeoutMs = 5000): Promise<C2HPdu> {
    const deadline = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      if (this.socket.destroyed || this.socket.readableEnded) throw new Error('connection closed');
      if (Date.now() > deadline) throw new Error('timeout waiting for a PDU');
      await new Promise<void>((r) => {
        this.waiter = r;
        setTimeout(r, 50);
      });
    }
    return this.inbox.shift()!;
  }

  async nextOf<T extends C2HPdu['type']>(type: T): Promise<PduOf<T>> {
    const p = await this.next();
    if (p.type !== type) throw new Error(`expected PDU type ${type}, got ${JSON.stringify(p)}`);
    return p as PduOf<T>;
  }

  async nextCqe(): Promise<Cqe> {
    return readCqe((await this.nextOf(PduType.CapsuleResp)).cqe);
  }

  send(...bufs: Buffer[]): void {
    for (const b of bufs) this.socket.write(b);
  }

  async ic(dg: Digests = this.dg, hpda = 0): Promise<ICRespPdu> {
    this.send(encodeICReq({ hpda, hdgst: dg.hdgst, ddgst: dg.ddgst, maxr2t: 0 }));
    const r = await this.nextOf(PduType.ICResp);
    this.dg = dg;
    return r;
  }

  command(s: Buffer, data: Buffer | null = null): void {
    this.send(...encodeCapsuleCmd(s, data, this.dg));
  }

  async connectQueue(sqsize = 31): Promise<Cqe> {
    await this.ic();
    this.command(connectSqe(0xc0, sqsize), Buffer.alloc(1024));
    return this.nextCqe();
  }

  h2c(cccid: number, ttag: number, datao: number, data: Buffer, last: boolean): void {
    this.send(...encodeH2CData({ cccid, ttag, datao, last }, data, this.dg));
  }

  close(): void {
    this.socket.destroy();
  }
}
