/**
 * Async events, features, keep-alive and the controller state machine (reset,
 * shutdown, teardown).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ADMIN, FID, LID, PROP } from '../../../engine/src/protocol/opcodes.js';
import { encodeSqe } from '../../../engine/src/protocol/sqe.js';
import { decodeAnaLog } from '../../../engine/src/protocol/logpages.js';
import { DNR, SC } from '../../../engine/src/protocol/status.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import type { LoopCompletion } from '../../../engine/src/transport/loop.js';
import {
  CC_LINUX,
  SUBNQN,
  aerSqe,
  connectAdmin,
  connectIo,
  enable,
  getFeaturesSqe,
  getLogSqe,
  identifySqe,
  keepAliveSqe,
  makeTarget,
  ok,
  propGetSqe,
  propSetSqe,
  readSqe,
  session,
  setFeaturesSqe,
  settle,
} from './helpers.js';

function track(p: Promise<LoopCompletion>): { done?: LoopCompletion } {
  const box: { done?: LoopCompletion } = {};
  void p.then((c) => (box.done = c));
  return box;
}

const newBackend = () => new MemoryBackend({ sizeBytes: 1 << 20 });

describe('asynchronous events', () => {
  it('completes an AER with 0x00040002 when a namespace is added and fills the changed NS log', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    const aer = track(admin.submit(aerSqe()));
    await settle();
    expect(aer.done).toBeUndefined();
    target.addNamespace(SUBNQN, { nsid: 4, backend: newBackend(), nguid: '44'.repeat(16) });
    await settle();
    expect(aer.done).toMatchObject({ status: SC.SUCCESS, dw0: 0x00040002 });
    // Masked until the log is read with RAE = 0: a second change is not reported yet.
    const aer2 = track(admin.submit(aerSqe()));
    target.removeNamespace(SUBNQN, 4);
    target.addNamespace(SUBNQN, { nsid: 6, backend: newBackend(), nguid: '66'.repeat(16) });
    await settle();
    expect(aer2.done).toBeUndefined();
    const log = ok(await admin.submit(getLogSqe(LID.CHANGED_NS, 4096))).data!;
    expect([log.readUInt32LE(0), log.readUInt32LE(4), log.readUInt32LE(8)]).toEqual([4, 6, 0]);
    const again = ok(await admin.submit(getLogSqe(LID.CHANGED_NS, 4096))).data!;
    expect(again.readUInt32LE(0)).toBe(0); // cleared by the read
    target.removeNamespace(SUBNQN, 6);
    await settle();
    expect(aer2.done).toMatchObject({ status: SC.SUCCESS, dw0: 0x00040002 });
  });

  it('keeps the changed NS log and the mask when read with RAE', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    target.addNamespace(SUBNQN, { nsid: 4, backend: newBackend(), nguid: '44'.repeat(16) });
    ok(await admin.submit(getLogSqe(LID.CHANGED_NS, 4096, { rae: true })));
    const log = ok(await admin.submit(getLogSqe(LID.CHANGED_NS, 4096, { rae: true }))).data!;
    expect(log.readUInt32LE(0)).toBe(4);
  });

  it('completes an AER with 0x000C0302 on an ANA change; the log shows the new state', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    const aer = track(admin.submit(aerSqe()));
    target.setAnaState(1, 'inaccessible');
    await settle();
    expect(aer.done).toMatchObject({ status: SC.SUCCESS, dw0: 0x000c0302 });
    const log = decodeAnaLog(ok(await admin.submit(getLogSqe(LID.ANA, 4096))).data!);
    expect(log.chgcnt).toBe(2); // namespace 1 joining group 1, then its state
    expect(log.groups).toEqual([{ grpid: 1, chgcnt: 2, state: 3, nsids: [1] }]);
    // Setting the same state again is not a change.
    const aer2 = track(admin.submit(aerSqe()));
    target.setAnaState(1, 'inaccessible');
    await settle();
    expect(aer2.done).toBeUndefined();
    target.setAnaState(1, 'optimized');
    await settle();
    expect(aer2.done?.dw0).toBe(0x000c0302);
  });

  it('queues an event that arrives with no AER outstanding', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    target.setAnaState(1, 'change');
    const aer = ok(await admin.submit(aerSqe()));
    expect(aer.dw0).toBe(0x000c0302);
  });

  it('does not send events the host disabled with Set Features 0x0B', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    ok(await admin.submit(setFeaturesSqe(FID.ASYNC_EVENT, 1 << 8)));
    expect(ok(await admin.submit(getFeaturesSqe(FID.ASYNC_EVENT))).dw0).toBe(1 << 8);
    const aer = track(admin.submit(aerSqe()));
    target.setAnaState(1, 'non-optimized');
    await settle();
    expect(aer.done).toBeUndefined();
    expect((await admin.submit(setFeaturesSqe(FID.ASYNC_EVENT, 1 << 31))).status).toBe(
      SC.INVALID_FIELD | DNR,
    );
  });

  it('allows AERL + 1 = 4 outstanding AERs, then AER limit exceeded', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    for (let i = 0; i < 4; i++) void admin.submit(aerSqe());
    expect((await admin.submit(aerSqe())).status).toBe(SC.AER_LIMIT | DNR);
  });
});

describe('features', () => {
  const table: Array<[string, number, number, number, number]> = [
    ['number of queues default', FID.NUM_QUEUES, 0, SC.SUCCESS, 7 | (7 << 16)],
    ['KATO from Connect', FID.KATO, 0, SC.SUCCESS, 5000],
    ['VWC enabled, present on every controller', FID.VOLATILE_WC, 0, SC.SUCCESS, 1],
    ['timestamp unsupported', FID.TIMESTAMP, 0, SC.INVALID_FIELD | DNR, 0],
    ['unknown FID', 0x55, 0, SC.INVALID_FIELD | DNR, 0],
    ['supported capabilities', FID.KATO, 3, SC.SUCCESS, 4],
  ];
  it.each(table)('Get Features: %s', async (_n, fid, sel, status, dw0) => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    const c = await admin.submit(getFeaturesSqe(fid, 0, sel));
    expect(c.status).toBe(status);
    if (status === SC.SUCCESS) expect(c.dw0).toBe(dw0);
  });

  it('number of queues rejects 0xFFFF, grants the smaller of SQ and CQ asks', async () => {
    const { target } = makeTarget();
    const { admin } = await connectAdmin(target); // before any I/O queue, as Linux asks
    await enable(admin);
    expect((await admin.submit(setFeaturesSqe(FID.NUM_QUEUES, 0xffff))).status).toBe(
      SC.INVALID_FIELD | DNR,
    );
    expect(ok(await admin.submit(setFeaturesSqe(FID.NUM_QUEUES, 1 | (3 << 16)))).dw0).toBe(
      1 | (1 << 16),
    );
  });

  it('rejects Set Features with SV and Set Host Identifier; returns the host id', async () => {
    const { target } = makeTarget();
    const { admin } = await session(target);
    expect((await admin.submit(setFeaturesSqe(FID.KATO | (1 << 31), 1000))).status).toBe(
      0x10d | DNR,
    );
    expect((await admin.submit(setFeaturesSqe(FID.HOST_ID, 1))).status).toBe(
      SC.CMD_SEQ_ERROR | DNR,
    );
    const sqe = getFeaturesSqe(FID.HOST_ID, 1);
    sqe.writeUInt32LE(16, 32);
    expect(ok(await admin.submit(sqe)).data!.toString('hex')).toBe(
      '6a0e8d6c1b7a4c4e9b3e0a1b2c3d4e5f',
    );
  });

  it('answers Keep Alive, refuses it with KATO 0, and Abort says "not aborted"', async () => {
    const { target } = makeTarget();
    const { admin } = await connectAdmin(target, SUBNQN, undefined, 0);
    await enable(admin);
    expect((await admin.submit(keepAliveSqe())).status).toBe(SC.KA_TIMEOUT_INVALID);
    ok(await admin.submit(setFeaturesSqe(FID.KATO, 3000)));
    ok(await admin.submit(keepAliveSqe()));
    const abort = ok(await admin.submit(encodeSqe({ opcode: ADMIN.ABORT, cdw10: 5 << 16 })));
    expect(abort.dw0).toBe(1);
  });
});

describe('keep-alive', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('closes every queue of a controller whose host went quiet', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { target } = makeTarget({ kaSlackMs: 500 });
    const { admin, io } = await session(target);
    // Traffic keeps it alive (TBKAS): commands in every period.
    for (let i = 0; i < 5; i++) {
      ok(await admin.submit(keepAliveSqe()));
      vi.advanceTimersByTime(5500);
    }
    expect(admin.isClosed).toBe(false);
    // Silence: dead within two periods.
    vi.advanceTimersByTime(11_000);
    await settle();
    expect(admin.closedReason).toMatch(/keep-alive/);
    expect(io.closedReason).toMatch(/keep-alive/);
    expect(target.listControllers()).toEqual([]);
  });

  it('does not time out a controller with KATO 0', async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const { target } = makeTarget();
    const { admin } = await connectAdmin(target, SUBNQN, undefined, 0);
    vi.advanceTimersByTime(600_000);
    expect(admin.isClosed).toBe(false);
  });
});

describe('controller reset and shutdown', () => {
  it('CC.EN 1 -> 0 clears RDY and closes the I/O queues; properties keep working', async () => {
    const { target } = makeTarget();
    const { admin, io } = await session(target);
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX)));
    expect(ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0).toBe(0);
    await settle();
    expect(io.closedReason).toMatch(/reset/);
    expect((await admin.submit(identifySqe(1))).status).toBe(SC.CMD_SEQ_ERROR | DNR);
    // And it can be enabled again.
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX | 1)));
    expect(ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0).toBe(1);
  });

  it('an invalid CC on enable sets CFS', async () => {
    const { target } = makeTarget();
    const { admin } = await connectAdmin(target);
    ok(await admin.submit(propSetSqe(PROP.CC, (7 << 16) | (4 << 20) | 1)));
    expect(ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0).toBe(2);
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX)));
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX | 1)));
    expect(ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0).toBe(1);
  });

  it('CC.SHN on a controller whose enable failed reports SHST complete', async () => {
    // Before: CSTS stayed CFS with SHST 0, and a host deleting that controller waited its
    // whole shutdown timeout (5 s for Linux) for a shutdown that never came.
    const { target } = makeTarget();
    const { admin } = await connectAdmin(target);
    const badIosqes = (7 << 16) | (4 << 20) | 1;
    ok(await admin.submit(propSetSqe(PROP.CC, badIosqes)));
    expect(ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0).toBe(2);
    ok(await admin.submit(propSetSqe(PROP.CC, badIosqes | (1 << 14))));
    await settle();
    expect((ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0 >>> 2) & 3).toBe(2);
  });

  it('CC.SHN flushes, reports SHST in progress then complete, and refuses I/O', async () => {
    const { target, backend } = makeTarget();
    const { admin, io } = await session(target);
    let release: (() => void) | undefined;
    vi.spyOn(backend, 'flush').mockImplementation((cb) => (release = () => cb(null)));
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX | 1 | (1 << 14))));
    expect(ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0).toBe(1 << 2);
    release!();
    expect(ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0).toBe(2 << 2);
    await settle();
    expect(io.isClosed).toBe(true);
    expect((await admin.submit(identifySqe(1))).status).toBe(SC.CMD_SEQ_ERROR | DNR);
  });

  it('a second shutdown reports complete only once its own flush is done', async () => {
    const { target, backend } = makeTarget();
    const { admin } = await session(target);
    const flushes: (() => void)[] = [];
    vi.spyOn(backend, 'flush').mockImplementation((cb) => void flushes.push(() => cb(null)));
    const csts = async () => ok(await admin.submit(propGetSqe(PROP.CSTS))).dw0;
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX | 1 | (1 << 14))));
    expect(await csts()).toBe(1 << 2);
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX))); // reset while it flushes
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX | 1)));
    ok(await admin.submit(propSetSqe(PROP.CC, CC_LINUX | 1 | (1 << 14))));
    expect(flushes).toHaveLength(2);
    flushes[0]!(); // the first shutdown's flush: not this one's
    // Before: SHST complete (8) here, with the data of the second not yet durable.
    expect(await csts()).toBe(1 << 2);
    flushes[1]!();
    expect(await csts()).toBe(2 << 2);
  });

  it('admin queue close deletes the controller, fails AERs with Internal|DNR, closes I/O queues', async () => {
    const { target } = makeTarget();
    const { admin, io } = await session(target);
    const aer = track(admin.submit(aerSqe()));
    admin.disconnect();
    await settle();
    expect(aer.done?.status).toBe(SC.INTERNAL | DNR);
    expect(io.isClosed).toBe(true);
    expect(target.listControllers()).toEqual([]);
  });

  it('closing an I/O queue frees its qid for a new connection', async () => {
    const { target } = makeTarget();
    const { cntlid, io } = await session(target);
    io.disconnect();
    await settle();
    const { q, c } = await connectIo(target, cntlid, 1, 63);
    ok(c);
    expect(q.queueSize).toBe(64);
    ok(await q.submit(readSqe(0, 1)));
  });

  it('removing the subsystem deletes its controllers', async () => {
    const { target } = makeTarget();
    const { admin, io } = await session(target);
    target.removeSubsystem(SUBNQN);
    await settle();
    expect(admin.isClosed && io.isClosed).toBe(true);
  });
});
