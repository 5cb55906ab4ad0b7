/**
 * Reads that wait for their connection's READ_BUDGET (a host not taking its data) are
 * timed from when they start on the backend: the namespace's read latency, which the
 * slow-I/O alert watches, is the disk's, not the host's reading speed. A real Target
 * over NVMe/TCP on 127.0.0.1 and a raw scripted host.
 */
import { afterEach, expect, it } from 'vitest';
import { Target } from '../../engine/src/core/index.js';
import { IO } from '../../engine/src/protocol/opcodes.js';
import { encodeCapsuleCmd, PduFlag, PduType } from '../../engine/src/protocol/pdu.js';
import { readCqe } from '../../engine/src/protocol/pdu-capsule.js';
import { MemoryBackend } from '../../engine/src/storage/memory.js';
import { adminConnect, enableController, ioConnect, RawHost, rwSqe } from '../helpers/raw-nvme.js';
import { serveOnLoopback } from '../helpers/target.js';

const NQN = 'nqn.2026-01.io.branchsan.test:read-budget';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:0000eeee-0000-4000-8000-000000000002';

const stops: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

it('times a read from its start on the backend, not from its wait for the host to read', async () => {
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

  // 30 reads of 1 MiB in one chunk, to a host that takes nothing for 600 ms: once the
  // kernel's socket buffers are full, the rest wait for the budget (256 KiB) that long.
  h.socket.pause();
  const n = 30; // the queue holds 32
  const nlb = 2048; // 1 MiB of 512-byte blocks
  const cmds: Buffer[] = [];
  for (let cid = 0; cid < n; cid++) {
    const sqe = rwSqe({ opcode: IO.READ, cid, nsid: 1, slba: cid * nlb, nlb });
    cmds.push(...encodeCapsuleCmd(sqe, null, h.dg));
  }
  h.socket.write(Buffer.concat(cmds));
  await expect.poll(() => transport.connections().some((c) => c.readWaiting > 0)).toBe(true);
  await new Promise((r) => setTimeout(r, 600));
  h.socket.resume();
  let done = 0;
  while (done < n) {
    const p = await h.next(10_000);
    if (p.type === PduType.CapsuleResp) {
      expect(readCqe(p.cqe).status).toBe(0);
      done++;
    } else if (p.type === PduType.C2HData && p.flags & PduFlag.SUCCESS) done++;
  }

  const stats = target.namespaceStats(NQN, 1)!;
  expect(stats.readOps).toBe(n);
  // From memory a read takes microseconds; timed from the parse, most of them took
  // the 600 ms the host did not read (a mean of several hundred ms).
  expect(stats.readLatencyUs / stats.readOps).toBeLessThan(100_000);
});
