/**
 * Identify (admin opcode 0x06) for I/O and discovery controllers: which CNS values
 * we serve and the values we put in them (facts §4.2, §4.3).
 */
import {
  encodeActiveNsList,
  encodeIdentifyController,
  encodeIdentifyNamespace,
  encodeNsDescriptors,
  type IdentifyControllerFields,
  type NsDescriptor,
} from '../protocol/identify.js';
import { CNS, IDENTIFY_DATA_SIZE, NIDT, NSID_ALL } from '../protocol/opcodes.js';
import { cdw } from '../protocol/sqe.js';
import { AERL, DISC_AEN, IO_AEN, type Controller } from './controller.js';
import { NVME_VS } from './fabrics.js';
import type { Namespace } from './namespace.js';
import { INVALID_FIELD, INVALID_NS, SGL_LENGTH, replyWith } from './request.js';
import type { ParseResult } from './seam.js';

/** CMIC: b0 multi-port, b1 multi-controller (multipath needs it), b3 ANA reporting. */
const CMIC = 0x0b;
/** CTRATT: b0 128-bit host identifier, b6 traffic based keep-alive (TBKAS). */
const CTRATT = (1 << 0) | (1 << 6);
/** LPA: b0 SMART per namespace, b1 commands supported & effects, b2 extended data (LPO). */
const LPA = 0x07;
/** ONCS: Compare b0, Dataset Management b2, Write Zeroes b3 (emulated when a backend lacks them). */
export const ONCS = (1 << 0) | (1 << 2) | (1 << 3);
/** ANACAP: optimized, non-optimized, inaccessible, persistent loss and change states reported. */
const ANACAP = 0x1f;
/** SGLS: b1:0 = 01b SGLs supported (byte aligned not required), b20 offset SGL (in-capsule data). */
const SGLS = (1 << 0) | (1 << 20);
/** VWC b2:1 = 11b: Flush with NSID 0xFFFFFFFF is supported. */
const VWC_FLUSH_ALL = 0x6;
/** VWC bit 0: a volatile write cache is present. */
const VWC_PRESENT = 0x1;
/** KAS in 100 ms units: keep-alive is timed to 1 s. */
const KAS = 10;

function commonFields(
  ctrl: Controller,
): Omit<IdentifyControllerFields, 'cntrltype' | 'oaes' | 'cmic'> {
  const o = ctrl.options;
  const s = ctrl.subsys;
  return {
    sn: s.serial,
    mn: s.model,
    fr: s.firmware,
    rab: 6,
    mdts: o.mdts,
    cntlid: ctrl.cntlid,
    ver: NVME_VS,
    ctratt: CTRATT,
    acl: 3,
    aerl: AERL,
    frmw: 0x3, // one slot, read only
    lpa: LPA,
    elpe: 0,
    kas: KAS,
    anatt: 0,
    anacap: 0,
    anagrpmax: 0,
    nanagrpid: 0,
    sqes: 0x66,
    cqes: 0x44,
    maxcmd: o.mqes + 1,
    nn: 0,
    oncs: 0,
    vwc: 0,
    sgls: SGLS,
    mnan: 0,
    subnqn: s.nqn,
    // IOCCSZ counts 16-byte units including the 64-byte SQE; Linux sizes I/O queue in-capsule data from it.
    ioccsz: (64 + o.inCapsuleBytes) / 16,
    iorcsz: 1,
    icdoff: 0,
    msdbd: 1,
  };
}

export function identifyController(ctrl: Controller): Buffer {
  const o = ctrl.options;
  return encodeIdentifyController({
    ...commonFields(ctrl),
    cmic: CMIC,
    oaes: IO_AEN,
    cntrltype: 1,
    anatt: o.anatt,
    anacap: ANACAP,
    anagrpmax: o.maxAnaGroups,
    nanagrpid: o.maxAnaGroups,
    nn: ctrl.subsys.maxNamespaces,
    mnan: ctrl.subsys.maxNamespaces,
    oncs: ONCS,
    // Always present, as nvmet says: a host reads VWC once per controller (Linux at
    // connect and reset), while namespaces come and go. Had it said "absent" because no
    // namespace had a cache then, a file-backed one added later would get no Flush and
    // no FUA, and its writes would be acknowledged from the page cache only. Flush on a
    // backend without a cache costs nothing.
    vwc: VWC_PRESENT | VWC_FLUSH_ALL,
  });
}

