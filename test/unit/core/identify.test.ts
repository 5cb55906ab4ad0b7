/**
 * Identify structures at the byte offsets the Linux host reads (facts §4.2, §4.3).
 */
import { describe, expect, it } from 'vitest';
import {
  decodeActiveNsList,
  decodeIdentifyNamespace,
  decodeNsDescriptors,
} from '../../../engine/src/protocol/identify.js';
import { CNS, NIDT } from '../../../engine/src/protocol/opcodes.js';
import { DNR, SC } from '../../../engine/src/protocol/status.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import {
  EUI64,
  NGUID,
  SUBNQN,
  UUID,
  connectAdmin,
  enable,
  identifySqe,
  makeTarget,
  ok,
} from './helpers.js';

async function adminFor(opts = {}) {
  const { target, backend } = makeTarget(opts);
  const s = await connectAdmin(target);
  await enable(s.admin);
  return { target, backend, ...s };
}

describe('Identify Controller (CNS 1)', () => {
  it('has the values the Linux host checks, at their offsets', async () => {
    const { admin, cntlid } = await adminFor({ inCapsuleBytes: 8192 });
    const b = ok(await admin.submit(identifySqe(CNS.CTRL))).data!;
    expect(b.length).toBe(4096);
    const u8 = (o: number) => b[o];
    const u16 = (o: number) => b.readUInt16LE(o);
    const u32 = (o: number) => b.readUInt32LE(o);
    const table: Array<[string, number | undefined, number]> = [
      ['CMIC', u8(76), 0x0b],
      ['MDTS', u8(77), 8],
      ['CNTLID', u16(78), cntlid],
      ['VER', u32(80), 0x00010400],
      ['OAES', u32(92), (1 << 8) | (1 << 11)],
      ['CTRATT', u32(96), 0x41],
      ['CNTRLTYPE', u8(111), 1],
      ['ACL', u8(258), 3],
      ['AERL', u8(259), 3],
      ['LPA', u8(261), 0x07],
      ['KAS', u16(320), 10],
      ['ANATT', u8(342), 10],
      ['ANACAP', u8(343), 0x1f],
      ['ANAGRPMAX', u32(344), 32],
      ['NANAGRPID', u32(348), 32],
      ['SQES', u8(512), 0x66],
      ['CQES', u8(513), 0x44],
      ['MAXCMD', u16(514), 128],
      ['NN', u32(516), 1024],
      ['ONCS', u16(520), 0x0d],
      ['VWC', u8(525), 0x07], // present whatever the namespaces; flush-all supported
      ['SGLS', u32(536), 0x100001],
      ['MNAN', u32(540), 1024],
      ['IOCCSZ', u32(1792), (64 + 8192) / 16],
      ['IORCSZ', u32(1796), 1],
      ['ICDOFF', u16(1800), 0],
      ['MSDBD', u8(1803), 1],
    ];
    for (const [name, got, want] of table) expect({ name, got }).toEqual({ name, got: want });
    expect(b.toString('ascii', 4, 24)).toBe('BSAN0001'.padEnd(20));
    expect(b.toString('ascii', 24, 64)).toBe('BranchSAN volume'.padEnd(40));
    expect(b.toString('ascii', 64, 72)).toBe('1.0'.padEnd(8));
    expect(b.toString('utf8', 768, 768 + SUBNQN.length)).toBe(SUBNQN);
    expect(b[768 + SUBNQN.length]).toBe(0);
  });

  it('reports a volatile write cache even before any namespace has one', async () => {
    // A host reads VWC once per controller (Linux: at connect and reset). Before, a
    // subsystem with only cacheless namespaces said "absent", and a file-backed namespace
    // added later got no Flush and no FUA from that host: acknowledged from the page cache.
    const { admin } = await adminFor(); // namespace 1: memory, no volatile cache
    const b = ok(await admin.submit(identifySqe(CNS.CTRL))).data!;
    expect(b[525]).toBe(0x07);
  });
});

