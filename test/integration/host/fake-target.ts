/**
 * A small in-process NVMe/TCP target for host-library tests: it speaks the wire through
 * the project codec (controllerParser + encoders) and can be told to misbehave in the
 * ways a host must survive: C2H data split in pieces or completed by the SUCCESS flag,
 * writes pulled in several R2T windows, commands never answered, connections dropped,
 * async events, and outright lies (raw PDUs that break the rules, an ICResp the host did
 * not ask for). Memory-backed, one namespace. Not a conformance reference: that is nvmet.
 */
import net from 'node:net';
import {
  encodeIdentifyController,
  encodeIdentifyNamespace,
  encodeNsDescriptors,
  encodeActiveNsList,
  ID_CTRL,
} from '../../../engine/src/protocol/identify.js';
import { encodeAnaLog } from '../../../engine/src/protocol/logpages.js';
import {
  ADMIN,
  CNS,
  FABRICS_OPCODE,
  FCTYPE,
  IO,
  LID,
  NIDT,
  PROP,
} from '../../../engine/src/protocol/opcodes.js';
import { controllerParser } from '../../../engine/src/protocol/pdu-parser.js';
import {
  PduType,
  encodeC2HData,
  encodeCapsuleResp,
  encodeICResp,
  encodeR2T,
  type H2CPdu,
} from '../../../engine/src/protocol/pdu.js';
import {
  cdw,
  cdwPair,
  sqeCid,
  sqeFctype,
  sqeNsid,
  sqeOpcode,
} from '../../../engine/src/protocol/sqe.js';

export interface FakeTargetOptions {
  blockSize?: number;
  blocks?: number;
  /** Split C2H data into PDUs of this many bytes. */
  c2hPiece?: number;
  /** Complete reads with C2HData SUCCESS instead of a CapsuleResp. */
  c2hSuccess?: boolean;
  /** Largest R2TL per R2T (several R2Ts per write when smaller than the write). */
  r2tWindow?: number;
  maxh2cdata?: number;
  /** In-capsule data size announced (IOCCSZ*16-64). */
  inCapsule?: number;
  mqes?: number;
  /**
   * A lying target: the raw PDUs to send instead of the honest answer to an I/O read or
   * write (null: answer honestly). See LieContext.
   */
  lie?: (cmd: LieContext) => Buffer[] | null;
  /** ICResp fields that differ from what the host asked for. */
  icresp?: Partial<Parameters<typeof encodeICResp>[0]>;
  /** Never answer commands for which this returns true. */
  hold?: (opcode: number, qid: number) => boolean;
  /** Identify Controller ANATT, s (default 0: none given, the host assumes 10). */
  anatt?: number;
  /** Raw bytes to send right after the answer to an ANA log read, in the same TCP write
   * (one chunk for the host): a lie that fails the queue as the read completes. */
  afterAnaLog?: () => Buffer | null;
  /** The status to complete the `n`th admin command with this opcode (from 0) with
   * instead of running it; 0: run it. */
  adminStatus?: (op: number, n: number) => number;
  /** Sees the data of every H2CData PDU received, before anything else happens to it. */
  onH2CData?: (data: Buffer) => void;
  /** Identify Controller CRDT1..3 (100 ms units; default none). */
  crdt?: readonly number[];
  /** The status to complete the `n`th I/O command (from 0) with instead of running it;
   * 0: run it. */
  ioStatus?: (op: number, n: number) => number;
  /**
   * Present the namespace as a multipath one: shared (NMIC bit 0), with ANA reporting
   * (CMIC bit 3, one group, log 0x0C) in this state code (1 optimized, 2 non-optimized,
   * 3 inaccessible, 4 persistent loss, 0xF change); setAna() changes it. The state is
   * only reported: I/O is not refused by it (ioStatus does that).
   */
  ana?: number;
  /** Controller ID in Identify Controller (default 1). */
  cntlid?: number;
}

/** What a lie may use to build its PDUs. */
export interface LieContext {
  op: number;
  cid: number;
  /** For a read: the honest data. For a write: its in-capsule data, or empty. */
  data: Buffer;
  /** The connection's digest settings, to pass to the encoders. */
  dg: { hdgst: boolean; ddgst: boolean };
  /** Stops reading this connection (the host's writes back up) until resumeIo(). */
  pause(): void;
}

interface Conn {
  sock: net.Socket;
  qid: number;
  hdgst: boolean;
  ddgst: boolean;
  writes: Map<number, { slba: number; buf: Buffer; got: number; windowEnd: number }>;
}

