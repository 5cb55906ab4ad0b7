/**
 * A raw, scripted NVMe/TCP peer on a real socket, built on the protocol codec: it sends
 * exactly the bytes a test asks for (valid PDUs, mutated PDUs, junk) and records every
 * PDU the target sends back, its parse errors and when the connection closes. Used by the
 * transport unit tests (against a fake core) and by the robustness tests (against a
 * live `branchsan export`), which also use the NVMe builders below (Connect, Property
 * Set/Get, Read/Write SQEs).
 *
 * (Moved here from test/unit/transport/test-host.ts, which keeps the fake core.)
 */
import net from 'node:net';
import {
  encodeCapsuleCmd,
  encodeH2CData,
  encodeICReq,
  PduType,
  type C2HPdu,
  type Digests,
  type ICRespPdu,
  type TermReqPdu,
} from '../../engine/src/protocol/pdu.js';
import { hostParser, type PduError } from '../../engine/src/protocol/pdu-parser.js';
import {
  readCqe,
  setSgl,
  SGL_DATA_BLOCK_OFFSET,
  SGL_TRANSPORT_DATA_BLOCK,
  type Cqe,
} from '../../engine/src/protocol/pdu-capsule.js';
import {
  CNTLID_DYNAMIC,
  CONNECT_DATA_SIZE,
  FABRICS_OPCODE,
  FCTYPE,
  PROP,
} from '../../engine/src/protocol/opcodes.js';
import { encodeConnectData, encodeSqe } from '../../engine/src/protocol/sqe.js';

// ---- SQE builders ----

/** A bare SQE: opcode, CID and one SGL descriptor (PSDT 01b); everything else zero. */
export function sqe(op: number, cid: number, sgl = SGL_TRANSPORT_DATA_BLOCK, len = 0): Buffer {
  const s = Buffer.alloc(64);
  s[0] = op;
  s.writeUInt16LE(cid, 2);
  setSgl(s, sgl, len);
  return s;
}

/** Fabrics Connect SQE with its 1024-byte data in-capsule (or via R2T with `sgl` 0x5A). */
export function connectSqe(
  cid: number,
  sqsize: number,
  qid = 1,
  kato = 0,
  sgl = SGL_DATA_BLOCK_OFFSET,
): Buffer {
  const s = sqe(FABRICS_OPCODE, cid, sgl, CONNECT_DATA_SIZE);
  s[4] = FCTYPE.CONNECT;
  s.writeUInt16LE(qid, 42);
  s.writeUInt16LE(sqsize, 44);
  s.writeUInt32LE(kato, 48);
  return s;
}

/** The 1024-byte Connect data block. */
export function connectData(o: {
  subnqn: string;
  hostnqn: string;
  cntlid?: number;
  hostid?: Buffer;
}): Buffer {
  return encodeConnectData({
    hostid: o.hostid ?? Buffer.alloc(16, 0x5a),
    cntlid: o.cntlid ?? CNTLID_DYNAMIC,
    subnqn: o.subnqn,
    hostnqn: o.hostnqn,
  });
}

/** Property Set (4-byte) of `offset` to `value`. */
export function propertySetSqe(cid: number, offset: number, value: number): Buffer {
  return encodeSqe({
    opcode: FABRICS_OPCODE,
    fctype: FCTYPE.PROPERTY_SET,
    cid,
    cdw11: offset,
    cdw12: value,
  });
}

/** Property Get (4-byte) of `offset`. */
export function propertyGetSqe(cid: number, offset: number): Buffer {
  return encodeSqe({ opcode: FABRICS_OPCODE, fctype: FCTYPE.PROPERTY_GET, cid, cdw11: offset });
}

/**
 * An NVM Read/Write/Compare SQE: SLBA, NLB (1's based here), SGL of `sglLength` bytes
 * (default nlb * blockSize) of type `sgl` (0x5A transport, or 0x01 for in-capsule).
 */
export function rwSqe(o: {
  opcode: number;
  cid: number;
  nsid: number;
  slba: number;
  nlb: number;
  blockSize?: number;
  sglLength?: number;
  sgl?: number;
  fua?: boolean;
}): Buffer {
  return encodeSqe({
    opcode: o.opcode,
    cid: o.cid,
    nsid: o.nsid,
    sglType: o.sgl ?? SGL_TRANSPORT_DATA_BLOCK,
    sglLength: o.sglLength ?? o.nlb * (o.blockSize ?? 512),
    cdw10: o.slba % 0x1_0000_0000,
    cdw11: Math.floor(o.slba / 0x1_0000_0000),
    cdw12: ((o.nlb - 1) & 0xffff) | (o.fua ? 1 << 30 : 0),
  });
}

// ---- the scripted host ----

type Dist<P, T> = P extends { type: infer U } ? (T extends U ? P : never) : never;
/** The PDU shape(s) with this type code (TermReq's type is a union of two codes). */
export type PduOf<T> = Dist<C2HPdu, T>;

/** Everything a connection produced until it closed (see RawHost.settle). */
export interface Outcome {
  readonly pdus: C2HPdu[];
  /** The C2HTermReq, if the target sent one (it must then be the last PDU). */
  readonly term: TermReqPdu | null;
  readonly closed: boolean;
  readonly parseError: PduError | null;
}

export class RawHost {
  readonly socket: net.Socket;
  dg: Digests = { hdgst: false, ddgst: false };
  private readonly parser = hostParser(1 << 20);
  private readonly inbox: C2HPdu[] = [];
  /** Every PDU received, in order (the inbox is consumed by next()). */
  readonly received: C2HPdu[] = [];
  private waiter: (() => void) | null = null;
  parseError: PduError | null = null;
  isClosed = false;
  closed: Promise<void>;

