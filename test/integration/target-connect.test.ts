/**
 * Connect on the target, where one connection could hold more than it should: several
 * Connects on one connection (their data sent by R2T, so all are parsed before any runs),
 * a connection that stops after the IC exchange, and a Connect through a port that does
 * not expose the subsystem. Real in-process Targets on 127.0.0.1, a raw scripted host.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Target } from '../../engine/src/core/index.js';
import { encodeH2CData, PduType } from '../../engine/src/protocol/pdu.js';
import { readCqe, SGL_TRANSPORT_DATA_BLOCK } from '../../engine/src/protocol/pdu-capsule.js';
import { DNR, SC } from '../../engine/src/protocol/status.js';
import { MemoryBackend } from '../../engine/src/storage/memory.js';
import { listenTcp, type TcpTransport } from '../../engine/src/transport/tcp/index.js';
import {
  adminConnect,
  connectData,
  connectSqe,
  enableController,
  ioConnect,
  RawHost,
} from '../helpers/raw-nvme.js';
import { serveOnLoopback } from '../helpers/target.js';
import { createLogger, type Logger } from '../../engine/src/util/log.js';
import { DISCOVERY_NQN } from '../../engine/src/protocol/opcodes.js';

const NQN = 'nqn.2026-01.io.branchsan.test:target-connect';
const OTHER = 'nqn.2026-01.io.branchsan.test:target-connect-other';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:0000eeee-0000-4000-8000-000000000001';
const SEQ_ERROR = SC.CMD_SEQ_ERROR | DNR;

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

async function start(
  tcp: { icTimeoutMs?: number; maxPendingPerAddress?: number; log?: Logger } = {},
  cntlids?: [number, number],
) {
  const target = new Target(cntlids ? { cntlidMin: cntlids[0], cntlidMax: cntlids[1] } : {});
  target.addSubsystem({ nqn: NQN, serial: 'CONNECT1', model: 'BranchSAN', hosts: [HOST] });
  target.addNamespace(NQN, {
    nsid: 1,
    backend: new MemoryBackend({ sizeBytes: 1 << 20 }),
    nguid: 'ce'.repeat(16),
  });
  const { transport, port } = await serveOnLoopback(target, tcp);
  stops.push(async () => {
    target.close();
    await transport.close();
  });
  return { target, transport, port };
}

async function raw(port: number, from?: string): Promise<RawHost> {
  const h = await RawHost.connect(port, '127.0.0.1', from);
  stops.push(async () => h.close());
  return h;
}

/**
 * Connects whose data the target asks for by R2T: all are parsed before any runs. The
 * statuses come in the order the target answered (refusals at parse first).
 */
async function connectsByR2T(h: RawHost, qids: number[], cntlid = 0xffff, ic = true) {
  if (ic) await h.ic();
  qids.forEach((qid, i) => h.command(connectSqe(i + 1, 31, qid, 0, SGL_TRANSPORT_DATA_BLOCK)));
  const statuses: number[] = [];
  const data = connectData({ subnqn: NQN, hostnqn: HOST, cntlid });
  for (let i = 0; i < qids.length; i++) {
    const pdu = await h.next();
    if (pdu.type === PduType.R2T) {
      h.h2c(pdu.cccid, pdu.ttag, 0, data, true);
      statuses.push((await h.nextCqe()).status);
    } else {
      // Refused at parse: a CapsuleResp, ahead of the accepted Connect's R2T.
      if (pdu.type !== PduType.CapsuleResp) throw new Error(`unexpected PDU type ${pdu.type}`);
      statuses.push(readCqe(pdu.cqe).status);
    }
  }
  return statuses;
}

