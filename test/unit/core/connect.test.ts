/**
 * Connect and controller bring-up as the Linux host does it (facts §3, §4.1), and
 * the Connect rejections nvmet gives, with their error locators.
 */
import { describe, expect, it } from 'vitest';
import { LoopQueue } from '../../../engine/src/transport/loop.js';
import { ADMIN, FID, LID, PROP } from '../../../engine/src/protocol/opcodes.js';
import { decodeIdentifyController } from '../../../engine/src/protocol/identify.js';
import { encodeSqe } from '../../../engine/src/protocol/sqe.js';
import { DNR, SC } from '../../../engine/src/protocol/status.js';
import {
  CC_LINUX,
  DISC_NQN,
  HOSTNQN,
  OTHER_HOST,
  SUBNQN,
  TCP_PORT,
  aerSqe,
  connectAdmin,
  connectData,
  connectIo,
  connectSqe,
  enable,
  getFeaturesSqe,
  getLogSqe,
  identifySqe,
  makeTarget,
  ok,
  propGetSqe,
  propSetSqe,
  setFeaturesSqe,
  settle,
} from './helpers.js';

describe('NVM subsystem connect sequence (Linux host order)', () => {
  it('connects, enables, identifies, reads logs, sets queues and connects I/O queues', async () => {
    const { target } = makeTarget({ cntlidMin: 0x10, cntlidMax: 0x20 });
    const admin = new LoopQueue(target, { port: TCP_PORT });
    // 1. Connect qid 0, SQSIZE 31, KATO 5 s.
    const conn = ok(await admin.submit(connectSqe(0, 31, 5000), connectData(SUBNQN, HOSTNQN)));
    const cntlid = conn.dw0 & 0xffff;
    expect(cntlid).toBe(0x10);
    expect(conn.dw0 >>> 16).toBe(0); // no ATR/ASCR: no authentication
    expect(admin.queueSize).toBe(32);
    // 2. CAP, CC, CAP, CC|EN, CSTS, VS.
    const cap = ok(await admin.submit(propGetSqe(PROP.CAP, true)));
    expect(cap.dw0 & 0xffff).toBe(127); // MQES
    expect((cap.dw0 >>> 16) & 1).toBe(1); // CQR
    expect(cap.dw0 >>> 24).toBe(15); // TO
    expect(cap.dw1).toBe(1 << 5); // CSS b37 only, MPSMIN 0
    const early = await admin.submit(identifySqe(1));
    expect(early.status).toBe(SC.CMD_SEQ_ERROR | DNR); // before RDY only fabrics commands
    await enable(admin);
    const vs = ok(await admin.submit(propGetSqe(PROP.VS)));
    expect(vs.dw0).toBe(0x00010400);
    // 3. Identify Controller, then effects and ANA logs.
    const id = decodeIdentifyController(ok(await admin.submit(identifySqe(1))).data!);
    expect(id.cntlid).toBe(cntlid);
    expect(id.lpa & 2).toBe(2);
    ok(await admin.submit(getLogSqe(LID.CMD_EFFECTS, 4096, { nsid: 0 })));
    const anaLen = 16 + id.nanagrpid * 32 + id.mnan * 4;
    ok(await admin.submit(getLogSqe(LID.ANA, anaLen)));
    // 5. SMART.
    ok(await admin.submit(getLogSqe(LID.SMART, 512)));
    // 7. Number of queues: ask for 16, get min(16, 8).
    const nq = ok(await admin.submit(setFeaturesSqe(FID.NUM_QUEUES, 15 | (15 << 16))));
    expect(nq.dw0).toBe(7 | (7 << 16));
    // 8. I/O queues 1..8 with SQSIZE = min(128, MQES+1) - 1.
    const ioqs: LoopQueue[] = [];
    for (let qid = 1; qid <= 8; qid++) {
      const { q, c } = await connectIo(target, cntlid, qid, 127);
      ok(c);
      expect(c.dw0).toBe(cntlid);
      expect(q.queueSize).toBe(128);
      ioqs.push(q);
    }
    const ninth = await connectIo(target, cntlid, 9);
    expect(ninth.c.status).toBe(SC.CONNECT_INVALID_PARAM | DNR);
    expect(ninth.c.dw0).toBe(42); // IATTR 0, SQE offset of QID
    // Number of Queues once I/O queues exist: Command Sequence Error, and the grant
    // stands (before: it shrank to 1, under the 8 queues already connected)
    expect((await admin.submit(setFeaturesSqe(FID.NUM_QUEUES, 0))).status).toBe(
      SC.CMD_SEQ_ERROR | DNR,
    );
    ioqs[7]!.disconnect();
    await settle();
    const again = await connectIo(target, cntlid, 8, 127);
    ok(again.c);
    ioqs[7] = again.q;
    // 9. AEN config and one AER (stays outstanding).
    ok(await admin.submit(setFeaturesSqe(FID.ASYNC_EVENT, (1 << 8) | (1 << 11))));
    let aerDone = false;
    void admin.submit(aerSqe()).then(() => (aerDone = true));
    await settle();
    expect(aerDone).toBe(false);
    expect(target.listControllers()[0]).toMatchObject({ cntlid, state: 'enabled', ioQueues: 8 });
    // Teardown as the host does: I/O queues first, shutdown, then the admin queue.
    for (const q of ioqs) q.disconnect();
    await settle();
    expect(target.listControllers()[0]!.ioQueues).toBe(0);
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX | 1 | (1 << 14))));
    await settle();
    const csts = ok(await admin.submit(propGetSqe(PROP.CSTS)));
    expect((csts.dw0 >>> 2) & 3).toBe(2); // SHST complete
    admin.disconnect();
    await settle();
    expect(aerDone).toBe(true); // failed at teardown
    expect(target.listControllers()).toEqual([]);
  });

  it('connects to the discovery subsystem with CNTRLTYPE 2 and a 120 s KATO', async () => {
    const { target } = makeTarget();
    const { admin, cntlid } = await connectAdmin(target, DISC_NQN, OTHER_HOST, 0);
    await enable(admin);
    const id = decodeIdentifyController(ok(await admin.submit(identifySqe(1))).data!);
    expect(id).toMatchObject({ cntrltype: 2, cntlid, icdoff: 0, subnqn: DISC_NQN });
    expect(id.sgls & 3).toBe(1);
    expect(id.oaes >>> 0).toBe(0x80000000);
    expect(target.listControllers()[0]).toMatchObject({ kind: 'discovery', kato: 120_000 });
    // The Linux host enables the discovery change notice (OAES b31), then posts an AER.
    ok(await admin.submit(setFeaturesSqe(FID.ASYNC_EVENT, 0x80000000)));
    ok(await admin.submit(setFeaturesSqe(FID.KATO, 30_000)));
    expect(target.listControllers()[0]).toMatchObject({ kato: 30_000 });
    // Keep-alive cannot be turned off on a controller any host may open: 0 is the default.
    ok(await admin.submit(setFeaturesSqe(FID.KATO, 0)));
    expect(target.listControllers()[0]).toMatchObject({ kato: 120_000 });
    expect(ok(await admin.submit(getFeaturesSqe(FID.KATO))).dw0).toBe(120_000);
    // Only Identify CNS 1: no namespaces or I/O queues here.
    expect((await admin.submit(identifySqe(2))).status).toBe(SC.INVALID_FIELD | DNR);
    expect((await admin.submit(setFeaturesSqe(FID.NUM_QUEUES, 0))).status).toBe(
      SC.INVALID_FIELD | DNR,
    );
    expect((await admin.submit(getLogSqe(LID.SMART, 512))).status).toBe(SC.INVALID_LOG_PAGE | DNR);
    const io = new LoopQueue(target);
    const c = await io.submit(connectSqe(1, 31), connectData(DISC_NQN, OTHER_HOST, cntlid));
    expect(c.status).toBe(SC.CONNECT_INVALID_PARAM | DNR);
  });

  it('cuts a discovery KATO longer than 5 minutes to 5 minutes, at Connect and Set Features', async () => {
    // Any host may open one: 0xFFFFFFFF ms (49 days) would keep its CNTLID and socket for ever.
    const { target } = makeTarget();
    const { admin } = await connectAdmin(target, DISC_NQN, OTHER_HOST, 0xffffffff);
    await enable(admin);
    expect(target.listControllers()[0]).toMatchObject({ kind: 'discovery', kato: 300_000 });
    expect(ok(await admin.submit(getFeaturesSqe(FID.KATO))).dw0).toBe(300_000);
    ok(await admin.submit(setFeaturesSqe(FID.KATO, 30_000))); // Linux persistent discovery
    expect(ok(await admin.submit(getFeaturesSqe(FID.KATO))).dw0).toBe(30_000);
    ok(await admin.submit(setFeaturesSqe(FID.KATO, 0xffffffff))); // taken, and cut
    expect(ok(await admin.submit(getFeaturesSqe(FID.KATO))).dw0).toBe(300_000);
    expect(target.listControllers()[0]).toMatchObject({ kato: 300_000 });
    // A longer configured default is not cut; an I/O controller keeps what its host asks.
    const long = makeTarget({ discoveryKatoMs: 600_000 }).target;
    await connectAdmin(long, DISC_NQN, OTHER_HOST, 0xffffffff);
    expect(long.listControllers()[0]).toMatchObject({ kato: 600_000 });
    const io = makeTarget().target;
    await connectAdmin(io, SUBNQN, HOSTNQN, 0xffffffff);
    expect(io.listControllers()[0]).toMatchObject({ kind: 'io', kato: 0xffffffff });
  });
});