export function identifyDiscoveryController(ctrl: Controller): Buffer {
  return encodeIdentifyController({
    ...commonFields(ctrl),
    cmic: 0,
    oaes: DISC_AEN,
    cntrltype: 2,
    lpa: 1 << 2,
  });
}

export function identifyNamespace(ctrl: Controller, ns: Namespace): Buffer {
  const caps = ns.backend.caps;
  const zeroesAfterDealloc = caps.deallocate && caps.readZeroesAfterDeallocate;
  // NUSE is 0 where this controller cannot reach the data (NVMe Base; nvmet does so);
  // NCAP stays, or a host would take the namespace for unallocated.
  const state = ctrl.ana.state(ns.anagrpid);
  const reachable = state !== 'inaccessible' && state !== 'persistent-loss';
  return encodeIdentifyNamespace({
    nsze: ns.blocks,
    ncap: ns.blocks,
    nuse: reachable ? ns.blocks : 0,
    nsfeat: 0,
    nmic: 1, // shared: both nodes' controllers reach it
    // DLFEAT 2:0 = 001b reads return zeroes after deallocate; b3 Write Zeroes honours DEAC.
    dlfeat: (zeroesAfterDealloc ? 0x1 : 0) | 0x8,
    anagrpid: ns.anagrpid,
    nsattr: 0,
    nguid: ns.nguid,
    eui64: ns.eui64,
    lbads: ns.lbads,
  });
}

/** CNS 3: the ids both nodes must present identically; zero ids are left out; CSI is NVM. */
export function nsDescriptors(ns: Namespace): Buffer {
  const descs: NsDescriptor[] = [];
  const set = (b: Buffer): boolean => b.some((x) => x !== 0);
  if (set(ns.eui64)) descs.push({ nidt: NIDT.EUI64, nid: ns.eui64 });
  descs.push({ nidt: NIDT.NGUID, nid: ns.nguid });
  if (set(ns.uuid)) descs.push({ nidt: NIDT.UUID, nid: ns.uuid });
  descs.push({ nidt: NIDT.CSI, nid: Buffer.from([0]) });
  return encodeNsDescriptors(descs);
}

const ZEROES = (): Buffer => Buffer.alloc(IDENTIFY_DATA_SIZE);

export function parseIdentify(ctrl: Controller, sqe: Buffer, sglLength: number): ParseResult {
  if (sglLength !== IDENTIFY_DATA_SIZE) return SGL_LENGTH;
  const cns = cdw(sqe, 10) & 0xff;
  const csi = cdw(sqe, 11) >>> 24;
  const nsid = sqe.readUInt32LE(4);
  const subsys = ctrl.subsys;
  switch (cns) {
    case CNS.CTRL:
      return replyWith(IDENTIFY_DATA_SIZE, () => identifyController(ctrl));
    case CNS.NS: {
      if (nsid === 0 || nsid === NSID_ALL || nsid > subsys.maxNamespaces) return INVALID_NS;
      // An inactive NSID reads as zeroes (nvmet), which hosts take as "not allocated".
      return replyWith(IDENTIFY_DATA_SIZE, () => {
        const ns = subsys.namespaces.get(nsid);
        return ns ? identifyNamespace(ctrl, ns) : ZEROES();
      });
    }
    case CNS.NS_ACTIVE_LIST:
      if (nsid >= 0xfffffffe) return INVALID_NS;
      return replyWith(IDENTIFY_DATA_SIZE, () => encodeActiveNsList(subsys.nsids(), nsid));
    case CNS.NS_DESC_LIST: {
      const ns = subsys.namespaces.get(nsid);
      return ns ? replyWith(IDENTIFY_DATA_SIZE, () => nsDescriptors(ns)) : INVALID_NS;
    }
    case CNS.CSI_NS:
    case CNS.CSI_CTRL:
      // NVM command set specific structures carry nothing we use: zeroes, as nvmet.
      return csi === 0 ? replyWith(IDENTIFY_DATA_SIZE, ZEROES) : INVALID_FIELD;
    default:
      return INVALID_FIELD;
  }
}

export function parseDiscoveryIdentify(
  ctrl: Controller,
  sqe: Buffer,
  sglLength: number,
): ParseResult {
  if (sglLength !== IDENTIFY_DATA_SIZE) return SGL_LENGTH;
  if ((cdw(sqe, 10) & 0xff) !== CNS.CTRL) return INVALID_FIELD;
  return replyWith(IDENTIFY_DATA_SIZE, () => identifyDiscoveryController(ctrl));
}