describe('one Connect per connection', () => {
  it('refuses a second admin Connect while the first waits for its data; no controller is left behind', async () => {
    const { target, port } = await start({}, [1, 4]);
    for (let round = 0; round < 3; round++) {
      const h = await raw(port);
      const statuses = await connectsByR2T(h, [0, 0, 0, 0]);
      // Before the fix: four successes, four controllers for one connection, three of
      // them tied to nothing and never deleted (KATO 0): this range was full after one round.
      expect(statuses).toEqual([SEQ_ERROR, SEQ_ERROR, SEQ_ERROR, 0]);
      expect(target.listControllers()).toHaveLength(1);
      h.close();
      await h.closed;
      await expect.poll(() => target.listControllers().length).toBe(0);
    }
    // And a well-behaved host still gets a controller.
    const good = await raw(port);
    expect((await adminConnect(good, { subnqn: NQN, hostnqn: HOST })).status).toBe(0);
  });

  it('refuses a second I/O Connect on one connection, so a closed connection frees its QID', async () => {
    const { target, port } = await start();
    const admin = await raw(port);
    const cntlid = (await adminConnect(admin, { subnqn: NQN, hostnqn: HOST })).dw0 & 0xffff;
    await enableController(admin);
    const h = await raw(port);
    expect(await connectsByR2T(h, [1, 2], cntlid)).toEqual([SEQ_ERROR, 0]);
    h.close();
    await h.closed;
    await expect.poll(() => target.listControllers()[0]!.ioQueues).toBe(0);
    // Before the fix: QID 1 stayed registered to the dead connection, and the host's
    // reconnect of I/O queue 1 got Command Sequence Error.
    const again = await raw(port);
    const cqe = await ioConnect(again, { subnqn: NQN, hostnqn: HOST, cntlid, qid: 1 });
    expect(cqe.status).toBe(0);
  });

  it('lets a host try again on the same connection after a refused Connect', async () => {
    const { port } = await start();
    const h = await raw(port);
    const refused = await adminConnect(h, { subnqn: OTHER, hostnqn: HOST });
    expect(refused.status).toBe(SC.CONNECT_INVALID_PARAM | DNR);
    h.command(connectSqe(2, 31, 0, 0), connectData({ subnqn: NQN, hostnqn: HOST }));
    expect((await h.nextCqe()).status).toBe(0);
  });

  it('lets a host retry a Connect whose data failed its digest, on the same connection', async () => {
    // Answered Transient Transport Error (no DNR: retry), but the queue stayed marked
    // as connecting, so the retry got Command Sequence Error with DNR until the
    // connection's Connect timer closed it.
    const { target, port } = await start();
    const h = await raw(port);
    await h.ic({ hdgst: false, ddgst: true });
    const data = connectData({ subnqn: NQN, hostnqn: HOST });
    h.command(connectSqe(1, 31, 0, 0, SGL_TRANSPORT_DATA_BLOCK));
    const r2t = await h.nextOf(PduType.R2T);
    const pdu = Buffer.concat(
      encodeH2CData({ cccid: 1, ttag: r2t.ttag, datao: 0, last: true }, data, h.dg),
    );
    pdu[pdu.length - 1]! ^= 1; // the data digest
    h.send(pdu);
    expect((await h.nextCqe()).status).toBe(SC.TRANSIENT_TR_ERR);
    expect(target.listControllers()).toHaveLength(0);
    expect(await connectsByR2T(h, [0], 0xffff, false)).toEqual([0]);
    expect(target.listControllers()).toHaveLength(1);
  });
});

describe('a connection that never connects', () => {
  it('is closed when no Connect follows the IC exchange in time', async () => {
    const { transport, port } = await start({ icTimeoutMs: 300 });
    const idle = await raw(port);
    await idle.ic();
    const connected = await raw(port);
    expect((await adminConnect(connected, { subnqn: NQN, hostnqn: HOST })).status).toBe(0);
    // Before the fix: still open after any time; nothing (no controller, no keep-alive)
    // bounded it.
    await Promise.race([idle.closed, new Promise((r) => setTimeout(r, 3000))]);
    expect(idle.isClosed).toBe(true);
    await new Promise((r) => setTimeout(r, 400));
    expect(connected.isClosed).toBe(false); // a Connect ends the deadline
    expect(transport.connections()).toHaveLength(1);
  });
});

