/**
 * Admin helpers over any Submitter bound to an admin queue: Identify (controller,
 * namespace, active list, descriptors), Get Log Page, Get/Set Features, and the parsed
 * shapes callers need. Decoding reuses protocol/identify.ts; only what it does not
 * cover (the LBA format that FLBAS selects, the UUID descriptor) is read here.
 */
import {
  decodeActiveNsList,
  decodeIdentifyController,
  decodeIdentifyNamespace,
  decodeNsDescriptors,
  ID_CTRL,
  type IdentifyControllerFields,
} from '../protocol/identify.js';
import { CNS, LID, NIDT, NSID_ALL } from '../protocol/opcodes.js';
import { anaLogReadLength, anaLogUsedLength } from './ana-log.js';
import {
  fillGetFeatures,
  fillGetLogPage,
  fillIdentify,
  fillSetFeatures,
  type FeatureParams,
  type LogPageParams,
} from './commands.js';
import { execute, type Submitter } from './execute.js';
import { NvmeRequest } from './request.js';

/** Identify Controller, decoded, plus the raw 4096 bytes for anything else. */
export interface ControllerIdentity extends IdentifyControllerFields {
  /** Largest transfer per command in bytes (2^MDTS * 4 KiB); 0 = no limit. */
  readonly maxTransferBytes: number;
  /** In-capsule data the I/O queues accept: IOCCSZ*16 - 64. */
  readonly inCapsuleDataSize: number;
  /** Command Retry Delay Times CRDT1..3, in 100 ms units (status-retry.ts). */
  readonly crdt: readonly number[];
  readonly raw: Buffer;
}

export function parseIdentifyController(raw: Buffer): ControllerIdentity {
  const f = decodeIdentifyController(raw);
  return {
    ...f,
    // MPS is 0 (4 KiB pages), which we program into CC.
    maxTransferBytes: f.mdts === 0 ? 0 : 2 ** f.mdts * 4096,
    inCapsuleDataSize: Math.max(0, f.ioccsz * 16 - 64),
    crdt: [0, 2, 4].map((i) => raw.readUInt16LE(ID_CTRL.crdt + i)),
    raw: Buffer.from(raw),
  };
}

export interface NamespaceIdentity {
  readonly nsid: number;
  /** Size, capacity and use, in logical blocks. */
  readonly nsze: number;
  readonly ncap: number;
  readonly nuse: number;
  /** log2 of the block size of the format FLBAS selects. */
  readonly lbads: number;
  readonly blockSize: number;
  /** Metadata bytes per block of that format (LBAF MS). The library supports only 0:
   * NVMe-oF would move them inside each block (extended LBA). */
  readonly ms: number;
  readonly nmic: number;
  readonly nsattr: number;
  readonly dlfeat: number;
  readonly anagrpid: number;
  /** All-zero when the controller reports none. */
  readonly nguid: Buffer;
  readonly eui64: Buffer;
  /** An inactive NSID identifies as all zeros (NCAP 0). */
  readonly active: boolean;
  readonly raw: Buffer;
}

export function parseIdentifyNamespace(nsid: number, raw: Buffer): NamespaceIdentity {
  const f = decodeIdentifyNamespace(raw);
  // FLBAS bits 3:0 (and 6:5 as the upper bits when more than 16 formats) pick the format.
  const fmt = (f.flbas & 0xf) | (((f.flbas >> 5) & 0x3) << 4);
  const lbads = raw[128 + fmt * 4 + 2]!;
  const ms = raw.readUInt16LE(128 + fmt * 4);
  return {
    nsid,
    nsze: f.nsze,
    ncap: f.ncap,
    nuse: f.nuse,
    lbads,
    blockSize: lbads >= 9 && lbads < 32 ? 2 ** lbads : 0,
    ms,
    nmic: f.nmic,
    nsattr: f.nsattr,
    dlfeat: f.dlfeat,
    anagrpid: f.anagrpid,
    nguid: f.nguid,
    eui64: f.eui64,
    active: f.ncap !== 0,
    raw: Buffer.from(raw),
  };
}

/** Namespace identification descriptors (CNS 3), by type. */
export interface NamespaceIds {
  readonly eui64?: Buffer;
  readonly nguid?: Buffer;
  /** RFC 4122 text form. */
  readonly uuid?: string;
  readonly csi?: number;
}

export function parseNsDescriptors(raw: Buffer): NamespaceIds {
  const out: { eui64?: Buffer; nguid?: Buffer; uuid?: string; csi?: number } = {};
  for (const d of decodeNsDescriptors(raw)) {
    if (d.nidt === NIDT.EUI64) out.eui64 = d.nid;
    else if (d.nidt === NIDT.NGUID) out.nguid = d.nid;
    else if (d.nidt === NIDT.UUID) out.uuid = formatUuid(d.nid);
    else if (d.nidt === NIDT.CSI) out.csi = d.nid[0]!;
  }
  return out;
}

export function formatUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

async function identifyRaw(admin: Submitter, cns: number, nsid: number, what: string) {
  const req = await execute(admin, fillIdentify(new NvmeRequest(), cns, nsid), what);
  return req.data!;
}

export async function identifyController(admin: Submitter): Promise<ControllerIdentity> {
  return parseIdentifyController(await identifyRaw(admin, CNS.CTRL, 0, 'identify controller'));
}

