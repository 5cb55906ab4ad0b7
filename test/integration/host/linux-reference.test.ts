/**
 * The host library against the Linux kernel's own NVMe/TCP target (nvmet in QEMU):
 * connect, identify, write/read-verify over in-capsule and R2T paths, flush, write
 * zeroes, deallocate, errors, discovery, disconnect; with digests off and on.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  HostError,
  NvmeController,
  NvmeStatusError,
  discover,
  probeTarget,
  type NvmeNamespace,
} from '../../../engine/src/host/index.js';
import { FID, LID, NSID_ALL } from '../../../engine/src/protocol/opcodes.js';
import { referenceUnavailable, startReference, type ReferenceTarget } from './helpers.js';

const unavailable = referenceUnavailable();
if (unavailable) console.warn(`skipping Linux reference target tests: ${unavailable}`);

const MiB = 1024 * 1024;

describe.skipIf(unavailable !== null)('host library vs Linux nvmet (reference VM)', () => {
  let ref: ReferenceTarget;

  beforeAll(async () => {
    ref = await startReference();
  }, 180_000);

  afterAll(async () => {
    await ref?.stop();
  }, 30_000);

  it('reads the discovery log', async () => {
    const log = await discover({ host: '127.0.0.1', port: ref.port });
    const nvm = log.entries.filter((e) => e.subtype === 2);
    expect(nvm.map((e) => e.subnqn)).toContain(ref.nqn);
    expect(nvm[0]!.trtype).toBe(3);
    expect(nvm[0]!.trsvcid).toBe('4420');
  }, 60_000);

  // By NQN at the forwarded port: the log names the VM's own address (10.0.2.15:4420),
  // which only the VM's network reaches, and tests connect to loopback only.
  it('probe reports the kernel target and reads from it, with digests on', async () => {
    const r = await probeTarget({
      host: '127.0.0.1',
      port: ref.port,
      subnqn: ref.nqn,
      readSeconds: 0.3,
      digests: true,
    });
    expect(r.ok).toBe(true);
    const [sub] = r.subsystems;
    expect(sub!.controller!.model).toBe('Linux');
    expect(sub!.controller!.max_transfer_bytes).toBeNull(); // MDTS 0: no limit
    const [ns] = sub!.namespaces;
    expect(ns).toMatchObject({ nsid: 1, size_bytes: 64 * MiB, block_size: 512, problem: null });
    expect(ns!.read_test!.reads).toBeGreaterThan(0);
  }, 60_000);

  describe.each([
    { name: 'digests off', hdgst: false, ddgst: false },
    { name: 'header+data digests', hdgst: true, ddgst: true },
  ])('$name', ({ hdgst, ddgst }) => {
    let ctrl: NvmeController;
    let ns: NvmeNamespace;
    const states: string[] = [];

    beforeAll(async () => {
      ctrl = await NvmeController.connect({
        host: '127.0.0.1',
        port: ref.port,
        subnqn: ref.nqn,
        hdgst,
        ddgst,
        ioQueues: 2,
        queueSize: 32,
        onStateChange: (next) => states.push(next),
      });
      ns = await ctrl.namespace(1);
    }, 60_000);

    afterAll(async () => {
      await ctrl?.close();
    }, 30_000);

    it('identifies controller and namespace', async () => {
      expect(ctrl.state).toBe('live');
      const id = ctrl.identity;
      expect(id.subnqn).toBe(ref.nqn);
      expect(id.mn).toBe('Linux');
      expect(id.cntlid).toBe(ctrl.cntlid);
      expect(id.inCapsuleDataSize).toBeGreaterThanOrEqual(4096);
      expect(ctrl.ioQueueCount).toBe(2);
      expect(ctrl.ioQueueDepth).toBe(31); // 32 entries hold 31 commands
      expect(ctrl.vs).toBeGreaterThanOrEqual(0x10300);
      expect(ns.blockSize).toBe(512);
      expect(ns.sizeBytes).toBe(64 * MiB);
      expect(ns.ids.uuid).toMatch(/^[0-9a-f]{8}-/);
      expect(await ctrl.activeNamespaces()).toEqual([1]);
      const again = await ctrl.identifyController();
      expect(again.sn).toBe(id.sn);
    }, 60_000);

    // 4 KiB and 16 KiB go in-capsule (nvmet IOCCSZ: 16 KiB), the rest by R2T/H2CData.
    it.each([512, 4096, 16384, 16384 + 512, 65536, MiB])(
      'write/read-verifies %i bytes',
      async (size) => {
        const slba = 2048 + (size === MiB ? 4096 : 0);
        const data = randomBytes(size);
        await ns.write(slba, data);
        const back = await ns.read(slba, size / ns.blockSize);
        expect(back.equals(data)).toBe(true);
        const into = Buffer.alloc(size);
        const same = await ns.read(slba, size / ns.blockSize, { into, queue: 1 });
        expect(same).toBe(into);
        expect(into.equals(data)).toBe(true);
      },
      60_000,
    );

    it('keeps many commands in flight across both queues (QD 32 verify)', async () => {
      const n = 64;
      const blocks = Array.from({ length: n }, () => randomBytes(4096));
      await Promise.all(blocks.map((b, i) => ns.write(8192 + i * 8, b, { fua: i % 2 === 0 })));
      const back = await Promise.all(blocks.map((_, i) => ns.read(8192 + i * 8, 8)));
      back.forEach((b, i) => expect(b.equals(blocks[i]!)).toBe(true));
    }, 120_000);

    it('flushes, writes zeroes and deallocates', async () => {
      await ns.write(100, randomBytes(4096));
      await ns.flush();
      await ns.writeZeroes(100, 8);
      const z = await ns.read(100, 8);
      expect(z.every((b) => b === 0)).toBe(true);
      await ns.deallocate([{ slba: 200, nlb: 8 }]);
    }, 60_000);

    it('surfaces NVMe status errors with their name', async () => {
      const err = await ns.compare(0, Buffer.alloc(512)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(NvmeStatusError);
      expect((err as NvmeStatusError).statusName).toMatch(/^INVALID_OPCODE/);
      expect((err as NvmeStatusError).dnr).toBe(true);
      const beyond = await ns.read(ns.nsze, 1).catch((e: unknown) => e);
      expect(beyond).toBeInstanceOf(NvmeStatusError);
    }, 60_000);

    it('runs admin helpers: log page, features, keep alive', async () => {
      const smart = await ctrl.getLogPage({ lid: LID.SMART, length: 512, nsid: NSID_ALL });
      expect(smart.length).toBe(512);
      const nq = await ctrl.getFeatures(FID.NUM_QUEUES);
      expect((nq.dw0 & 0xffff) + 1).toBeGreaterThanOrEqual(2);
      await ctrl.keepAlive();
    }, 60_000);

    it('disconnects cleanly and refuses I/O afterwards', async () => {
      await ctrl.close();
      expect(ctrl.state).toBe('closed');
      expect(states).toEqual(['connecting', 'live', 'deleting', 'closed']);
      const err = await ns.read(0, 1).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HostError);
      expect((err as HostError).kind).toBe('closed');
      expect((err as HostError).maybeExecuted).toBe(false);
    }, 60_000);
  });

  it('reconnect() builds a new association with the data intact', async () => {
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port: ref.port,
      subnqn: ref.nqn,
    });
    try {
      const ns = await ctrl.namespace(1);
      const data = randomBytes(8192);
      await ns.write(4000, data);
      await ctrl.reconnect();
      expect(ctrl.state).toBe('live');
      expect((await ns.read(4000, 16)).equals(data)).toBe(true);
    } finally {
      await ctrl.close();
    }
  }, 60_000);
});