export class FakeTarget {
  readonly memory: Buffer;
  readonly conns = new Set<Conn>();
  /** Commands seen per opcode on I/O queues, and the most in flight on one I/O queue. */
  ioCommands = 0;
  maxOutstanding = 0;
  /** FES of every H2CTermReq received. */
  readonly termReqs: number[] = [];
  /** FEI of every H2CTermReq received. */
  readonly termReqFeis: number[] = [];
  /** Opcodes of admin commands received, in order. */
  readonly adminOps: number[] = [];
  /** The data of each Set Features Host Behavior Support (0x16) received. */
  readonly hostBehavior: Buffer[] = [];
  private outstanding = new Map<Conn, number>();
  private aers: { conn: Conn; cid: number }[] = [];
  /** The namespace's NGUID; a new one makes it another namespace (for the next Identify). */
  nguid = Buffer.alloc(16, 0xab);
  private anaChanges = 0;
  private cc = 0;
  private server!: net.Server;
  port = 0;

  constructor(readonly o: FakeTargetOptions = {}) {
    this.memory = Buffer.alloc((o.blockSize ?? 512) * (o.blocks ?? 8192));
  }

  /** Listen on loopback, on `port` (default: any free one). */
  async start(port = 0): Promise<this> {
    this.server = net.createServer((s) => this.accept(s));
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject).listen(port, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    this.port = (this.server.address() as net.AddressInfo).port;
    return this;
  }

