/**
 * Configuration changes while a volume's disk stalls (an ext4 frozen with fsfreeze, as
 * a disk that stops answering): removing that volume returns after a bounded wait
 * instead of holding every later change until the disk comes back, and its file cannot
 * be served again while a stale write may still land in it. Needs root, mkfs.ext4, a
 * loop mount and fsfreeze; skipped with the reason otherwise.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { RETIRE_WAIT_MS } from '../../engine/src/service/target-runtime.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { mountExt4 } from '../helpers/ext4.js';
import { freePort } from '../helpers/linux-host.js';
import { tryRun } from '../unit/storage/helpers.js';

const NQN = 'nqn.2026-11.io.branchsan.test:stall';
const OTHER = 'nqn.2026-11.io.branchsan.test:other';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:33333333-2222-3333-4444-555555555555';

let root: string;
let disk: string | { refused: string };
let engine: RunningEngine | undefined;
let api: SocketClient | undefined;

beforeAll(() => {
  root = tempDir();
  disk = mountExt4(path.join(root, 'disk'));
});
afterAll(async () => {
  api?.close();
  await engine?.stop();
  if (typeof disk === 'string') {
    tryRun('fsfreeze', ['--unfreeze', disk]);
    tryRun('umount', [disk]);
  }
});

describe('a volume whose disk stalls', () => {
  it('is removed after a bounded wait, other changes go on, and its file is not served again until it closed', async (ctx) => {
    if (typeof disk !== 'string') return ctx.skip(`needs an ext4 loop mount: ${disk.refused}`);
    const dir = disk;
    engine = await startEngine({ dataDir: path.join(root, 'data') });
    api = await connectSocket(engine.socketPath);
    const port = await freePort();
    await api.call('target.port.add', { host: '127.0.0.1', port });
    await api.call('target.subsystem.create', { nqn: NQN, hosts: [HOST] });
    await api.call('target.subsystem.create', { nqn: OTHER });
    const file = path.join(dir, 'vol.img');
    const add = (create: boolean) =>
      api!.call('target.namespace.add', {
        nqn: NQN,
        backend: { kind: 'file', path: file, ...(create ? { createSizeBytes: 8 << 20 } : {}) },
      });
    await add(true);
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: NQN,
      hostnqn: HOST,
    });
    const ns = await ctrl.namespace(1);
    await ns.write(0, Buffer.alloc(4096, 1));
    const frozen = tryRun('fsfreeze', ['--freeze', dir]);
    if ('refused' in frozen) return ctx.skip(`needs fsfreeze: ${frozen.refused}`);
    let stuck: Promise<unknown> = Promise.resolve();
    try {
      stuck = ns.write(8, Buffer.alloc(4096, 2)).catch(() => undefined); // blocks in the kernel
      await new Promise((r) => setTimeout(r, 300));
      const started = Date.now();
      // Before: this waited for the disk (for good, here), and every change behind it too.
      const removed = await Promise.race([
        api.call('target.namespace.remove', { nqn: NQN, nsid: 1 }).then(() => 'removed'),
        new Promise((r) => setTimeout(r, RETIRE_WAIT_MS + 8000, 'still waiting')),
      ]);
      expect(removed).toBe('removed');
      expect(Date.now() - started).toBeGreaterThanOrEqual(RETIRE_WAIT_MS - 100);
      await api.call('target.host.allow', { nqn: OTHER, hostNqn: HOST });
      const err = await apiError(
        api.call('target.namespace.add', {
          nqn: OTHER,
          backend: { kind: 'file', path: path.join(dir, '.', 'vol.img') },
        }),
      );
      expect(err.code).toBe(ErrorCode.Unavailable);
      expect(err.message).toBe(
        `${path.join(dir, '.', 'vol.img')} still belongs to removed namespace 1 of ${NQN}: its storage has not finished the writes in flight.`,
      );
    } finally {
      tryRun('fsfreeze', ['--unfreeze', dir]);
    }
    await stuck;
    await ctrl.close();
    // closed once the disk answered: the file serves again
    for (let i = 0; ; i++) {
      const r = await add(false).then(
        () => null,
        (e: unknown) => e as Error,
      );
      if (!r) break;
      if (i > 50) throw r;
      await new Promise((res) => setTimeout(res, 100));
    }
    expect(engine.lines.some((l) => l.msg === 'removed namespace closed at last')).toBe(true);
  }, 40_000);
});