export async function identifyNamespace(admin: Submitter, nsid: number) {
  const raw = await identifyRaw(admin, CNS.NS, nsid, `identify namespace ${nsid}`);
  return parseIdentifyNamespace(nsid, raw);
}

export async function identifyNsDescriptors(admin: Submitter, nsid: number) {
  const raw = await identifyRaw(admin, CNS.NS_DESC_LIST, nsid, `ns descriptors ${nsid}`);
  return parseNsDescriptors(raw);
}

/**
 * Every active NSID, following the list past 1024 entries as Linux does. The list must
 * ascend (the spec's order, and what makes "the entries after the last one" a next
 * page): a controller that repeats or reorders entries gets an error, not an endless
 * walk; one that lists more than MAX_ACTIVE_NAMESPACES gets one too.
 */
export async function activeNamespaces(admin: Submitter): Promise<number[]> {
  const all: number[] = [];
  for (let after = 0; ;) {
    const raw = await identifyRaw(admin, CNS.NS_ACTIVE_LIST, after, 'active namespace list');
    const page = decodeActiveNsList(raw);
    for (const nsid of page) {
      if (nsid <= after) {
        throw new Error(
          `the controller's active namespace list is not in ascending order ` +
            `(NSID ${nsid} after ${after}): it is broken; check the target`,
        );
      }
      all.push(nsid);
      after = nsid;
    }
    if (page.length < 1024) return all;
    if (all.length >= MAX_ACTIVE_NAMESPACES) {
      throw new Error(
        `the controller lists more than ${MAX_ACTIVE_NAMESPACES} active namespaces; ` +
          `that is more than the library reads`,
      );
    }
  }
}

/** Active namespaces the library lists at most (64 pages of 1024). */
export const MAX_ACTIVE_NAMESPACES = 64 * 1024;

export async function getLogPage(admin: Submitter, p: LogPageParams): Promise<Buffer> {
  const what = `get log page 0x${p.lid.toString(16)}`;
  const req = await execute(admin, fillGetLogPage(new NvmeRequest(), p), what);
  return req.data!;
}

/** Reads of an ANA log in pieces before giving up on one that keeps changing. */
const ANA_LOG_ATTEMPTS = 10;
/** ANA log header: CHGCNT, NGRPS (dword aligned). */
const ANA_HEADER_READ = 16;

/**
 * The ANA log (LID 0x0C, every namespace), at most anaLogReadLength(id) bytes; read with
 * RAE clear, so the ANA change event is armed again. In one Get Log Page when it fits the
 * controller's MDTS, as Linux reads it (nvmet over TCP reports no MDTS, and older
 * kernels ignore LPO for this log: it must not be read in pieces there). Longer, it is
 * read in pieces of MDTS at rising LPOs with RAE set, up to where its groups end, then its
 * header again with RAE clear, as libnvme's nvme_get_ana_log_atomic does: pieces taken
 * across a change (the header's CHGCNT moved) may come from two logs, a group's NSID list
 * grown in between shifting every later group, so the whole log is read again rather
 * than stitched. A controller that does not take LPO (LPA bit 2 clear) cannot give it.
 */
export async function getAnaLog(admin: Submitter, id: ControllerIdentity): Promise<Buffer> {
  const length = anaLogReadLength(id);
  const piece = id.maxTransferBytes;
  const read = (lpo: number, n: number, rae: boolean) =>
    getLogPage(admin, { lid: LID.ANA, nsid: NSID_ALL, lpo, length: n, rae });
  if (piece === 0 || length <= piece) return read(0, length, false);
  const what = `the ANA log (up to ${length} bytes) is longer than the controller's MDTS (${piece} bytes)`;
  if ((id.lpa & 0x04) === 0) {
    throw new Error(`${what}, and the controller cannot read it in pieces (LPA bit 2 clear)`);
  }
  for (let attempt = 0; attempt < ANA_LOG_ATTEMPTS; attempt++) {
    const log = Buffer.alloc(length);
    let have = 0;
    let end = length;
    while (have < end) {
      (await read(have, Math.min(piece, end - have), true)).copy(log, have);
      have = Math.min(end, have + piece);
      end = Math.min(length, anaLogUsedLength(log.subarray(0, have)) ?? length);
    }
    const head = await read(0, ANA_HEADER_READ, false);
    if (head.readBigUInt64LE(0) === log.readBigUInt64LE(0)) return log.subarray(0, have);
  }
  throw new Error(`${what} and changed while read in pieces, ${ANA_LOG_ATTEMPTS} times in a row`);
}

export interface FeatureResult {
  readonly dw0: number;
  readonly dw1: number;
  readonly data: Buffer | null;
}

export async function getFeatures(admin: Submitter, fid: number, p: FeatureParams = {}) {
  const what = `get features 0x${fid.toString(16)}`;
  const req = await execute(admin, fillGetFeatures(new NvmeRequest(), fid, p), what);
  return { dw0: req.dw0, dw1: req.dw1, data: req.data } satisfies FeatureResult;
}

export async function setFeatures(admin: Submitter, fid: number, p: FeatureParams = {}) {
  const what = `set features 0x${fid.toString(16)}`;
  const req = await execute(admin, fillSetFeatures(new NvmeRequest(), fid, p), what);
  return { dw0: req.dw0, dw1: req.dw1, data: null } satisfies FeatureResult;
}
