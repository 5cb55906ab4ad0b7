/**
 * Get Log Page windows (NUMD/LPO/RAE) and log contents, including the discovery log
 * read the way libnvme reads it.
 */
import { describe, expect, it } from 'vitest';
import { decodeAnaLog, decodeDiscoveryLog } from '../../../engine/src/protocol/logpages.js';
import { ADMIN, IO, LID } from '../../../engine/src/protocol/opcodes.js';
import { encodeSqe } from '../../../engine/src/protocol/sqe.js';
import { DNR, SC } from '../../../engine/src/protocol/status.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import {
  DISC_NQN,
  HOSTNQN,
  OTHER_HOST,
  SUBNQN,
  TCP_PORT,
  aerSqe,
  connectAdmin,
  enable,
  getLogSqe,
  makeTarget,
  ok,
  readSqe,
  session,
  settle,
  writeSqe,
} from './helpers.js';

describe('Get Log Page windows', () => {
  it('returns exactly the requested length, honouring LPO, zero-padded past the end', async () => {
    const { target } = makeTarget();
    for (let g = 2; g <= 4; g++) target.setAnaState(g, 'non-optimized');
    const { admin } = await session(target);
    const full = ok(await admin.submit(getLogSqe(LID.ANA, 4096))).data!;
    expect(full.length).toBe(4096);
    const pieces = [];
    for (let lpo = 0; lpo < 256; lpo += 64)
      pieces.push(ok(await admin.submit(getLogSqe(LID.ANA, 64, { lpo }))).data!);
    expect(Buffer.concat(pieces)).toEqual(full.subarray(0, 256));
    const beyond = ok(await admin.submit(getLogSqe(LID.ANA, 8, { lpo: 1 << 20 }))).data!;
    expect(beyond).toEqual(Buffer.alloc(8));
  });

  const refusals: Array<[string, Buffer, number]> = [
    ['LPO not dword aligned', getLogSqe(LID.SMART, 512, { lpo: 2 }), SC.INVALID_FIELD | DNR],
    ['unknown log page', getLogSqe(0x42, 512), SC.INVALID_LOG_PAGE | DNR],
    [
      'discovery log on an I/O controller',
      getLogSqe(LID.DISCOVERY, 1024),
      SC.INVALID_LOG_PAGE | DNR,
    ],
    ['SMART of an inactive namespace', getLogSqe(LID.SMART, 512, { nsid: 9 }), SC.INVALID_NS | DNR],
    ['larger than MDTS', getLogSqe(LID.ERROR, 2 << 20), SC.INVALID_FIELD | DNR],
  ];
  it.each(refusals)('%s', async (_n, sqe, status) => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    expect((await admin.submit(sqe)).status).toBe(status);
  });

  it('SGL length must equal (NUMD + 1) * 4', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    expect((await admin.submit(getLogSqe(LID.SMART, 512), null, 4096)).status).toBe(
      SC.SGL_INVALID_DATA_LEN | DNR,
    );
  });
});

describe('log contents', () => {
  it('SMART counts host reads and writes in 512,000-byte units', async () => {
    const { target } = makeTarget();
    const { admin, io } = await session(target);
    ok(await io.submit(writeSqe(0, 8), Buffer.alloc(4096)));
    ok(await io.submit(readSqe(0, 8)));
    ok(await io.submit(readSqe(0, 8)));
    const smart = ok(await admin.submit(getLogSqe(LID.SMART, 512))).data!;
    expect(smart.readBigUInt64LE(32)).toBe(1n); // ceil(8192 / 512000)
    expect(smart.readBigUInt64LE(64)).toBe(2n);
    expect(smart.readBigUInt64LE(80)).toBe(1n);
    const perNs = ok(await admin.submit(getLogSqe(LID.SMART, 512, { nsid: 1 }))).data!;
    expect(perNs.readBigUInt64LE(64)).toBe(2n);
  });

  it('commands supported and effects mark what we implement', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    const b = ok(await admin.submit(getLogSqe(LID.CMD_EFFECTS, 4096, { nsid: 0 }))).data!;
    expect(b.readUInt32LE(ADMIN.IDENTIFY * 4)).toBe(1);
    expect(b.readUInt32LE(ADMIN.NS_MGMT * 4)).toBe(0);
    expect(b.readUInt32LE(1024 + IO.WRITE * 4)).toBe(3);
    expect(b.readUInt32LE(1024 + IO.READ * 4)).toBe(1);
  });

  it('error and firmware slot logs', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    expect(ok(await admin.submit(getLogSqe(LID.ERROR, 64))).data).toEqual(Buffer.alloc(64));
    const fw = ok(await admin.submit(getLogSqe(LID.FW_SLOT, 512))).data!;
    expect(fw[0]).toBe(1);
    expect(fw.toString('ascii', 8, 16)).toBe('1.0     ');
  });

  it('ANA log: groups ascending, NSIDs ascending, RGO leaves NSIDs out', async () => {
    const { target } = makeTarget();
    const add = (nsid: number, grp: number) =>
      target.addNamespace(SUBNQN, {
        nsid,
        backend: new MemoryBackend({ sizeBytes: 1 << 20 }),
        nguid: nsid.toString(16).padStart(32, 'a'),
        anagrpid: grp,
      });
    add(7, 2);
    add(3, 2);
    add(5, 1);
    target.setAnaState(2, 'inaccessible');
    const { admin } = await session(target);
    const log = decodeAnaLog(ok(await admin.submit(getLogSqe(LID.ANA, 4096))).data!);
    expect(log.groups.map((g) => [g.grpid, g.state, g.nsids])).toEqual([
      [1, 1, [1, 5]],
      [2, 3, [3, 7]],
    ]);
    const rgo = decodeAnaLog(ok(await admin.submit(getLogSqe(LID.ANA, 4096, { lsp: 1 }))).data!);
    expect(rgo.groups.map((g) => g.nsids.length)).toEqual([0, 0]);
  });
});