  async stop(): Promise<void> {
    this.dropAll();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  /** Destroy every connection (the host sees the controller vanish). */
  dropAll(): void {
    for (const c of this.conns) c.sock.destroy();
    this.conns.clear();
  }

  /** Reads again the connections a lie paused. */
  resumeIo(): void {
    for (const c of this.conns) c.sock.resume();
  }

  /** Complete the pending Async Event Request(s) with this dw0. */
  fireEvent(dw0: number): number {
    const pending = this.aers.splice(0);
    for (const a of pending) this.respond(a.conn, a.cid, 0, dw0);
    return pending.length;
  }

  /** Report ANA state `state` (FakeTargetOptions.ana) and send the ANA change event. */
  setAna(state: number): void {
    this.o.ana = state;
    this.anaChanges++;
    this.fireEvent(0x0c0302); // notice, ANA change, log 0x0C
  }

  private accept(sock: net.Socket): void {
    sock.setNoDelay(true);
    const conn: Conn = { sock, qid: -1, hdgst: false, ddgst: false, writes: new Map() };
    this.conns.add(conn);
    const parser = controllerParser(1 << 24);
    sock.on('data', (chunk: Buffer) => {
      sock.cork();
      const err = parser.feed(chunk, (pdu) => this.onPdu(conn, pdu, parser));
      if (err) sock.destroy();
      process.nextTick(() => sock.uncork());
    });
    sock.on('error', () => {});
    sock.on('close', () => this.conns.delete(conn));
  }

  private onPdu(c: Conn, pdu: H2CPdu, parser: ReturnType<typeof controllerParser>): void {
    if (pdu.type === PduType.ICReq) {
      c.hdgst = pdu.hdgst;
      c.ddgst = pdu.ddgst;
      const maxh2cdata = this.o.maxh2cdata ?? 131072;
      const honest = { cpda: 0, hdgst: c.hdgst, ddgst: c.ddgst, maxh2cdata };
      c.sock.write(encodeICResp({ ...honest, ...this.o.icresp }));
      parser.setDigests(c.hdgst, c.ddgst);
    } else if (pdu.type === PduType.H2CTermReq) {
      this.termReqs.push(pdu.fes);
      this.termReqFeis.push(pdu.fei);
    } else if (pdu.type === PduType.CapsuleCmd) {
      this.onCommand(c, pdu.sqe, pdu.data);
    } else if (pdu.type === PduType.H2CData) {
      this.o.onH2CData?.(pdu.data);
      const w = c.writes.get(pdu.cccid);
      if (!w) return; // a write a lie answered: the fake keeps no state for it
      pdu.data.copy(w.buf, pdu.datao);
      w.got += pdu.datal;
      if (w.got === w.buf.length) {
        c.writes.delete(pdu.cccid);
        w.buf.copy(this.memory, w.slba * this.bs);
        this.respond(c, pdu.cccid, 0);
      } else if (w.got === w.windowEnd) {
        this.sendR2T(c, pdu.cccid, w);
      }
    }
  }

  private get bs(): number {
    return this.o.blockSize ?? 512;
  }

  private respond(c: Conn, cid: number, status: number, dw0 = 0): void {
    if (c.qid > 0) this.outstanding.set(c, (this.outstanding.get(c) ?? 1) - 1);
    c.sock.write(encodeCapsuleResp({ dw0, dw1: 0, sqhd: 0, sqid: c.qid, cid, status }, c.hdgst));
  }

  private sendData(c: Conn, cid: number, data: Buffer): void {
    const piece = this.o.c2hPiece ?? data.length;
    for (let off = 0; off < data.length; off += piece) {
      const n = Math.min(piece, data.length - off);
      const last = off + n === data.length;
      const success = last && this.o.c2hSuccess === true;
      const f = { cccid: cid, datao: off, last, success };
      for (const b of encodeC2HData(f, data.subarray(off, off + n), c)) c.sock.write(b);
    }
    if (this.o.c2hSuccess) {
      if (c.qid > 0) this.outstanding.set(c, (this.outstanding.get(c) ?? 1) - 1);
    } else this.respond(c, cid, 0);
  }

  private sendR2T(c: Conn, cid: number, w: { buf: Buffer; got: number; windowEnd: number }) {
    const r2tl = Math.min(this.o.r2tWindow ?? w.buf.length, w.buf.length - w.got);
    w.windowEnd = w.got + r2tl;
    c.sock.write(encodeR2T({ cccid: cid, ttag: 7, r2to: w.got, r2tl }, c.hdgst));
  }

  private onCommand(c: Conn, sqe: Buffer, data: Buffer | null): void {
    const cid = sqeCid(sqe);
    const op = sqeOpcode(sqe);
    if (c.qid > 0) {
      this.ioCommands++;
      const n = (this.outstanding.get(c) ?? 0) + 1;
      this.outstanding.set(c, n);
      this.maxOutstanding = Math.max(this.maxOutstanding, n);
    }
    if (this.o.hold?.(op, c.qid)) return;
    if (op === FABRICS_OPCODE) return this.onFabrics(c, sqe, cid);
    if (c.qid === 0) return this.onAdmin(c, sqe, cid, op, data);
    const refused = this.o.ioStatus?.(op, this.ioCommands - 1) ?? 0;
    if (refused !== 0) return this.respond(c, cid, refused);
    const slba = cdwPair(sqe, 10);
    const nlb = (cdw(sqe, 12) & 0xffff) + 1;
    if (this.o.lie && (op === IO.READ || op === IO.WRITE)) {
      const off = slba * this.bs;
      const honest = op === IO.READ ? this.memory.subarray(off, off + nlb * this.bs) : data;
      const dg = { hdgst: c.hdgst, ddgst: c.ddgst };
      const pause = () => void c.sock.pause();
      const pdus = this.o.lie({ op, cid, data: Buffer.from(honest ?? []), dg, pause });
      if (pdus) {
        for (const b of pdus) c.sock.write(b);
        return;
      }
    }
    if (op === IO.READ) {
      const off = slba * this.bs;
      return this.sendData(c, cid, Buffer.from(this.memory.subarray(off, off + nlb * this.bs)));
    }
    if (op === IO.WRITE) {
      if (data) {
        data.copy(this.memory, slba * this.bs);
        return this.respond(c, cid, 0);
      }
      const w = { slba, buf: Buffer.alloc(nlb * this.bs), got: 0, windowEnd: 0 };
      c.writes.set(cid, w);
      return this.sendR2T(c, cid, w);
    }
    if (op === IO.WRITE_ZEROES) this.memory.fill(0, slba * this.bs, (slba + nlb) * this.bs);
    this.respond(c, cid, op === IO.FLUSH || op === IO.WRITE_ZEROES || op === IO.DSM ? 0 : 0x4001);
  }

  private onFabrics(c: Conn, sqe: Buffer, cid: number): void {
    const fctype = sqeFctype(sqe);
    if (fctype === FCTYPE.CONNECT) {
      c.qid = sqe.readUInt16LE(42);
      return this.respond(c, cid, 0, this.o.cntlid ?? 1);
    }
    const offset = cdw(sqe, 11);
    if (fctype === FCTYPE.PROPERTY_SET) {
      if (offset === PROP.CC) this.cc = cdw(sqe, 12);
      return this.respond(c, cid, 0);
    }
    const value =
      offset === PROP.CAP
        ? ((this.o.mqes ?? 1024) - 1) | (1 << 24)
        : offset === PROP.VS
          ? 0x10300
          : offset === PROP.CSTS
            ? (this.cc & 1) | ((this.cc >> 14) & 3 ? 8 : 0)
            : this.cc;
    const dw1 = offset === PROP.CAP ? 1 << 5 : 0;
    c.sock.write(encodeCapsuleResp({ dw0: value, dw1, sqhd: 0, sqid: 0, cid, status: 0 }, c.hdgst));
  }

  private onAdmin(c: Conn, sqe: Buffer, cid: number, op: number, data: Buffer | null): void {
    const n = this.adminOps.filter((o) => o === op).length;
    this.adminOps.push(op);
    const refused = this.o.adminStatus?.(op, n) ?? 0;
    if (refused !== 0) return this.respond(c, cid, refused);
    if (op === ADMIN.SET_FEATURES && (cdw(sqe, 10) & 0xff) === 0x16 && data) {
      this.hostBehavior.push(Buffer.from(data));
    }
    if (op === ADMIN.ASYNC_EVENT) return void this.aers.push({ conn: c, cid });
    if (op === ADMIN.IDENTIFY) return this.sendData(c, cid, this.identify(cdw(sqe, 10) & 0xff));
    if (op === ADMIN.GET_LOG_PAGE) {
      const len = ((cdw(sqe, 10) >>> 16) + (cdw(sqe, 11) & 0xffff) * 0x10000 + 1) * 4;
      if ((cdw(sqe, 10) & 0xff) === LID.ANA && this.o.ana !== undefined) {
        const lpo = cdwPair(sqe, 12);
        const log = Buffer.alloc(lpo + len);
        this.anaLog().copy(log);
        const after = this.o.afterAnaLog?.() ?? null;
        if (after) c.sock.cork();
        this.sendData(c, cid, log.subarray(lpo));
        if (after) {
          c.sock.write(after);
          c.sock.uncork();
        }
        return;
      }
      return this.sendData(c, cid, Buffer.alloc(len, sqeNsid(sqe) & 0xff));
    }
    if (op === ADMIN.SET_FEATURES && (cdw(sqe, 10) & 0xff) === 0x07) {
      return this.respond(c, cid, 0, cdw(sqe, 11)); // grant what was asked
    }
    this.respond(c, cid, 0);
  }

  private anaLog(): Buffer {
    const group = { grpid: 1, chgcnt: this.anaChanges, state: this.o.ana!, nsids: [1] };
    return encodeAnaLog(this.anaChanges, [group], false);
  }

  private identify(cns: number): Buffer {
    const ana = this.o.ana !== undefined;
    if (cns === CNS.CTRL) {
      const inCapsule = this.o.inCapsule ?? 8192;
      const id = encodeIdentifyController({
        sn: 'FAKE1',
        mn: 'fake target',
        fr: '1.0',
        rab: 0,
        cmic: ana ? 0x08 : 0,
        mdts: 0,
        cntlid: this.o.cntlid ?? 1,
        ver: 0x10300,
        oaes: 1 << 8,
        ctratt: 0,
        cntrltype: 1,
        acl: 3,
        aerl: 3,
        frmw: 0,
        lpa: 0,
        elpe: 0,
        kas: 10,
        anatt: this.o.anatt ?? 0,
        anacap: ana ? 0x1f : 0,
        anagrpmax: ana ? 1 : 0,
        nanagrpid: ana ? 1 : 0,
        sqes: 0x66,
        cqes: 0x44,
        maxcmd: 0,
        nn: 1,
        oncs: 0xc,
        vwc: 1,
        sgls: 1 | (1 << 20),
        mnan: ana ? 1 : 0,
        subnqn: 'nqn.fake',
        ioccsz: (inCapsule + 64) / 16,
        iorcsz: 1,
        icdoff: 0,
        msdbd: 1,
      });
      (this.o.crdt ?? []).forEach((t, i) => id.writeUInt16LE(t, ID_CTRL.crdt + 2 * i));
      return id;
    }
    if (cns === CNS.NS) {
      const blocks = this.memory.length / this.bs;
      return encodeIdentifyNamespace({
        nsze: blocks,
        ncap: blocks,
        nuse: blocks,
        nsfeat: 0,
        nmic: ana ? 1 : 0,
        dlfeat: 0,
        anagrpid: ana ? 1 : 0,
        nsattr: 0,
        nguid: this.nguid,
        eui64: Buffer.alloc(8),
        lbads: Math.log2(this.bs),
      });
    }
    if (cns === CNS.NS_ACTIVE_LIST) return encodeActiveNsList([1], 0);
    return encodeNsDescriptors([{ nidt: NIDT.UUID, nid: Buffer.alloc(16, 0x11) }]);
  }
}
