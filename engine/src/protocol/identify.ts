/**
 * Identify data structures (4096 bytes each): Controller (CNS 1), Namespace (CNS 0),
 * active NSID list (CNS 2) and NS identification descriptors (CNS 3). Pure encoders
 * plus decoders of the fields hosts check, for our host library and tests.
 * Offsets: NVMe base spec, as laid out in Linux's struct nvme_id_ctrl / nvme_id_ns.
 */
import { IDENTIFY_DATA_SIZE, NIDT, NQN_FIELD_SIZE } from './opcodes.js';

export interface IdentifyControllerFields {
  readonly sn: string;
  readonly mn: string;
  readonly fr: string;
  readonly rab: number;
  readonly cmic: number;
  readonly mdts: number;
  readonly cntlid: number;
  readonly ver: number;
  readonly oaes: number;
  readonly ctratt: number;
  /** 1 I/O controller, 2 discovery controller. */
  readonly cntrltype: number;
  readonly acl: number;
  readonly aerl: number;
  readonly frmw: number;
  readonly lpa: number;
  readonly elpe: number;
  /** Keep-alive granularity in 100 ms units. */
  readonly kas: number;
  readonly anatt: number;
  readonly anacap: number;
  readonly anagrpmax: number;
  readonly nanagrpid: number;
  readonly sqes: number;
  readonly cqes: number;
  readonly maxcmd: number;
  readonly nn: number;
  readonly oncs: number;
  readonly vwc: number;
  readonly sgls: number;
  readonly mnan: number;
  readonly subnqn: string;
  /** In-capsule command size in 16-byte units (SQE included). */
  readonly ioccsz: number;
  readonly iorcsz: number;
  readonly icdoff: number;
  readonly msdbd: number;
}

/** Byte offsets of Identify Controller fields. */
export const ID_CTRL = {
  sn: 4,
  mn: 24,
  fr: 64,
  rab: 72,
  cmic: 76,
  mdts: 77,
  cntlid: 78,
  ver: 80,
  oaes: 92,
  ctratt: 96,
  /** CRDT1..3, u16 each (100 ms units): decoded by the host only (admin.ts). */
  crdt: 134,
  cntrltype: 111,
  acl: 258,
  aerl: 259,
  frmw: 260,
  lpa: 261,
  elpe: 262,
  kas: 320,
  anatt: 342,
  anacap: 343,
  anagrpmax: 344,
  nanagrpid: 348,
  sqes: 512,
  cqes: 513,
  maxcmd: 514,
  nn: 516,
  oncs: 520,
  vwc: 525,
  sgls: 536,
  mnan: 540,
  subnqn: 768,
  ioccsz: 1792,
  iorcsz: 1796,
  icdoff: 1800,
  msdbd: 1803,
} as const;

export function encodeIdentifyController(f: IdentifyControllerFields): Buffer {
  const b = Buffer.alloc(IDENTIFY_DATA_SIZE);
  writeAscii(b, ID_CTRL.sn, 20, f.sn);
  writeAscii(b, ID_CTRL.mn, 40, f.mn);
  writeAscii(b, ID_CTRL.fr, 8, f.fr);
  b[ID_CTRL.rab] = f.rab;
  b[ID_CTRL.cmic] = f.cmic;
  b[ID_CTRL.mdts] = f.mdts;
  b.writeUInt16LE(f.cntlid, ID_CTRL.cntlid);
  b.writeUInt32LE(f.ver >>> 0, ID_CTRL.ver);
  b.writeUInt32LE(f.oaes >>> 0, ID_CTRL.oaes);
  b.writeUInt32LE(f.ctratt >>> 0, ID_CTRL.ctratt);
  b[ID_CTRL.cntrltype] = f.cntrltype;
  b[ID_CTRL.acl] = f.acl;
  b[ID_CTRL.aerl] = f.aerl;
  b[ID_CTRL.frmw] = f.frmw;
  b[ID_CTRL.lpa] = f.lpa;
  b[ID_CTRL.elpe] = f.elpe;
  b.writeUInt16LE(f.kas, ID_CTRL.kas);
  b[ID_CTRL.anatt] = f.anatt;
  b[ID_CTRL.anacap] = f.anacap;
  b.writeUInt32LE(f.anagrpmax >>> 0, ID_CTRL.anagrpmax);
  b.writeUInt32LE(f.nanagrpid >>> 0, ID_CTRL.nanagrpid);
  b[ID_CTRL.sqes] = f.sqes;
  b[ID_CTRL.cqes] = f.cqes;
  b.writeUInt16LE(f.maxcmd, ID_CTRL.maxcmd);
  b.writeUInt32LE(f.nn >>> 0, ID_CTRL.nn);
  b.writeUInt16LE(f.oncs, ID_CTRL.oncs);
  b[ID_CTRL.vwc] = f.vwc;
  b.writeUInt32LE(f.sgls >>> 0, ID_CTRL.sgls);
  b.writeUInt32LE(f.mnan >>> 0, ID_CTRL.mnan);
  b.write(f.subnqn, ID_CTRL.subnqn, NQN_FIELD_SIZE - 1, 'utf8');
  b.writeUInt32LE(f.ioccsz >>> 0, ID_CTRL.ioccsz);
  b.writeUInt32LE(f.iorcsz >>> 0, ID_CTRL.iorcsz);
  b.writeUInt16LE(f.icdoff, ID_CTRL.icdoff);
  b[ID_CTRL.msdbd] = f.msdbd;
  return b;
}