describe('ports that expose some subsystems', () => {
  it('refuses a Connect to a subsystem through a port that does not expose it', async () => {
    const target = new Target();
    for (const nqn of [NQN, OTHER]) {
      target.addSubsystem({ nqn, serial: 'PORTS1', model: 'BranchSAN', allowAnyHost: true });
    }
    const transports: TcpTransport[] = [];
    stops.push(async () => {
      target.close();
      for (const t of transports) await t.close();
    });
    const listen = async (portId: number, subsystems: string[]) => {
      const t = await listenTcp({ host: '127.0.0.1', port: 0, portId }, target);
      transports.push(t);
      const port = t.address().port;
      const info = { portId, trtype: 'tcp', adrfam: 'ipv4', traddr: '127.0.0.1' } as const;
      target.addPort({ ...info, trsvcid: String(port) }, { subsystems });
      return port;
    };
    const onlyOther = await listen(7, [OTHER]);
    const both = await listen(8, [NQN, OTHER]);
    const via7 = await adminConnect(await raw(onlyOther), { subnqn: NQN, hostnqn: HOST });
    // Before the fix: a controller, though port 7 exposes (and discovery lists) only OTHER.
    expect(via7.status).toBe(SC.CONNECT_INVALID_PARAM | DNR);
    expect(via7.dw0).toBe((1 << 16) | 256); // the SUBNQN field of the Connect data
    expect((await adminConnect(await raw(both), { subnqn: NQN, hostnqn: HOST })).status).toBe(0);
    expect(
      (await adminConnect(await raw(onlyOther), { subnqn: OTHER, hostnqn: HOST })).status,
    ).toBe(0);
  });
});

describe('connections from one address that connect no NVM subsystem', () => {
  it('are capped per address, so one peer cannot lock out the hosts', async () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'warn', sink: { write: (l: string) => lines.push(l) } });
    const { port } = await start({ maxPendingPerAddress: 3, log });
    const PEER = '127.0.0.2'; // another machine: its own source address
    // Discovery is open to anyone, and a connection before Connect is nobody's yet.
    const disco = await raw(port, PEER);
    expect((await adminConnect(disco, { subnqn: DISCOVERY_NQN, hostnqn: HOST })).status).toBe(0);
    const idle = [await raw(port, PEER), await raw(port, PEER)];
    await idle[0]!.ic();
    const extra = await raw(port, PEER);
    await extra.closed; // closed on arrival, before any PDU
    expect(extra.received).toEqual([]);
    expect(lines.join('')).toContain(`${PEER} has 3 connections without a connected NVM`);
    // Another address is not held back: the host connects its admin and I/O queues.
    const admin = await raw(port);
    const c = await adminConnect(admin, { subnqn: NQN, hostnqn: HOST });
    expect(c.status).toBe(0);
    await enableController(admin);
    for (let qid = 1; qid <= 3; qid++) {
      const q = await raw(port);
      expect((await ioConnect(q, { subnqn: NQN, hostnqn: HOST, cntlid: c.dw0, qid })).status).toBe(
        0,
      );
    }
    // Its connected queues do not count: three more before Connect are still taken.
    for (let i = 0; i < 3; i++) expect((await (await raw(port)).ic()).type).toBe(PduType.ICResp);
    // A connection of the peer that goes frees its place.
    idle[1]!.close();
    await idle[1]!.closed;
    let next: RawHost | null = null;
    for (let i = 0; i < 50 && !next; i++) {
      const h = await raw(port, PEER);
      const r = await h.ic().then(
        (p) => p,
        () => null,
      );
      if (r?.type === PduType.ICResp) next = h;
    }
    expect(next).not.toBeNull();
  });
});
