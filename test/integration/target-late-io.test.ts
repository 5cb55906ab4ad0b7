/**
 * Commands whose data moves late, timed and checked when they start on the backend:
 * reads that wait for their connection's READ_BUDGET (a host not taking its data), and
 * writes whose data the host sends late after the R2T. The namespace's latency, which
 * the slow-I/O alert watches, is the disk's, not the host's or its link's; a read that
 * waited is refused when the node gave its ANA group up meanwhile. A real Target over
 * NVMe/TCP on 127.0.0.1 and a raw scripted host.
 */
import { afterEach, expect, it } from 'vitest';
import { Target } from '../../engine/src/core/index.js';
import { IO } from '../../engine/src/protocol/opcodes.js';
import { encodeCapsuleCmd, PduFlag, PduType } from '../../engine/src/protocol/pdu.js';
import { readCqe } from '../../engine/src/protocol/pdu-capsule.js';
import { SC } from '../../engine/src/protocol/status.js';
import { MemoryBackend } from '../../engine/src/storage/memory.js';
import type { TcpTransport } from '../../engine/src/transport/tcp/index.js';
import { adminConnect, enableController, ioConnect, RawHost, rwSqe } from '../helpers/raw-nvme.js';
import { serveOnLoopback } from '../helpers/target.js';

const NQN = 'nqn.2026-01.io.branchsan.test:read-budget';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:0000eeee-0000-4000-8000-000000000002';

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

async function serve() {
  const target = new Target();
  target.addSubsystem({ nqn: NQN, serial: 'BUDGET1', model: 'BranchSAN', hosts: [HOST] });
  target.addNamespace(NQN, {
    nsid: 1,
    backend: new MemoryBackend({ sizeBytes: 32 << 20 }),
    nguid: 'bd'.repeat(16),
  });
  const { transport, port } = await serveOnLoopback(target, { readBudget: 256 * 1024 });
  stops.push(async () => {
    target.close();
    await transport.close();
  });
  const admin = await RawHost.connect(port);
  const h = await RawHost.connect(port);
  stops.push(async () => {
    admin.close();
    h.close();
  });
  const cntlid = (await adminConnect(admin, { subnqn: NQN, hostnqn: HOST })).dw0 & 0xffff;
  await enableController(admin);
  expect((await ioConnect(h, { subnqn: NQN, hostnqn: HOST, cntlid, qid: 1 })).status).toBe(0);
  return { target, transport, h };
}

const N = 30; // reads of 1 MiB: the queue holds 32
const NLB = 2048; // 1 MiB of 512-byte blocks

/** N reads of 1 MiB in one chunk to a host that reads nothing; resolves once some wait. */
async function readsThatWait(h: RawHost, transport: TcpTransport): Promise<void> {
  h.socket.pause();
  const cmds: Buffer[] = [];
  for (let cid = 0; cid < N; cid++) {
    const sqe = rwSqe({ opcode: IO.READ, cid, nsid: 1, slba: cid * NLB, nlb: NLB });
    cmds.push(...encodeCapsuleCmd(sqe, null, h.dg));
  }
  h.socket.write(Buffer.concat(cmds));
  await expect.poll(() => waiting(transport)).toBeGreaterThan(0);
}

const waiting = (t: TcpTransport) => Math.max(...t.connections().map((c) => c.readWaiting));

/** Reads on until every read has ended; the status of each, by CID. */
async function statuses(h: RawHost): Promise<Map<number, number>> {
  h.socket.resume();
  const got = new Map<number, number>();
  while (got.size < N) {
    const p = await h.next(10_000);
    if (p.type === PduType.CapsuleResp) {
      const cqe = readCqe(p.cqe);
      got.set(cqe.cid, cqe.status);
    } else if (p.type === PduType.C2HData && p.flags & PduFlag.SUCCESS) got.set(p.cccid, 0);
  }
  return got;
}

it('times a read from its start on the backend, not from its wait for the host to read', async () => {
  const { target, transport, h } = await serve();
  // Once the kernel's socket buffers are full, the rest wait for the budget (256 KiB)
  // for as long as the host takes nothing: 600 ms.
  await readsThatWait(h, transport);
  await new Promise((r) => setTimeout(r, 600));
  expect([...(await statuses(h)).values()].every((s) => s === 0)).toBe(true);

  const stats = target.namespaceStats(NQN, 1)!;
  expect(stats.readOps).toBe(N);
  // From memory a read takes microseconds; timed from the parse, most of them took
  // the 600 ms the host did not read (a mean of several hundred ms).
  expect(stats.readLatencyUs / stats.readOps).toBeLessThan(100_000);
});

it('refuses a read that waited past the moment this node gave its group up', async () => {
  const { target, transport, h } = await serve();
  await readsThatWait(h, transport);
  const late = waiting(transport);
  target.setAnaState(1, 'inaccessible'); // a failover: the other node may have newer data
  const got = [...(await statuses(h)).values()];
  expect(got.filter((s) => s === SC.ANA_INACCESSIBLE)).toHaveLength(late);
  expect(got.filter((s) => s === 0)).toHaveLength(N - late);
});

it('times a write from the arrival of its data, not from its command', async () => {
  const { target, h } = await serve();
  const data = Buffer.alloc(64 * 1024, 0x5a);
  h.command(rwSqe({ opcode: IO.WRITE, cid: 7, nsid: 1, slba: 0, nlb: data.length / 512 }));
  const r2t = await h.nextOf(PduType.R2T);
  await new Promise((r) => setTimeout(r, 600)); // a slow link, or a slow host
  h.h2c(r2t.cccid, r2t.ttag, 0, data, true);
  expect((await h.nextCqe()).status).toBe(0);
  const stats = target.namespaceStats(NQN, 1)!;
  expect(stats.writeOps).toBe(1);
  // timed from the command, it took the 600 ms the data took to come
  expect(stats.writeLatencyUs).toBeLessThan(100_000);
});