/** Reads back every field encodeIdentifyController writes. */
export function decodeIdentifyController(b: Buffer): IdentifyControllerFields {
  const u8 = (at: number): number => b[at]!;
  return {
    sn: readAscii(b, ID_CTRL.sn, 20),
    mn: readAscii(b, ID_CTRL.mn, 40),
    fr: readAscii(b, ID_CTRL.fr, 8),
    rab: u8(ID_CTRL.rab),
    cmic: u8(ID_CTRL.cmic),
    mdts: u8(ID_CTRL.mdts),
    cntlid: b.readUInt16LE(ID_CTRL.cntlid),
    ver: b.readUInt32LE(ID_CTRL.ver),
    oaes: b.readUInt32LE(ID_CTRL.oaes),
    ctratt: b.readUInt32LE(ID_CTRL.ctratt),
    cntrltype: u8(ID_CTRL.cntrltype),
    acl: u8(ID_CTRL.acl),
    aerl: u8(ID_CTRL.aerl),
    frmw: u8(ID_CTRL.frmw),
    lpa: u8(ID_CTRL.lpa),
    elpe: u8(ID_CTRL.elpe),
    kas: b.readUInt16LE(ID_CTRL.kas),
    anatt: u8(ID_CTRL.anatt),
    anacap: u8(ID_CTRL.anacap),
    anagrpmax: b.readUInt32LE(ID_CTRL.anagrpmax),
    nanagrpid: b.readUInt32LE(ID_CTRL.nanagrpid),
    sqes: u8(ID_CTRL.sqes),
    cqes: u8(ID_CTRL.cqes),
    maxcmd: b.readUInt16LE(ID_CTRL.maxcmd),
    nn: b.readUInt32LE(ID_CTRL.nn),
    oncs: b.readUInt16LE(ID_CTRL.oncs),
    vwc: u8(ID_CTRL.vwc),
    sgls: b.readUInt32LE(ID_CTRL.sgls),
    mnan: b.readUInt32LE(ID_CTRL.mnan),
    subnqn: readNul(b, ID_CTRL.subnqn, NQN_FIELD_SIZE),
    ioccsz: b.readUInt32LE(ID_CTRL.ioccsz),
    iorcsz: b.readUInt32LE(ID_CTRL.iorcsz),
    icdoff: b.readUInt16LE(ID_CTRL.icdoff),
    msdbd: u8(ID_CTRL.msdbd),
  };
}

export interface IdentifyNamespaceFields {
  /** Size, capacity and utilization in logical blocks. */
  readonly nsze: number;
  readonly ncap: number;
  readonly nuse: number;
  readonly nsfeat: number;
  readonly nmic: number;
  readonly dlfeat: number;
  readonly anagrpid: number;
  readonly nsattr: number;
  readonly nguid: Buffer;
  readonly eui64: Buffer;
  /** log2 of the logical block size (LBAF0.LBADS); NLBAF and FLBAS are 0. */
  readonly lbads: number;
}

export const ID_NS = {
  nsze: 0,
  ncap: 8,
  nuse: 16,
  nsfeat: 24,
  nlbaf: 25,
  flbas: 26,
  nmic: 30,
  dlfeat: 33,
  anagrpid: 92,
  nsattr: 99,
  nguid: 104,
  eui64: 120,
  lbaf0: 128,
} as const;