describe('Identify Namespace (CNS 0) and friends', () => {
  it('describes the namespace with shared NMIC, ANA group and ids', async () => {
    const { admin } = await adminFor();
    const ns = decodeIdentifyNamespace(ok(await admin.submit(identifySqe(CNS.NS, 1))).data!);
    expect(ns).toMatchObject({
      nsze: 8192,
      ncap: 8192,
      nuse: 8192,
      nlbaf: 0,
      flbas: 0,
      nmic: 1,
      anagrpid: 1,
      lbads: 9,
      dlfeat: 0x9, // reads zeroes after deallocate, Write Zeroes honours DEAC
    });
    expect(ns.nguid.toString('hex')).toBe(NGUID);
    expect(ns.eui64.toString('hex')).toBe(EUI64);
  });

  it('reports NUSE 0 while the namespace is inaccessible or lost here; NCAP stays', async () => {
    const { target, admin } = await adminFor();
    const nuse = async () =>
      decodeIdentifyNamespace(ok(await admin.submit(identifySqe(CNS.NS, 1))).data!);
    for (const [state, used] of [
      ['inaccessible', 0],
      ['persistent-loss', 0],
      ['non-optimized', 8192],
      ['optimized', 8192],
    ] as const) {
      target.setAnaState(1, state);
      expect(await nuse(), state).toMatchObject({ ncap: 8192, nuse: used });
    }
  });

  it('returns zeroes for an inactive NSID and Invalid Namespace for 0 / all / beyond NN', async () => {
    const { admin } = await adminFor();
    const z = ok(await admin.submit(identifySqe(CNS.NS, 7))).data!;
    expect(z.every((x) => x === 0)).toBe(true);
    for (const nsid of [0, 0xffffffff, 1025]) {
      expect((await admin.submit(identifySqe(CNS.NS, nsid))).status).toBe(SC.INVALID_NS | DNR);
    }
  });

  it('lists active NSIDs above the given one, ascending', async () => {
    const { target, admin } = await adminFor();
    for (const nsid of [5, 3]) {
      const backend = new MemoryBackend({ sizeBytes: 1 << 20 });
      target.addNamespace(SUBNQN, { nsid, backend, nguid: nsid.toString(16).padStart(32, '0') });
    }
    const all = decodeActiveNsList(
      ok(await admin.submit(identifySqe(CNS.NS_ACTIVE_LIST, 0))).data!,
    );
    expect(all).toEqual([1, 3, 5]);
    const above = decodeActiveNsList(
      ok(await admin.submit(identifySqe(CNS.NS_ACTIVE_LIST, 3))).data!,
    );
    expect(above).toEqual([5]);
    expect((await admin.submit(identifySqe(CNS.NS_ACTIVE_LIST, 0xfffffffe))).status).toBe(
      SC.INVALID_NS | DNR,
    );
  });

  it('gives NS id descriptors with the right NIDT/NIDL, identical to CNS 0', async () => {
    const { admin } = await adminFor();
    const b = ok(await admin.submit(identifySqe(CNS.NS_DESC_LIST, 1))).data!;
    // Raw layout: NIDT, NIDL, 2 reserved, NID.
    expect([b[0], b[1], b[2], b[3]]).toEqual([NIDT.EUI64, 8, 0, 0]);
    expect([b[12], b[13]]).toEqual([NIDT.NGUID, 16]);
    const descs = decodeNsDescriptors(b);
    expect(descs.map((d) => [d.nidt, d.nid.toString('hex')])).toEqual([
      [NIDT.EUI64, EUI64],
      [NIDT.NGUID, NGUID],
      [NIDT.UUID, UUID.replace(/-/g, '')],
      [NIDT.CSI, '00'],
    ]);
    expect((await admin.submit(identifySqe(CNS.NS_DESC_LIST, 2))).status).toBe(SC.INVALID_NS | DNR);
  });

  const cnsTable: Array<[string, number, number, number]> = [
    ['CNS 6 CSI NVM -> zeroes', CNS.CSI_CTRL, 0, SC.SUCCESS],
    ['CNS 5 CSI NVM -> zeroes', CNS.CSI_NS, 0, SC.SUCCESS],
    ['CNS 6 CSI ZNS -> invalid', CNS.CSI_CTRL, 2, SC.INVALID_FIELD | DNR],
    ['CNS 8 -> invalid', CNS.NS_CS_INDEP, 0, SC.INVALID_FIELD | DNR],
    ['CNS 0x10 -> invalid', 0x10, 0, SC.INVALID_FIELD | DNR],
  ];
  it.each(cnsTable)('%s', async (_n, cns, csi, status) => {
    const { admin } = await adminFor();
    const c = await admin.submit(identifySqe(cns, 1, csi));
    expect(c.status).toBe(status);
    if (status === SC.SUCCESS) expect(c.data!.every((x) => x === 0)).toBe(true);
  });

  it('requires a 4096-byte transfer', async () => {
    const { admin } = await adminFor();
    const c = await admin.submit(identifySqe(CNS.CTRL, 0, 0, 1024));
    expect(c.status).toBe(SC.SGL_INVALID_DATA_LEN | DNR);
  });
});