  private constructor(socket: net.Socket) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => {
      const err = this.parser.feed(c, (p) => {
        if (p.type === PduType.ICResp) this.parser.setDigests(p.hdgst, p.ddgst);
        this.inbox.push(p);
        this.received.push(p);
      });
      if (err) this.parseError = err;
      this.wake();
    });
    socket.on('error', () => {});
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.isClosed = true;
        this.wake();
        resolve();
      }),
    );
  }

  /** `localAddress`: the source address (another 127.x.y.z plays another machine). */
  static connect(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawHost> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ host, port, localAddress }, () => {
        s.off('error', reject);
        resolve(new RawHost(s));
      });
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

  async nextOf<T extends C2HPdu['type']>(type: T, timeoutMs = 5000): Promise<PduOf<T>> {
    const p = await this.next(timeoutMs);
    if (p.type !== type) throw new Error(`expected PDU type ${type}, got ${describe(p)}`);
    return p as PduOf<T>;
  }

  async nextCqe(timeoutMs = 5000): Promise<Cqe> {
    return readCqe((await this.nextOf(PduType.CapsuleResp, timeoutMs)).cqe);
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

  /** IC exchange, then a Connect of `qid` with `data` (default: all zero, for fake cores). */
  async connectQueue(
    sqsize = 31,
    data: Buffer = Buffer.alloc(CONNECT_DATA_SIZE),
    qid = 1,
    kato = 0,
    /** Connect attributes (SQE byte 46): bit 2 disables SQ flow control. */
    cattr = 0,
  ): Promise<Cqe> {
    await this.ic();
    const s = connectSqe(0xc0, sqsize, qid, kato);
    s[46] = cattr;
    this.command(s, data);
    return this.nextCqe();
  }

  h2c(cccid: number, ttag: number, datao: number, data: Buffer, last: boolean): void {
    this.send(...encodeH2CData({ cccid, ttag, datao, last }, data, this.dg));
  }

  /**
   * Wait until the target closes the connection (at most timeoutMs; `halfClose` first
   * sends our FIN, so a target waiting for more bytes must close too) and report what
   * arrived; `term` is the first TermReq (callers check that it came last).
   */
  async settle(timeoutMs = 10_000, halfClose = false): Promise<Outcome> {
    if (halfClose && !this.socket.destroyed) this.socket.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.closed,
      new Promise<void>((r) => {
        timer = setTimeout(r, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    const termAt = this.received.findIndex(
      (p) => p.type === PduType.C2HTermReq || p.type === PduType.H2CTermReq,
    );
    const term = termAt >= 0 ? (this.received[termAt] as TermReqPdu) : null;
    return {
      pdus: [...this.received],
      term,
      closed: this.isClosed,
      parseError: this.parseError,
    };
  }

  close(): void {
    this.socket.destroy();
  }
}

/** A short description of a PDU for failure messages. */
export function describe(p: C2HPdu): string {
  switch (p.type) {
    case PduType.CapsuleResp:
      return `CapsuleResp ${JSON.stringify(readCqe(p.cqe))}`;
    case PduType.C2HTermReq:
    case PduType.H2CTermReq:
      return `TermReq fes ${p.fes} fei ${p.fei}`;
    case PduType.C2HData:
      return `C2HData cccid ${p.cccid} datao ${p.datao} datal ${p.datal}`;
    case PduType.R2T:
      return `R2T cccid ${p.cccid} ttag ${p.ttag} r2to ${p.r2to} r2tl ${p.r2tl}`;
    default:
      return `PDU type ${p.type}`;
  }
}

// ---- bringing up a real controller by hand ----

/** CC for an I/O controller: EN, CSS 0, MPS 0, AMS 0, IOSQES 6, IOCQES 4. */
export const CC_ENABLE = 0x00460001;

/** IC exchange and admin Connect; resolves with the Connect CQE (dw0 = CNTLID on success). */
export async function adminConnect(
  h: RawHost,
  o: { subnqn: string; hostnqn: string; dg?: Digests; kato?: number; sqsize?: number },
): Promise<Cqe> {
  await h.ic(o.dg ?? h.dg);
  h.command(
    connectSqe(1, o.sqsize ?? 31, 0, o.kato ?? 0),
    connectData({ subnqn: o.subnqn, hostnqn: o.hostnqn }),
  );
  return h.nextCqe();
}

/** CC.EN = 1, then poll CSTS until RDY (the controller's own CSTS.RDY, not a timer). */
export async function enableController(h: RawHost): Promise<void> {
  h.command(propertySetSqe(2, PROP.CC, CC_ENABLE));
  const set = await h.nextCqe();
  if (set.status !== 0) throw new Error(`Property Set CC failed: 0x${set.status.toString(16)}`);
  for (let i = 0; i < 100; i++) {
    h.command(propertyGetSqe(3, PROP.CSTS));
    const c = await h.nextCqe();
    if (c.status === 0 && (c.dw0 & 1) === 1) return;
    if (c.dw0 & 2) throw new Error('controller fatal status (CSTS.CFS)');
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error('CSTS.RDY never became 1');
}

/** IC exchange and I/O queue Connect for controller `cntlid`; resolves with the CQE. */
export async function ioConnect(
  h: RawHost,
  o: { subnqn: string; hostnqn: string; cntlid: number; qid: number; dg?: Digests },
): Promise<Cqe> {
  await h.ic(o.dg ?? h.dg);
  h.command(
    connectSqe(1, 31, o.qid, 0),
    connectData({ subnqn: o.subnqn, hostnqn: o.hostnqn, cntlid: o.cntlid }),
  );
  return h.nextCqe();
}