export function encodeIdentifyNamespace(f: IdentifyNamespaceFields): Buffer {
  const b = Buffer.alloc(IDENTIFY_DATA_SIZE);
  b.writeBigUInt64LE(BigInt(f.nsze), ID_NS.nsze);
  b.writeBigUInt64LE(BigInt(f.ncap), ID_NS.ncap);
  b.writeBigUInt64LE(BigInt(f.nuse), ID_NS.nuse);
  b[ID_NS.nsfeat] = f.nsfeat;
  b[ID_NS.nlbaf] = 0;
  b[ID_NS.flbas] = 0;
  b[ID_NS.nmic] = f.nmic;
  b[ID_NS.dlfeat] = f.dlfeat;
  b.writeUInt32LE(f.anagrpid >>> 0, ID_NS.anagrpid);
  b[ID_NS.nsattr] = f.nsattr;
  f.nguid.copy(b, ID_NS.nguid, 0, 16);
  f.eui64.copy(b, ID_NS.eui64, 0, 8);
  // LBAF0: MS u16 = 0, LBADS u8, RP u8 = 0 (best performance).
  b[ID_NS.lbaf0 + 2] = f.lbads;
  return b;
}

export function decodeIdentifyNamespace(b: Buffer): IdentifyNamespaceFields & {
  nlbaf: number;
  flbas: number;
} {
  return {
    nsze: Number(b.readBigUInt64LE(ID_NS.nsze)),
    ncap: Number(b.readBigUInt64LE(ID_NS.ncap)),
    nuse: Number(b.readBigUInt64LE(ID_NS.nuse)),
    nsfeat: b[ID_NS.nsfeat]!,
    nlbaf: b[ID_NS.nlbaf]!,
    flbas: b[ID_NS.flbas]!,
    nmic: b[ID_NS.nmic]!,
    dlfeat: b[ID_NS.dlfeat]!,
    anagrpid: b.readUInt32LE(ID_NS.anagrpid),
    nsattr: b[ID_NS.nsattr]!,
    nguid: Buffer.from(b.subarray(ID_NS.nguid, ID_NS.nguid + 16)),
    eui64: Buffer.from(b.subarray(ID_NS.eui64, ID_NS.eui64 + 8)),
    lbads: b[ID_NS.lbaf0 + 2]!,
  };
}

/** CNS 2: up to 1024 active NSIDs greater than `after`, ascending, zero-terminated. */
export function encodeActiveNsList(nsids: readonly number[], after: number): Buffer {
  const b = Buffer.alloc(IDENTIFY_DATA_SIZE);
  let at = 0;
  for (const nsid of [...nsids].sort((x, y) => x - y)) {
    if (nsid <= after) continue;
    if (at >= IDENTIFY_DATA_SIZE) break;
    b.writeUInt32LE(nsid, at);
    at += 4;
  }
  return b;
}

export function decodeActiveNsList(b: Buffer): number[] {
  const out: number[] = [];
  for (let at = 0; at + 4 <= b.length; at += 4) {
    const nsid = b.readUInt32LE(at);
    if (nsid === 0) break;
    out.push(nsid);
  }
  return out;
}

export interface NsDescriptor {
  /** NIDT: 1 EUI64, 2 NGUID, 3 UUID, 4 CSI. */
  readonly nidt: number;
  readonly nid: Buffer;
}

const NIDL: Record<number, number> = {
  [NIDT.EUI64]: 8,
  [NIDT.NGUID]: 16,
  [NIDT.UUID]: 16,
  [NIDT.CSI]: 1,
};

/** CNS 3: NIDT u8, NIDL u8, 2 reserved bytes, NID; zero after the last entry. */
export function encodeNsDescriptors(descs: readonly NsDescriptor[]): Buffer {
  const b = Buffer.alloc(IDENTIFY_DATA_SIZE);
  let at = 0;
  for (const d of descs) {
    const nidl = NIDL[d.nidt];
    if (nidl === undefined || d.nid.length !== nidl) {
      throw new Error(
        `NS descriptor type ${d.nidt} needs ${nidl ?? '?'} bytes, got ${d.nid.length}`,
      );
    }
    b[at] = d.nidt;
    b[at + 1] = nidl;
    d.nid.copy(b, at + 4);
    at += 4 + nidl;
  }
  return b;
}

export function decodeNsDescriptors(b: Buffer): NsDescriptor[] {
  const out: NsDescriptor[] = [];
  let at = 0;
  while (at + 4 <= b.length && b[at] !== 0) {
    const nidl = b[at + 1]!;
    out.push({ nidt: b[at]!, nid: Buffer.from(b.subarray(at + 4, at + 4 + nidl)) });
    at += 4 + nidl;
  }
  return out;
}

/** ASCII, space padded (SN, MN, FR). */
function writeAscii(b: Buffer, at: number, len: number, s: string): void {
  b.fill(0x20, at, at + len);
  b.write(s.slice(0, len), at, len, 'ascii');
}

function readAscii(b: Buffer, at: number, len: number): string {
  return b.toString('ascii', at, at + len).trimEnd();
}

function readNul(b: Buffer, at: number, len: number): string {
  const field = b.subarray(at, at + len);
  const nul = field.indexOf(0);
  return field.toString('utf8', 0, nul < 0 ? len : nul);
}
