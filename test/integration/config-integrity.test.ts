/**
 * The management API keeps the configuration whole: configuration changes that race
 * each other or name the same backing file twice are refused with a clear error, what
 * the API reported matches the stored configuration after a restart, and a full data
 * directory gets a clear answer while NVMe/TCP keeps serving.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../contract/api.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { canMountTmpfs, fillFs, smallFs, unmountSmallFs } from '../helpers/small-fs.js';

const NQN = 'nqn.2026-11.io.branchsan.test:config-integrity';

let engine: RunningEngine;
let api: SocketClient;
let dir: string;

beforeAll(async () => {
  dir = tempDir();
  engine = await startEngine({ dataDir: path.join(dir, 'data') });
  api = await connectSocket(engine.socketPath);
  await api.call('target.subsystem.create', { nqn: NQN });
});
afterAll(async () => {
  api?.close();
  await engine?.stop();
});

/** A namespace on a new 1 MiB file at `img`. */
const addNewFile = (img: string, nsid?: number) =>
  api.call('target.namespace.add', {
    nqn: NQN,
    ...(nsid !== undefined ? { nsid } : {}),
    backend: { kind: 'file', path: img, createSizeBytes: 1 << 20 },
  });

describe('one backing file serves one namespace', () => {
  it('refuses the same file under another spelling of its path', async () => {
    const img = path.join(dir, 'spelled.img');
    await addNewFile(img, 1);
    fs.symlinkSync(img, path.join(dir, 'link.img'));
    for (const other of [
      `${dir}/./spelled.img`,
      `${dir}//spelled.img`,
      path.join(dir, 'link.img'),
    ]) {
      const err = await apiError(
        api.call('target.namespace.add', { nqn: NQN, backend: { kind: 'file', path: other } }),
      );
      expect(err.code).toBe(ErrorCode.Conflict);
      expect(err.message).toContain('already a namespace');
    }
    const nss = (await api.call('target.config', {})).subsystems[0]!.namespaces;
    expect(nss.map((n) => n.nsid)).toEqual([1]);
  });

  it('refuses the path of a served volume whose file was deleted or replaced', async () => {
    const img = path.join(dir, 'deleted.img');
    await addNewFile(img, 20);
    fs.rmSync(img); // the engine still serves the deleted file it holds open
    const err = await apiError(addNewFile(img));
    expect(err.code).toBe(ErrorCode.Conflict);
    expect(err.message).toBe(`${img} is already a namespace.`);
    const nss = (await api.call('target.config', {})).subsystems[0]!.namespaces;
    expect(nss.filter((n) => n.path === img)).toHaveLength(1);
  });

  it('refuses the same file added by two calls at once', async () => {
    const img = path.join(dir, 'raced.img');
    fs.writeFileSync(img, Buffer.alloc(1 << 20));
    const results = await Promise.allSettled(
      [10, 11].map((nsid) =>
        api.call('target.namespace.add', { nqn: NQN, nsid, backend: { kind: 'file', path: img } }),
      ),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    const nss = (await api.call('target.config', {})).subsystems[0]!.namespaces;
    expect(nss.filter((n) => n.path === img)).toHaveLength(1);
  });

  it('gives two concurrent port.add calls without a port id distinct ids', async () => {
    const { freePort } = await import('../helpers/linux-host.js');
    const ports = [await freePort(), await freePort()];
    const added = await Promise.all(
      ports.map((port) => api.call('target.port.add', { host: '127.0.0.1', port })),
    );
    expect(new Set(added.map((p) => p.portId)).size).toBe(2);
    const cfg = await api.call('target.config', {});
    expect(cfg.ports.map((p) => p.port).sort()).toEqual([...ports].sort());
  });
});

// Needs root to mount a small tmpfs for the data directory.
describe.skipIf(!canMountTmpfs)('a full data directory', () => {
  afterAll(() => unmountSmallFs());

  it('answers every change with a clear disk error, keeps serving NVMe/TCP and keeps the database intact', async () => {
    const mnt = smallFs('branchsan-full-', '8m');
    const dataDir = path.join(mnt, 'data');
    const full = await startEngine({ dataDir });
    const c = await connectSocket(full.socketPath);
    try {
      const nqn = 'nqn.2026-11.io.branchsan.test:full';
      await c.call('target.subsystem.create', { nqn, allowAnyHost: true });
      const { freePort } = await import('../helpers/linux-host.js');
      const port = await freePort();
      await c.call('target.port.add', { host: '127.0.0.1', port });
      fillFs(mnt);
      const create = await apiError(c.call('target.subsystem.create', { nqn: `${nqn}2` }));
      expect(create.code).toBe(ErrorCode.Unavailable);
      expect(create.data?.hint).toMatch(/free space/i);
      const settings = await apiError(
        c.call('settings.set', { events: { retentionDays: 10 } } as never),
      );
      expect(settings.code).toBe(ErrorCode.Unavailable);
      expect(settings.message).toMatch(/full/);
      expect(settings.data?.hint).toMatch(/free space/i);
      // still serving
      expect((await c.call('system.status', {})).pid).toBe(full.pid);
      const open = await new Promise<boolean>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
        s.once('error', () => resolve(false));
      });
      expect(open).toBe(true);
      fs.rmSync(path.join(mnt, 'filler'));
    } finally {
      c.close();
      await full.stop();
    }
    const db = new Database(path.join(dataDir, 'branchsan.db'), { readonly: true });
    expect(db.pragma('integrity_check')).toEqual([{ integrity_check: 'ok' }]);
    expect(db.prepare('SELECT nqn FROM subsystems').all()).toEqual([
      { nqn: 'nqn.2026-11.io.branchsan.test:full' },
    ]);
    db.close();
  });

  it('a restart on a full data directory serves the stored target, even with no byte free', async () => {
    const root = smallFs('branchsan-full-restart-', '8m');
    const dataDir = path.join(root, 'data');
    const first = await startEngine({ dataDir });
    const c = await connectSocket(first.socketPath);
    const { freePort } = await import('../helpers/linux-host.js');
    const port = await freePort();
    await c.call('target.subsystem.create', { nqn: NQN, allowAnyHost: true });
    await c.call('target.port.add', { host: '127.0.0.1', port });
    // A namespace whose file is gone by the restart: the restore records an event
    // for it, which a full disk refuses. Before, that stopped the whole start.
    const gone = path.join(tempDir(), 'gone.img');
    fs.writeFileSync(gone, Buffer.alloc(1 << 20));
    await c.call('target.namespace.add', { nqn: NQN, backend: { kind: 'file', path: gone } });
    c.close();
    await first.stop();
    fs.rmSync(gone);
    // Room for the database's journal, none for the start-up event.
    fillFs(root, 40);
    // Before the fix the start failed recording it (SQLITE_FULL) and the process kept
    // its web console open, serving nothing and ignoring SIGTERM.
    /** Starts the engine on dataDir; it must serve the stored port, and take connections. */
    const restartServes = async () => {
      const again = await startEngine({ dataDir });
      try {
        const a = await connectSocket(again.socketPath);
        expect(
          (await a.call('target.config', {})).ports.map((p: { port: number }) => p.port),
        ).toEqual([port]);
        a.close();
        const open = await new Promise<boolean>((resolve) => {
          const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve(true)));
          s.once('error', () => resolve(false));
        });
        expect(open).toBe(true);
      } finally {
        await again.stop();
      }
    };
    await restartServes();
    // Not a byte free: the lock (a link, no data block) and the database (exclusive,
    // no -shm file) still open. Before, the lock file's write failed and the engine exited.
    fillFs(root);
    expect(() => fs.writeFileSync(path.join(root, 'probe'), 'x')).toThrow(/ENOSPC/);
    await restartServes();
  });
});
