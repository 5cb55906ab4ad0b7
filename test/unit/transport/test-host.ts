/**
 * Test doubles for the TCP transport: a small fake CoreTarget with made-up commands.
 * The scripted NVMe/TCP host on a real socket is test/helpers/raw-nvme.ts (RawHost).
 */
import type {
  Completion,
  CoreQueue,
  CoreTarget,
  ParseResult,
  QueueOwner,
  TransportQueue,
} from '../../../engine/src/core/seam.js';
import { SGL_TRANSPORT_DATA_BLOCK } from '../../../engine/src/protocol/pdu-capsule.js';
import { sqe } from '../../helpers/raw-nvme.js';
import { SC, DNR } from '../../../engine/src/protocol/status.js';
import { IN_CAPSULE_DATA_SIZE } from '../../../engine/src/protocol/tcp-limits.js';

// ---- made-up command set of the fake core ----
export const OP = {
  /** Write sglLength bytes; dw0 = number of bytes received. */
  WRITE: 0x01,
  /** Read cdw12 bytes of pattern(cdw10); cdw11 holds READ_HOW flags. */
  READ: 0x02,
  /** Complete only when the test calls release(). */
  HOLD: 0x03,
  KEEP_ALIVE: 0x18,
  /** parse() fails with Invalid Opcode. Odd: host to controller, so in-capsule data reaches parse. */
  BAD: 0xed,
  /** parse() throws. */
  THROW: 0xef,
  FABRICS: 0x7f,
} as const;

/** How the fake core completes OP.READ (cdw11). */
export const READ_HOW = {
  /** Fill the buffer the transport offers and complete with it (the zero-copy path). */
  INTO: 1,
  /** Fail with Internal Error. */
  FAIL: 2,
  /** Succeed with dw0 = 0x1234 (a CQE that says more than "success"). */
  DW0: 4,
  /** Complete inside exec, as the core answers a log page: it never counts as in flight. */
  SYNC: 8,
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
  /** The data buffers writes were executed with, as handed over (not copies). */
  writeBufs: Buffer[] = [];
  /** Hold write completions in heldWrites until released. */
  holdWrites = false;
  heldWrites: (() => void)[] = [];
  held: Completion[] = [];
  /** For each OP.READ: the length of the buffer the transport offered, or null. */
  offers: (number | null)[] = [];
  /** The buffers offered, in order (to see frames come back). */
  intos: (Buffer | null)[] = [];
  /** For each OP.HOLD: the memory its SQE arrived in (the received chunk), weakly. */
  holdChunks: WeakRef<ArrayBufferLike>[] = [];

  constructor(readonly tq: TransportQueue) {}

  owner(): QueueOwner | null {
    return null;
  }

  parse(sqe: Buffer, sglLength: number): ParseResult {
    this.parsed++;
    const op = sqe[0]!;
    switch (op) {
      case OP.FABRICS: {
        // Connect: 1024 bytes in-capsule; sets the queue size. No closure here refers to
        // sqe: one that did would keep it (and its chunk) alive for every closure of this
        // call, the held ones included.
        const size = sqe.readUInt16LE(44) + 1;
        return {
          kind: 'exec',
          dir: 'h2c',
          length: sglLength,
          exec: (_data, done) => {
            this.tq.setQueueSize(size);
            done(0, 1);
          },
        };
      }
      case OP.WRITE:
        return {
          kind: 'exec',
          dir: 'h2c',
          length: sglLength,
          exec: (data, done) => {
            this.writes.push(Buffer.from(data!));
            this.writeBufs.push(data!);
            if (this.holdWrites) this.heldWrites.push(() => done(0, data!.length));
            else done(0, data!.length);
          },
        };
      case OP.READ: {
        const len = sqe.readUInt32LE(48);
        const seed = sqe.readUInt32LE(40);
        const how = sqe.readUInt32LE(44);
        return {
          kind: 'exec',
          dir: 'c2h',
          length: len,
          exec: (into, done) => {
            const complete = () => {
              this.offers.push(into ? into.length : null);
              this.intos.push(into);
              if (how & READ_HOW.FAIL) return done(SC.INTERNAL | DNR);
              const data = pattern(len, seed);
              const out = how & READ_HOW.INTO && into ? (data.copy(into), into) : data;
              done(0, how & READ_HOW.DW0 ? 0x1234 : 0, 0, out);
            };
            if (how & READ_HOW.SYNC) complete();
            else setImmediate(complete);
          },
        };
      }
      case OP.HOLD:
        this.holdChunks.push(new WeakRef(sqe.buffer));
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
  /** What the transport accepts in a capsule (the real core's IOCCSZ). */
  inCapsuleBytes = IN_CAPSULE_DATA_SIZE;
  openQueue(tq: TransportQueue): CoreQueue {
    const q = new FakeQueue(tq);
    this.queues.push(q);
    return q;
  }
}

export function readSqe(cid: number, len: number, seed: number, how = 0): Buffer {
  const s = sqe(OP.READ, cid, SGL_TRANSPORT_DATA_BLOCK, len);
  s.writeUInt32LE(seed, 40);
  s.writeUInt32LE(how, 44);
  s.writeUInt32LE(len, 48);
  return s;
}
