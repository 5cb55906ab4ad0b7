/**
 * Target configuration through the engine's API: stored in SQLite, applied to the live
 * target, rebuilt on restart; invalid changes get clear errors and change nothing.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import { LOCAL_ACTOR, startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';

const NQN = 'nqn.2026-11.io.branchsan.test:vol1';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555';

let engine: RunningEngine;
let api: SocketClient;
let dir: string;
let nvmePort: number;

async function waitFor<T>(f: () => Promise<T | undefined>, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** A host on the allow-list, connected to the test subsystem. */
function connectHost(): Promise<NvmeController> {
  return NvmeController.connect({ host: '127.0.0.1', port: nvmePort, subnqn: NQN, hostnqn: HOST });
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

beforeAll(async () => {
  dir = tempDir();
  engine = await startEngine({ dataDir: path.join(dir, 'data') });
  api = await connectSocket(engine.socketPath);
  nvmePort = await freePort();
});
afterAll(async () => {
  api?.close();
  await engine?.stop();
});

describe('target configuration API', () => {
  it('creates a subsystem, a port and a file namespace', async () => {
    const sub = await api.call('target.subsystem.create', { nqn: NQN, hosts: [HOST] });
    expect(sub).toMatchObject({ nqn: NQN, allowAnyHost: false, hosts: [HOST], namespaces: [] });
    expect(sub.serial).toMatch(/^[\x20-\x7e]{1,20}$/);
    const port = await api.call('target.port.add', { host: '127.0.0.1', port: nvmePort });
    expect(port).toEqual({ portId: 1, host: '127.0.0.1', port: nvmePort });
    expect(await tcpOpen(nvmePort)).toBe(true);
    const ns = await api.call('target.namespace.add', {
      nqn: NQN,
      backend: { kind: 'file', path: path.join(dir, 'vol1.img'), createSizeBytes: 64 << 20 },
    });
    expect(ns).toMatchObject({ nsid: 1, backendKind: 'file', sizeBytes: 64 << 20, blockSize: 512 });
    expect(ns.nguid).toMatch(/^[0-9a-f]{32}$/);
    expect(fs.statSync(path.join(dir, 'vol1.img')).size).toBe(64 << 20);
  });

  it('refuses invalid changes with a code, a message and the field, and changes nothing', async () => {
    const before = await api.call('target.config', {});
    // what a real host sees of the live target, before and after
    const live = async () => {
      const ctrl = await connectHost();
      try {
        const nsids = await ctrl.activeNamespaces();
        const ns = await ctrl.namespace(1);
        return { nsids, size: ns.sizeBytes, nguid: ns.ids.nguid?.toString('hex') };
      } finally {
        await ctrl.close();
      }
    };
    const liveBefore = await live();
    expect(liveBefore.nsids).toEqual([1]);
    // thunks: each call starts only when its turn comes, so no refusal goes unobserved
    const cases: [() => Promise<unknown>, number, string | undefined, RegExp][] = [
      [
        () => api.call('target.subsystem.create', { nqn: NQN }),
        ErrorCode.Conflict,
        'nqn',
        /already exists/,
      ],
      [
        () => api.call('target.subsystem.create', { nqn: 'not-an-nqn' }),
        ErrorCode.InvalidParams,
        'nqn',
        /expected an NQN/,
      ],
      [
        () =>
          api.call('target.namespace.add', {
            nqn: NQN,
            nsid: 1,
            backend: { kind: 'memory', sizeBytes: 1 << 20 },
          }),
        ErrorCode.Conflict,
        'nsid',
        /already used/,
      ],
      [
        () =>
          api.call('target.namespace.add', {
            nqn: NQN,
            backend: { kind: 'file', path: path.join(dir, 'missing.img') },
          }),
        ErrorCode.NotFound,
        'backend',
        /missing\.img/,
      ],
      [
        () =>
          api.call('target.namespace.add', {
            nqn: NQN,
            backend: { kind: 'block', path: '/dev/branchsan-no-such-disk' },
          }),
        ErrorCode.NotFound,
        'backend',
        /^\/dev\/branchsan-no-such-disk does not exist \(ENOENT\)/,
      ],
      [
        () => api.call('target.namespace.add', { nqn: NQN, backend: { kind: 'file', path: dir } }),
        ErrorCode.InvalidParams,
        'backend',
        /./,
      ],
      [
        () => api.call('target.port.add', { host: '127.0.0.1', port: nvmePort }),
        ErrorCode.Conflict,
        'port',
        /already listens/,
      ],
      [
        () =>
          api.call('target.host.allow', {
            nqn: 'nqn.2026-11.io.branchsan.test:nope',
            hostNqn: HOST,
          }),
        ErrorCode.NotFound,
        'nqn',
        /does not exist/,
      ],
      [
        () => api.call('target.namespace.remove', { nqn: NQN, nsid: 7 }),
        ErrorCode.NotFound,
        'nsid',
        /does not exist/,
      ],
      [
        // a newline in a path would forge a line in events, mail and logs
        () =>
          api.call('target.namespace.add', {
            nqn: NQN,
            backend: { kind: 'file', path: '/tmp/a\nb.img', createSizeBytes: 1 << 20 },
          }),
        ErrorCode.InvalidParams,
        'backend.path',
        /control characters/,
      ],
      [
        // passes the schema, refused by the core: the field is the serial, not the NQN
        () =>
          api.call('target.subsystem.create', {
            nqn: 'nqn.2026-11.io.branchsan.test:blank-serial',
            serial: '   ',
          }),
        ErrorCode.InvalidParams,
        'serial',
        /^Invalid serial number "   ": 1\.\.20 characters\.$/,
      ],
    ];
    for (const [call, code, field, message] of cases) {
      const err = await apiError(call());
      expect(err.code, err.message).toBe(code);
      expect(err.message).toMatch(message);
      if (field) expect(err.data?.field).toBe(field);
    }
    // hints that fit what was asked (before: "pass a size" to a call that gave one,
    // "free space" for a directory, none at all for a missing device)
    const hintOf = async (backend: unknown) =>
      (await apiError(api.call('target.namespace.add', { nqn: NQN, backend } as never))).data?.hint;
    expect(
      await hintOf({
        kind: 'file',
        path: path.join(dir, 'nodir', 'v.img'),
        createSizeBytes: 1 << 20,
      }),
    ).toBe(
      `The directory ${path.join(dir, 'nodir')} does not exist: create it first (mkdir -p), or choose another path.`,
    );
    expect(await hintOf({ kind: 'file', path: dir })).toBe(
      'That is a directory: give the path of a file (in it).',
    );
    expect(await hintOf({ kind: 'block', path: '/dev/null' })).toBe(
      'Give a block device (lsblk lists them), or serve a file with kind "file".',
    );
    expect(await hintOf({ kind: 'block', path: '/dev/branchsan-no-such-disk' })).toBe(
      'No such device: check the path (ls -l /dev/disk/by-id).',
    );
    // a port another program holds
    const blocker = net.createServer();
    const busy = await freePort();
    await new Promise<void>((r) => blocker.listen(busy, '127.0.0.1', r));
    const inUse = await apiError(api.call('target.port.add', { host: '127.0.0.1', port: busy }));
    blocker.close();
    expect(inUse.message).toMatch(/EADDRINUSE/);
    expect(inUse.data?.hint).toMatch(/another port/);
    expect(await api.call('target.config', {})).toEqual(before);
    expect(await live()).toEqual(liveBefore);
  });

  it('writes an audit row per change', () => {
    const db = new Database(path.join(engine.dataDir, 'branchsan.db'), { readonly: true });
    const rows = db.prepare('SELECT actor, action FROM audit ORDER BY id').all() as {
      actor: string;
      action: string;
    }[];
    db.close();
    expect(rows.map((r) => r.action)).toEqual([
      'target.subsystem.create',
      'target.port.add',
      'target.namespace.add',
    ]);
    expect(rows[0]!.actor).toMatch(new RegExp(`^${LOCAL_ACTOR}$`));
  });

  it('rebuilds the same live target after a restart', async () => {
    const before = await api.call('target.config', {});
    api.close();
    await engine.stop();
    expect(await tcpOpen(nvmePort)).toBe(false);
    engine = await startEngine({ dataDir: engine.dataDir });
    api = await connectSocket(engine.socketPath);
    expect(await api.call('target.config', {})).toEqual(before);
    expect(await tcpOpen(nvmePort)).toBe(true);
  });

  it('a namespace whose backing file vanished while stopped is reported, and the rest still serves', async () => {
    const extra = path.join(dir, 'vol2.img');
    await api.call('target.namespace.add', {
      nqn: NQN,
      backend: { kind: 'file', path: extra, createSizeBytes: 8 << 20 },
    });
    api.close();
    await engine.stop();
    fs.rmSync(extra);
    engine = await startEngine({ dataDir: engine.dataDir });
    api = await connectSocket(engine.socketPath);
    expect(
      engine.lines.some(
        (l) => String(l.msg).includes('Namespace 2 of') && String(l.msg).includes('offline'),
      ),
    ).toBe(true);
    expect(await tcpOpen(nvmePort)).toBe(true);
  });

  it('brings an offline namespace online by itself once its file is back (a disk mounted late)', async () => {
    const extra = path.join(dir, 'vol2.img');
    expect(fs.existsSync(extra)).toBe(false); // offline since the last test's restart
    const offline = await api.call('events.list', {
      type: 'target.namespace.unavailable',
      limit: 5,
    });
    expect(offline.events[0]?.message).toMatch(
      /^Namespace 2 of \S+ is offline: .*\. It is retried every 10 s\.$/,
    );
    const alertFor = (active: boolean) =>
      waitFor(async () => {
        const r = await api.call('alerts.list', { active });
        return r.alerts.find((a) => a.rule === 'volume.offline' && a.subject === `${NQN}/2`);
      }, 30_000);
    const alert = await alertFor(true);
    expect(alert.severity).toBe('critical');
    expect(alert.title).toBe('Volume vol1 (namespace 2) is offline');
    const data = Buffer.alloc(8 << 20, 0x6b);
    fs.writeFileSync(extra, data);
    const online = await waitFor(async () => {
      const r = await api.call('events.list', { type: 'target.namespace.online', limit: 5 });
      return r.events[0];
    }, 30_000);
    expect(online.message).toBe(`Namespace 2 of ${NQN} is online again (${extra}).`);
    const cleared = await waitFor(async () => {
      const r = await api.call('alerts.list', { active: false });
      return r.alerts.find((a) => a.id === alert.id && a.clearedAt !== null);
    }, 30_000);
    expect(cleared.clearedAt).not.toBeNull();
    const ctrl = await connectHost();
    try {
      const ns = await ctrl.namespace(2);
      expect((await ns.read(0, 8)).equals(data.subarray(0, 8 * 512))).toBe(true);
    } finally {
      await ctrl.close();
    }
  }, 60_000);

  it('removes a port whose address was taken while the engine was stopped, and never reuses its id', async () => {
    const port = await freePort();
    const added = await api.call('target.port.add', { host: '127.0.0.1', port });
    api.close();
    await engine.stop();
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(port, '127.0.0.1', r));
    try {
      engine = await startEngine({ dataDir: engine.dataDir });
      api = await connectSocket(engine.socketPath);
      // configured, though it could not listen
      const ports = (await api.call('target.config', {})).ports;
      expect(ports.map((p: { portId: number }) => p.portId)).toContain(added.portId);
      // Its id is taken: a new port may not have it (before: accepted live, then the
      // database refused it and the error blamed free space).
      const other = await freePort();
      const err = await apiError(
        api.call('target.port.add', { host: '127.0.0.1', port: other, portId: added.portId }),
      );
      expect(err.code).toBe(ErrorCode.Conflict);
      expect(err.message).toContain(`Port id ${added.portId} is already configured`);
      expect(await tcpOpen(other)).toBe(false);
      // Before the fix: "Port id N does not exist." (the live target never had it).
      await api.call('target.port.remove', { portId: added.portId });
      const after = (await api.call('target.config', {})).ports;
      expect(after.map((p: { portId: number }) => p.portId)).not.toContain(added.portId);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
  });

  it('gives a new port a free id even when one already has the highest, 65535', async () => {
    const top = await api.call('target.port.add', {
      host: '127.0.0.1',
      port: await freePort(),
      portId: 65535,
    });
    // Before: "Port id 65536 is out of range", blaming a portId the caller never sent.
    const next = await api.call('target.port.add', { host: '127.0.0.1', port: await freePort() });
    const ids = (await api.call('target.config', {})).ports.map(
      (p: { portId: number }) => p.portId,
    );
    expect(next.portId).toBeLessThan(65535);
    expect(ids.filter((id: number) => id === next.portId)).toHaveLength(1);
    await api.call('target.port.remove', { portId: next.portId });
    await api.call('target.port.remove', { portId: top.portId });
  });

  it("refuses a volume inside the engine's data directory (its database, keys, logs)", async () => {
    const link = path.join(dir, 'looks-elsewhere');
    fs.symlinkSync(engine.dataDir, link);
    const inside = [
      path.join(engine.dataDir, 'branchsan.db'),
      path.join(engine.dataDir, 'branchsan.db-wal'),
      path.join(engine.dataDir, 'new-volume.img'),
      path.join(link, 'secrets', 'x.img'), // through a symlink
    ];
    for (const p of inside) {
      const err = await apiError(
        api.call('target.namespace.add', {
          nqn: NQN,
          backend: { kind: 'file', path: p, createSizeBytes: 1 << 20 },
        }),
      );
      // Before: only a size that was not a multiple of 512, or SQLite's lock, stopped it.
      expect(err.code).toBe(ErrorCode.InvalidParams);
      expect(err.message).toContain("is inside the engine's data directory");
      expect(err.data?.field).toBe('backend.path');
    }
    expect(fs.existsSync(path.join(engine.dataDir, 'new-volume.img'))).toBe(false);
  });

  it('a host taken off the list loses its connection at once, not only its next one', async () => {
    const ctrl = await connectHost();
    try {
      const ns = await ctrl.namespace(1);
      await ns.write(0, Buffer.alloc(512, 1));
      await api.call('target.host.disallow', { nqn: NQN, hostNqn: HOST });
      // Before: its controller stayed, reading and writing for as long as it liked.
      const failed = await waitFor(
        () =>
          ns.write(1, Buffer.alloc(512, 2)).then(
            () => undefined,
            (err: unknown) => err as Error,
          ),
        5000,
      );
      expect(failed).toBeInstanceOf(Error);
      const refused = await connectHost().then(
        async (c) => {
          await c.close();
          return null;
        },
        (err: unknown) => err as Error,
      );
      expect(refused?.message).toMatch(/not allowed|invalid host|host/i);
    } finally {
      await ctrl.close().catch(() => undefined);
    }
    await api.call('target.host.allow', { nqn: NQN, hostNqn: HOST });
    const again = await connectHost();
    await again.close();
  });

  it('refuses to take a host off the list of a subsystem that allows any host', async () => {
    const OPEN = 'nqn.2026-11.io.branchsan.test:open';
    await api.call('target.subsystem.create', { nqn: OPEN, allowAnyHost: true, hosts: [HOST] });
    const connect = () =>
      NvmeController.connect({ host: '127.0.0.1', port: nvmePort, subnqn: OPEN, hostnqn: HOST });
    const ctrl = await connect();
    try {
      // Before: reported done, while the host stayed connected and could connect again.
      const err = await apiError(api.call('target.host.disallow', { nqn: OPEN, hostNqn: HOST }));
      expect(err.code).toBe(ErrorCode.Conflict);
      expect(err.message).toContain('allows any host');
      expect(err.message).toContain('nothing was changed');
      expect(err.data?.hint).toContain('without allowAnyHost');
      const sub = (await api.call('target.config', {})).subsystems.find((s) => s.nqn === OPEN);
      expect(sub?.hosts).toEqual([HOST]);
    } finally {
      await ctrl.close();
    }
    await api.call('target.subsystem.delete', { nqn: OPEN });
  });

  it('removes what it created', async () => {
    await api.call('target.namespace.remove', { nqn: NQN, nsid: 2 });
    await api.call('target.host.disallow', { nqn: NQN, hostNqn: HOST });
    await api.call('target.port.remove', { portId: 1 });
    expect(await tcpOpen(nvmePort)).toBe(false);
    await api.call('target.subsystem.delete', { nqn: NQN });
    expect(await api.call('target.config', {})).toEqual({ ports: [], subsystems: [] });
  });
});

describe('one backing file under two names', () => {
  const S1 = 'nqn.2026-11.io.branchsan.test:twin1';
  const S2 = 'nqn.2026-11.io.branchsan.test:twin2';
  // Without the addon's file locks, nothing but these checks keeps one file from
  // serving two namespaces (two subsystems, two hosts).
  const env = { BRANCHSAN_NATIVE: 'off' };
  let e: RunningEngine;
  let client: SocketClient;
  let base: string;

  async function restart(): Promise<void> {
    client.close();
    await e.stop();
    e = await startEngine({ dataDir: e.dataDir, env });
    client = await connectSocket(e.socketPath);
  }

  beforeAll(async () => {
    base = tempDir();
    fs.mkdirSync(path.join(base, 'real'));
    fs.symlinkSync(path.join(base, 'real'), path.join(base, 'link'));
    e = await startEngine({ dataDir: path.join(base, 'data'), env });
    client = await connectSocket(e.socketPath);
    for (const nqn of [S1, S2]) await client.call('target.subsystem.create', { nqn });
    await client.call('target.namespace.add', {
      nqn: S1,
      backend: { kind: 'file', path: path.join(base, 'link', 'x.img'), createSizeBytes: 8 << 20 },
    });
  });
  afterAll(async () => {
    client?.close();
    await e?.stop();
  });

  it('refuses the file of an offline namespace under another name', async () => {
    const file = path.join(base, 'real', 'x.img');
    fs.renameSync(file, `${file}.away`); // its disk is not there at the next start
    await restart();
    const err = await apiError(
      client.call('target.namespace.add', {
        nqn: S2,
        backend: { kind: 'file', path: file, createSizeBytes: 8 << 20 },
      }),
    );
    // Before: accepted; once the disk was back both served the same file.
    expect(err.code).toBe(ErrorCode.Conflict);
    expect(err.message).toBe(`${path.join(base, 'link', 'x.img')} is already a namespace.`);
    fs.renameSync(`${file}.away`, file);
  });

  it('serves one of two configured namespaces on the same file, and says why not the other', async () => {
    // A configuration from before these checks: the second name went in unrefused.
    client.close();
    await e.stop();
    const db = new Database(path.join(e.dataDir, 'branchsan.db'));
    db.prepare(
      `INSERT INTO namespaces (subsystem_nqn, nsid, backend_kind, path, size_bytes, block_size, nguid, uuid, ana_group)
       SELECT ?, 1, backend_kind, ?, size_bytes, block_size, ?, ?, ana_group FROM namespaces WHERE subsystem_nqn = ?`,
    ).run(S2, path.join(base, 'real', 'x.img'), 'ab'.repeat(16), '01'.repeat(16), S1);
    db.close();
    e = await startEngine({ dataDir: e.dataDir, env });
    client = await connectSocket(e.socketPath);
    const offline = await client.call('events.list', {
      type: 'target.namespace.unavailable',
      limit: 5,
    });
    expect(offline.events[0]?.message).toContain(
      `is the same file or device as namespace 1 of ${S1} (${path.join(base, 'link', 'x.img')})`,
    );
  });
});