describe('Connect rejections', () => {
  it('refuses a host that is not on the allow list with 1/84, DNR, locating HOSTNQN', async () => {
    const { target } = makeTarget();
    const q = new LoopQueue(target);
    const c = await q.submit(connectSqe(0, 31, 5000), connectData(SUBNQN, OTHER_HOST));
    expect(c.status).toBe(SC.CONNECT_INVALID_HOST | DNR);
    expect(c.dw0).toBe((1 << 16) | 512);
    target.allowHost(SUBNQN, OTHER_HOST);
    ok(await q.submit(connectSqe(0, 31, 5000), connectData(SUBNQN, OTHER_HOST)));
  });

  it('lets any host in when allowAnyHost is set', async () => {
    const { target } = makeTarget();
    target.setAllowedHosts(SUBNQN, [], true);
    await connectAdmin(target, SUBNQN, OTHER_HOST);
  });

  const adminCases: Array<[string, () => [Buffer, Buffer, number?], number, number?]> = [
    [
      'RECFMT != 0',
      () => [connectSqe(0, 31, 0, 1), connectData(SUBNQN, HOSTNQN)],
      SC.CONNECT_FORMAT | DNR,
    ],
    [
      'SQSIZE 0',
      () => [connectSqe(0, 0), connectData(SUBNQN, HOSTNQN)],
      SC.CONNECT_INVALID_PARAM | DNR,
      44,
    ],
    [
      'SQSIZE > MQES',
      () => [connectSqe(0, 128), connectData(SUBNQN, HOSTNQN)],
      SC.CONNECT_INVALID_PARAM | DNR,
      44,
    ],
    [
      'admin CNTLID != 0xFFFF',
      () => [connectSqe(0, 31), connectData(SUBNQN, HOSTNQN, 1)],
      SC.CONNECT_INVALID_PARAM | DNR,
      (1 << 16) | 16,
    ],
    [
      'unknown subsystem',
      () => [connectSqe(0, 31), connectData('nqn.2024-01.com.branchsan:nope', HOSTNQN)],
      SC.CONNECT_INVALID_PARAM | DNR,
      (1 << 16) | 256,
    ],
    [
      'empty HOSTNQN',
      () => [connectSqe(0, 31), connectData(SUBNQN, '')],
      SC.CONNECT_INVALID_PARAM | DNR,
      (1 << 16) | 512,
    ],
    // a host's name reaches events, alerts, mail subjects and logs: no line breaks in it
    [
      'HOSTNQN with a line break',
      () => [connectSqe(0, 31), connectData(SUBNQN, `${HOSTNQN}\r\nBcc: someone@example.com`)],
      SC.CONNECT_INVALID_PARAM | DNR,
      (1 << 16) | 512,
    ],
    [
      'HOSTNQN with a C1 control character',
      () => [connectSqe(0, 31), connectData(SUBNQN, `${HOSTNQN}\u009b2J`)],
      SC.CONNECT_INVALID_PARAM | DNR,
      (1 << 16) | 512,
    ],
    [
      'short Connect data',
      () => [connectSqe(0, 31), connectData(SUBNQN, HOSTNQN), 512],
      SC.SGL_INVALID_DATA_LEN | DNR,
    ],
  ];
  it.each(adminCases)('%s', async (_name, build, status, dw0) => {
    const { target } = makeTarget();
    const q = new LoopQueue(target);
    const [sqe, data, len] = build();
    const c = await q.submit(sqe, data, len);
    expect(c.status).toBe(status);
    if (dw0 !== undefined) expect(c.dw0).toBe(dw0);
    expect(target.listControllers()).toEqual([]);
  });

  it('rejects I/O connects that name the wrong controller, host, queue or size', async () => {
    const { target } = makeTarget();
    const { admin, cntlid } = await connectAdmin(target);
    // Not enabled yet.
    expect((await connectIo(target, cntlid, 1)).c.status).toBe(SC.CMD_SEQ_ERROR | DNR);
    await enable(admin);
    const bad = await connectIo(target, cntlid + 1, 1);
    expect(bad.c).toMatchObject({ status: SC.CONNECT_INVALID_PARAM | DNR, dw0: (1 << 16) | 16 });
    target.allowHost(SUBNQN, OTHER_HOST);
    expect((await connectIo(target, cntlid, 1, 127, OTHER_HOST)).c.status).toBe(
      SC.CONNECT_INVALID_PARAM | DNR,
    );
    expect((await connectIo(target, cntlid, 1, 128)).c).toMatchObject({
      status: SC.CONNECT_INVALID_PARAM | DNR,
      dw0: 44,
    });
    ok((await connectIo(target, cntlid, 1)).c);
    expect((await connectIo(target, cntlid, 1)).c.status).toBe(SC.CMD_SEQ_ERROR | DNR);
  });

  it('accepts only Connect on an unconnected queue and no second Connect', async () => {
    const { target } = makeTarget();
    const q = new LoopQueue(target);
    expect((await q.submit(propGetSqe(PROP.CAP, true))).status).toBe(SC.INVALID_OPCODE | DNR);
    ok(await q.submit(connectSqe(0, 31, 5000), connectData(SUBNQN, HOSTNQN)));
    const again = await q.submit(connectSqe(0, 31, 5000), connectData(SUBNQN, HOSTNQN));
    expect(again.status).toBe(SC.CMD_SEQ_ERROR | DNR);
  });

  it('rejects PRP data pointers and fused commands with Invalid Field', async () => {
    const { target } = makeTarget();
    const { admin } = await connectAdmin(target);
    await enable(admin);
    const prp = encodeSqe({ opcode: ADMIN.IDENTIFY, flags: 0, cdw10: 1, sglLength: 4096 });
    expect((await admin.submit(prp)).status).toBe(SC.INVALID_FIELD | DNR);
    const fused = encodeSqe({ opcode: ADMIN.IDENTIFY, flags: 0x41, cdw10: 1, sglLength: 4096 });
    expect((await admin.submit(fused)).status).toBe(SC.INVALID_FIELD | DNR);
  });

  it('hands out CNTLIDs from the configured range and refuses when it is exhausted', async () => {
    const { target } = makeTarget({ cntlidMin: 0x8000, cntlidMax: 0x8001 });
    const a = await connectAdmin(target);
    const b = await connectAdmin(target);
    expect([a.cntlid, b.cntlid]).toEqual([0x8000, 0x8001]);
    const q = new LoopQueue(target);
    const c = await q.submit(connectSqe(0, 31, 5000), connectData(SUBNQN, HOSTNQN));
    expect(c.status).toBe(SC.CONNECT_CTRL_BUSY); // transient: no DNR
    a.admin.disconnect();
    await settle();
    const d = await connectAdmin(target);
    expect(d.cntlid).toBe(0x8000);
  });

  it('rejects authentication and unknown fabrics commands', async () => {
    const { target } = makeTarget();
    const { admin } = await connectAdmin(target);
    const auth = encodeSqe({ opcode: 0x7f, fctype: 0x05, sglLength: 0 });
    expect((await admin.submit(auth)).status).toBe(SC.INVALID_OPCODE | DNR);
    const bogusProp = propGetSqe(0x30);
    expect((await admin.submit(bogusProp)).status).toBe(SC.INVALID_FIELD | DNR);
    expect((await admin.submit(propSetSqe(PROP.CAP, 0))).status).toBe(SC.INVALID_FIELD | DNR);
  });
});