describe('discovery log', () => {
  async function discovery(hostnqn = HOSTNQN, port = TCP_PORT) {
    const { target } = makeTarget();
    const s = await connectAdmin(target, DISC_NQN, hostnqn, 0, port);
    await enable(s.admin);
    return { target, ...s };
  }

  /** libnvme: 20-byte header, NUMREC * 1024 at LPO 1024, then the header again. */
  async function readLikeLibnvme(admin: Awaited<ReturnType<typeof discovery>>['admin']) {
    const h1 = ok(await admin.submit(getLogSqe(LID.DISCOVERY, 20, { rae: true }))).data!;
    const numrec = Number(h1.readBigUInt64LE(8));
    const body = ok(
      await admin.submit(getLogSqe(LID.DISCOVERY, numrec * 1024, { lpo: 1024, rae: true })),
    ).data!;
    const h2 = ok(await admin.submit(getLogSqe(LID.DISCOVERY, 20))).data!;
    expect(h2.readBigUInt64LE(0)).toBe(h1.readBigUInt64LE(0));
    return decodeDiscoveryLog(Buffer.concat([h1, Buffer.alloc(1004), body]));
  }

  it('lists the current discovery subsystem and the NVM subsystem the host may use', async () => {
    const { admin } = await discovery();
    const log = await readLikeLibnvme(admin);
    expect(log.recfmt).toBe(0);
    expect(log.entries).toEqual([
      {
        trtype: 3,
        adrfam: 1,
        subtype: 3,
        treq: 6,
        portid: 1,
        cntlid: 0xffff,
        asqsz: 32,
        eflags: 3,
        trsvcid: '4420',
        subnqn: DISC_NQN,
        traddr: '192.0.2.10',
        sectype: 0,
      },
      {
        trtype: 3,
        adrfam: 1,
        subtype: 2,
        treq: 6,
        portid: 1,
        cntlid: 0xffff,
        asqsz: 32,
        eflags: 0,
        trsvcid: '4420',
        subnqn: SUBNQN,
        traddr: '192.0.2.10',
        sectype: 0,
      },
    ]);
  });

  it('hides subsystems the host may not connect to', async () => {
    const { admin } = await discovery(OTHER_HOST);
    const log = await readLikeLibnvme(admin);
    expect(log.entries.map((e) => e.subtype)).toEqual([3]);
  });

  it('replaces a wildcard listen address with the address the host connected to', async () => {
    const { target, admin } = await discovery(HOSTNQN, {
      ...TCP_PORT,
      portId: 9,
      traddr: '198.51.100.7',
      trsvcid: '8009',
    });
    target.removePort(1);
    target.addPort({
      portId: 2,
      trtype: 'tcp',
      adrfam: 'ipv4',
      traddr: '0.0.0.0',
      trsvcid: '4420',
    });
    const log = await readLikeLibnvme(admin);
    expect(log.entries.map((e) => [e.subtype, e.portid, e.traddr, e.trsvcid])).toEqual([
      [3, 9, '198.51.100.7', '8009'],
      [2, 2, '198.51.100.7', '4420'],
    ]);
  });

  it('exposes a subsystem only on the ports configured for it', async () => {
    const { target, admin } = await discovery();
    target.addPort({ ...TCP_PORT, portId: 3, trsvcid: '4421' }, { subsystems: [] });
    const log = await readLikeLibnvme(admin);
    expect(log.entries.filter((e) => e.subtype === 2).map((e) => e.portid)).toEqual([1]);
  });

  it('bumps GENCTR and sends a discovery AEN (0x0070F002) on changes, masked until read', async () => {
    const { target, admin } = await discovery();
    const before = ok(await admin.submit(getLogSqe(LID.DISCOVERY, 1024))).data!.readBigUInt64LE(0);
    let aer: number | undefined;
    void admin.submit(aerSqe()).then((c) => (aer = c.dw0));
    target.addSubsystem({
      nqn: 'nqn.2024-01.com.branchsan:vol2',
      serial: 'S2',
      model: 'M',
      allowAnyHost: true,
    });
    await settle();
    expect(aer).toBe(0x0070f002);
    const log = decodeDiscoveryLog(
      ok(await admin.submit(getLogSqe(LID.DISCOVERY, 4096, { rae: true }))).data!,
    );
    expect(BigInt(log.genctr)).toBe(before + 1n);
    expect(log.numrec).toBe(3);
    // Read with RAE: still masked, so the next change is not reported yet.
    let aer2: number | undefined;
    void admin.submit(aerSqe()).then((c) => (aer2 = c.dw0));
    target.removeSubsystem('nqn.2024-01.com.branchsan:vol2');
    await settle();
    expect(aer2).toBeUndefined();
    ok(await admin.submit(getLogSqe(LID.DISCOVERY, 1024)));
    target.disallowHost(SUBNQN, HOSTNQN);
    await settle();
    expect(aer2).toBe(0x0070f002);
  });

  it('accepts only the discovery log page and refuses I/O-controller commands', async () => {
    const { admin } = await discovery();
    expect((await admin.submit(getLogSqe(LID.ANA, 4096))).status).toBe(SC.INVALID_LOG_PAGE | DNR);
    for (const opcode of [ADMIN.CREATE_SQ, ADMIN.NS_MGMT, 0xc0]) {
      expect((await admin.submit(encodeSqe({ opcode }))).status).toBe(SC.INVALID_OPCODE | DNR);
    }
  });
});
