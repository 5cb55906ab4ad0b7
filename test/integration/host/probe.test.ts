/**
 * probeTarget (host/probe.ts) against BranchSAN's own target in process, over real
 * sockets: what discovery lists, identities, ANA states, the read test, that it never
 * writes, and that every failure becomes a problem with a hint instead of an exception.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Target } from '../../../engine/src/core/index.js';
import { probeTarget, probeTargets, type ProbeOptions } from '../../../engine/src/host/index.js';
import { encodeActiveNsList } from '../../../engine/src/protocol/identify.js';
import { ADMIN, CNS, IO } from '../../../engine/src/protocol/opcodes.js';
import { cdw, sqeCid, sqeNsid } from '../../../engine/src/protocol/sqe.js';
import type { BlockBackend } from '../../../engine/src/storage/backend.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import { listenTcp, type TcpTransport } from '../../../engine/src/transport/tcp/index.js';
import { serveOnLoopback } from '../../helpers/target.js';
import { FakeTarget } from './fake-target.js';
import { freePort, unansweredPort, waitFor } from './helpers.js';
import { NQN as MP_NQN, cleanup, runCleanup, spy, startNode, startPair } from './multipath-rig.js';

/** FakeTarget internals replaced by some tests (private there; patched at run time). */
interface Internals {
  onAdmin(c: unknown, sqe: Buffer, cid: number, op: number): void;
  sendData(c: unknown, cid: number, data: Buffer): void;
  identify(cns: number): Buffer;
  onCommand(c: { qid: number }, sqe: Buffer, data: Buffer | null): void;
  respond(c: unknown, cid: number, status: number): void;
}

const HOST = 'nqn.2014-08.org.nvmexpress:uuid:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0';
const OTHER_HOST = 'nqn.2014-08.org.nvmexpress:uuid:99999999-8888-7777-6666-555555555555';
const SERVING = 'nqn.2024-01.io.branchsan:probe-serving';
const STANDBY = 'nqn.2024-01.io.branchsan:probe-standby';
const EMPTY = 'nqn.2024-01.io.branchsan:probe-empty';
const HIDDEN = 'nqn.2024-01.io.branchsan:probe-other-host';

let transport: TcpTransport;
let port = 0;
let target: Target;
const backends: MemoryBackend[] = [];
const written: string[] = [];

/** A memory backend that notes every call that could change it (the probe must make none). */
function watched(sizeBytes: number, label: string): BlockBackend {
  const be = new MemoryBackend({ sizeBytes });
  backends.push(be);
  for (const m of ['write', 'writeZeroes', 'deallocate'] as const) {
    const orig = be[m].bind(be) as (...a: unknown[]) => void;
    (be as unknown as Record<string, unknown>)[m] = (...a: unknown[]) => {
      written.push(`${label}.${m}`);
      orig(...a);
    };
  }
  return be;
}

beforeAll(async () => {
  target = new Target({});
  const sub = (nqn: string, hosts: string[]) =>
    target.addSubsystem({ nqn, serial: nqn.slice(-8), model: 'Probe test', hosts });
  sub(SERVING, [HOST]);
  sub(STANDBY, [HOST]);
  sub(EMPTY, [HOST]);
  sub(HIDDEN, [OTHER_HOST]);
  const serving = watched(32 << 20, 'serving');
  target.addNamespace(SERVING, {
    nsid: 1,
    backend: serving,
    nguid: '00112233445566778899aabbccddeeff',
    anagrpid: 1,
  });
  target.addNamespace(SERVING, {
    nsid: 2,
    backend: watched(8 << 20, 'serving2'),
    nguid: '00112233445566778899aabbccddee02',
    anagrpid: 2,
  });
  target.addNamespace(STANDBY, {
    nsid: 1,
    backend: watched(8 << 20, 'standby'),
    nguid: '00112233445566778899aabbccddee03',
    anagrpid: 3,
  });
  target.setAnaState(2, 'non-optimized');
  target.setAnaState(3, 'inaccessible');
  ({ transport, port } = await serveOnLoopback(target));
  // Data for the read test to read; the probe must leave every byte of it alone.
  await new Promise<void>((resolve, reject) =>
    serving.write(0, randomBytes(1 << 20), false, (err) => (err ? reject(err) : resolve())),
  );
  written.length = 0;
});

afterAll(async () => {
  await transport?.close();
});

describe('probeTarget', () => {
  it('reports every subsystem discovery lists for this host, with identities, ANA states and read latency', async () => {
    const before = await Promise.all(backends.map((b) => snapshot(b)));
    const r = await probeTarget({ host: '127.0.0.1', port, hostnqn: HOST, readSeconds: 0.2 });
    expect(r.hostnqn).toBe(HOST);
    expect(r.problem).toBeNull();
    // The other host's subsystem is not listed to this one.
    expect(r.discovered!.map((d) => d.subnqn).sort()).toEqual([EMPTY, SERVING, STANDBY].sort());
    const bySub = new Map(r.subsystems.map((s) => [s.subnqn, s]));

    const serving = bySub.get(SERVING)!;
    expect(serving.problem).toBeNull();
    expect(serving.address).toBe(`127.0.0.1:${port}`);
    expect(serving.controller).toMatchObject({ model: 'Probe test', serial: '-serving' });
    const [ns1, ns2] = serving.namespaces;
    expect(ns1).toMatchObject({
      nsid: 1,
      size_bytes: 32 << 20,
      block_size: 512,
      nguid: '00112233445566778899aabbccddeeff',
      ana_group: 1,
      ana_state: 'optimized',
      problem: null,
    });
    expect(ns1!.read_test!.reads).toBeGreaterThan(10);
    expect(ns1!.read_test!.bytes_per_read).toBe(4096);
    const lat = ns1!.read_test!.lat_us;
    expect(lat.p50).toBeGreaterThan(0);
    expect(lat.p50).toBeLessThanOrEqual(lat.p99);
    expect(lat.p99).toBeLessThanOrEqual(lat.max);
    expect(ns2).toMatchObject({ nsid: 2, ana_group: 2, ana_state: 'non-optimized', problem: null });
    expect(ns2!.read_test!.reads).toBeGreaterThan(10);

    const standby = bySub.get(STANDBY)!;
    expect(standby.namespaces[0]).toMatchObject({ ana_state: 'inaccessible', read_test: null });
    expect(standby.namespaces[0]!.problem!.error).toContain('is inaccessible on this path (ANA)');
    expect(standby.namespaces[0]!.problem!.hint).toContain('standby node');

    const empty = bySub.get(EMPTY)!;
    expect(empty.namespaces).toEqual([]);
    expect(empty.problem!.error).toContain('has no namespace');
    expect(r.ok).toBe(false); // the standby namespace and the empty subsystem

    // Reads only: nothing was written, and every byte is as it was.
    expect(written).toEqual([]);
    const after = await Promise.all(backends.map((b) => snapshot(b)));
    after.forEach((a, i) => expect(a.equals(before[i]!)).toBe(true));
  }, 30_000);

  it.each([
    ['persistent-loss', 'lost for good on this path'],
    ['change', 'changing ANA state on this path'],
    ['inaccessible', 'is inaccessible on this path'],
  ] as const)(
    'does not read a namespace whose ANA state is %s, and says why',
    async (state, why) => {
      target.setAnaState(3, state);
      try {
        const r = await probeTarget({
          host: '127.0.0.1',
          port,
          hostnqn: HOST,
          subnqn: STANDBY,
          readSeconds: 0.1,
        });
        expect(r.subsystems[0]!.namespaces[0]).toMatchObject({ ana_state: state, read_test: null });
        expect(r.subsystems[0]!.namespaces[0]!.problem!.error).toContain(why);
        expect(r.ok).toBe(false);
      } finally {
        target.setAnaState(3, 'inaccessible');
      }
    },
  );

  it('with an NQN, probes that subsystem directly, and is ok when nothing is wrong', async () => {
    const r = await probeTarget({
      host: '127.0.0.1',
      port,
      hostnqn: HOST,
      subnqn: SERVING,
      readSeconds: 0,
      digests: true,
    });
    expect(r.discovered).toBeNull();
    expect(r.subsystems.map((s) => s.subnqn)).toEqual([SERVING]);
    expect(r.subsystems[0]!.namespaces.map((n) => n.read_test)).toEqual([null, null]);
    expect(r.ok).toBe(true);
  });

  it('gives figures for a read time shorter than one read', async () => {
    const r = await probeTarget({
      host: '127.0.0.1',
      port,
      hostnqn: HOST,
      subnqn: SERVING,
      readSeconds: 1e-6,
      readQd: 2,
    });
    const test = r.subsystems[0]!.namespaces[0]!.read_test!;
    expect(test.reads).toBeGreaterThanOrEqual(2);
    for (const v of [test.iops, ...Object.values(test.lat_us)]) {
      expect(Number.isFinite(v) && v > 0, `${JSON.stringify(test)}`).toBe(true);
    }
  });

  it('keeps the asked number of reads in flight', async () => {
    const ctrls = () => target.listControllers().length;
    let deepest = 0;
    const inflight = { now: 0 };
    // Count reads the backend holds at once: the probe's queue depth reaches it.
    const be = backends[0]!;
    const read = be.read.bind(be);
    be.read = (offset, length, cb, into) => {
      deepest = Math.max(deepest, ++inflight.now);
      setTimeout(
        () => read(offset, length, (err, data) => (inflight.now--, cb(err, data)), into),
        1,
      );
    };
    try {
      const r = await probeTarget({
        host: '127.0.0.1',
        port,
        hostnqn: HOST,
        subnqn: SERVING,
        readSeconds: 0.2,
        readQd: 8,
      });
      const test = r.subsystems[0]!.namespaces[0]!.read_test!;
      expect(test.qd).toBe(8);
      expect(test.reads).toBeGreaterThan(8);
      expect(deepest).toBe(8);
      expect(written).toEqual([]);
    } finally {
      be.read = read;
    }
    await waitFor(() => ctrls() === 0); // every probe disconnects
  });

  it('says when the host is not allowed, by discovery and by a direct connect', async () => {
    const listed = await probeTarget({ host: '127.0.0.1', port, readSeconds: 0 });
    expect(listed.ok).toBe(false);
    expect(listed.problem!.error).toContain('lists no NVMe/TCP subsystem this host may use');
    expect(listed.problem!.hint).toContain(listed.hostnqn);

    const direct = await probeTarget({
      host: '127.0.0.1',
      port,
      hostnqn: HOST,
      subnqn: HIDDEN,
      readSeconds: 0,
    });
    expect(direct.subsystems[0]!.problem!.error).toContain(
      `the target does not allow this host (host NQN ${HOST})`,
    );
    expect(direct.subsystems[0]!.problem!.hint).toContain('--allow-host');

    const missing = await probeTarget({
      host: '127.0.0.1',
      port,
      hostnqn: HOST,
      subnqn: 'nqn.2024-01.io.branchsan:no-such',
      readSeconds: 0,
    });
    expect(missing.subsystems[0]!.problem!.error).toContain('has no such subsystem');
  });

  it('gives up on a target that stops answering after the command timeout, and says so', async () => {
    // Connects and identifies, then never answers a read.
    const quiet = await new FakeTarget({ hold: (op, qid) => qid > 0 && op === IO.READ }).start();
    try {
      const r = await probeAt(quiet, 'nqn.2024-01.io.branchsan:quiet', {
        readSeconds: 1,
        commandTimeoutMs: 300,
      });
      const [sub] = r.subsystems;
      expect(sub!.controller).not.toBeNull(); // what was learnt before stays in the report
      expect(sub!.namespaces[0]!.read_test).toBeNull();
      expect(sub!.namespaces[0]!.problem!.error).toContain('the target stopped answering');
      expect(r.ok).toBe(false);
    } finally {
      await quiet.stop();
    }
  });

  it('says a target that stops answering during the connect stopped answering, naming it once', async () => {
    // Answers the Connect and the properties, then never an Identify.
    const quiet = await new FakeTarget({
      hold: (op, qid) => qid === 0 && op === ADMIN.IDENTIFY,
    }).start();
    try {
      const nqn = 'nqn.2024-01.io.branchsan:quiet-connect';
      const r = await probeAt(quiet, nqn, { commandTimeoutMs: 300 });
      const [sub] = r.subsystems;
      expect(sub!.controller).toBeNull();
      // Before: "connect to X at H:P: connect to X at H:P: queue 0: command … timed out",
      // with the hint to read the target's events.
      expect(sub!.problem!.error).toMatch(
        new RegExp(
          `^connect to ${nqn} at 127\\.0\\.0\\.1:${quiet.port}: the target stopped answering \\(queue 0: command 0x[0-9a-f]+, identify \\(opcode 0x6\\), timed out after \\d+ ms\\)$`,
        ),
      );
      expect(sub!.problem!.hint).toContain("Check the target's health");
    } finally {
      await quiet.stop();
    }
  });

  it('reports a namespace the library refuses with why, and probes the others', async () => {
    // Four active namespaces: 1 with metadata, 2 fine, 3 gone inactive since the list,
    // 4 with a block size no host knows.
    const quirky = await namespacesTarget([1, 2, 3, 4], (nsid, honest) => {
      if (nsid === 3) return Buffer.alloc(4096);
      const b = honest();
      if (nsid === 1) b.writeUInt16LE(8, 128); // LBAF0: MS 8
      if (nsid === 4) b[128 + 2] = 40; // LBAF0: LBADS 40
      return b;
    });
    try {
      const r = await probeAt(quirky, 'nqn.2024-01.io.branchsan:quirky', { readSeconds: 0.1 });
      const [sub] = r.subsystems;
      // Before: the first refusal ended the loop: namespaces [], and only that problem.
      expect(sub!.problem).toBeNull();
      expect(sub!.namespaces.map((n) => n.nsid)).toEqual([1, 2, 3, 4]);
      const [meta, good, gone, lbads] = sub!.namespaces;
      expect(good).toMatchObject({ size_bytes: 4 << 20, block_size: 512, problem: null });
      expect(good!.read_test!.reads).toBeGreaterThan(0);
      expect(meta).toMatchObject({ size_bytes: 4 << 20, block_size: 512, read_test: null });
      expect(meta!.nguid).toBe('ab'.repeat(16));
      expect(meta!.problem!.error).toBe(
        'namespace 1 is formatted with 8 bytes of metadata per block: NVMe/TCP hosts cannot use it (Linux shows it with size 0)',
      );
      expect(meta!.problem!.hint).toContain('without metadata (MS 0)');
      expect(gone).toMatchObject({ size_bytes: null, block_size: null, read_test: null });
      expect(gone!.problem!.error).toContain('namespace 3 was listed as active, then identified');
      expect(lbads).toMatchObject({ size_bytes: null, block_size: null, read_test: null });
      expect(lbads!.problem!.error).toContain('namespace 4 reports a block size no host can use');
      expect(r.ok).toBe(false);
    } finally {
      await quirky.stop();
    }
  });

  it('stops every reader of a namespace whose read failed before the next namespace is tested', async () => {
    const target = await namespacesTarget([1, 2], (_nsid, honest) => honest());
    const t = target as unknown as Internals;
    const honest = t.onCommand.bind(target);
    const reads = new Map<number, number>();
    let late = 0; // reads of namespace 1 that arrive once namespace 2's have begun
    t.onCommand = (c, sqe, data) => {
      if (c.qid === 0 || sqe[0] !== IO.READ) return honest(c, sqe, data);
      const nsid = sqeNsid(sqe);
      reads.set(nsid, (reads.get(nsid) ?? 0) + 1);
      if (nsid === 1 && reads.has(2)) late++;
      // past the warm-up: Unrecovered Read Error (media, 0x81), the queue stays up; DNR,
      // or the library would send that read again (status-retry.ts) and it would pass
      if (nsid === 1 && reads.get(1) === 500) return t.respond(c, sqeCid(sqe), 0x4281);
      honest(c, sqe, data);
    };
    try {
      const r = await probeAt(target, 'nqn.2024-01.io.branchsan:read-error', {
        readSeconds: 0.3,
        readQd: 8,
      });
      const [one, two] = r.subsystems[0]!.namespaces;
      expect(one!.read_test).toBeNull();
      expect(one!.problem!.error).toContain('reading namespace 1: ');
      expect(one!.problem!.error).toContain('NVMe status READ_ERROR|DNR (0x4281)');
      expect(two!.problem).toBeNull();
      // Before: the other 7 readers of namespace 1 went on for the rest of its 0.3 s,
      // through namespace 2's measured test.
      expect(late).toBe(0);
    } finally {
      await target.stop();
    }
  });

  it('keeps no more reads in flight than the controller takes, and reports the depth used', async () => {
    const small = await new FakeTarget({ mqes: 8 }).start(); // 8 entries: 7 in flight
    try {
      const r = await probeAt(small, 'nqn.2024-01.io.branchsan:small-queue', {
        readSeconds: 0.1,
        readQd: 32,
      });
      const test = r.subsystems[0]!.namespaces[0]!.read_test!;
      // Before: qd 32, though the other 25 readers only waited in the host's queue.
      expect(test).toMatchObject({ qd: 7, qd_asked: 32 });
      expect(small.maxOutstanding).toBeLessThanOrEqual(7);
      expect(r.ok).toBe(true);
    } finally {
      await small.stop();
    }
  });

  it('says which subsystem the discovery log gives a TRSVCID that is no TCP port, and probes the rest', async () => {
    const t = new Target({});
    const GOOD = 'nqn.2024-01.io.branchsan:probe-port-good';
    const HIGH = 'nqn.2024-01.io.branchsan:probe-port-70000';
    const WORD = 'nqn.2024-01.io.branchsan:probe-port-word';
    for (const nqn of [GOOD, HIGH, WORD]) {
      t.addSubsystem({ nqn, serial: nqn.slice(-8), model: 'Probe test', hosts: [HOST] });
    }
    const backend = new MemoryBackend({ sizeBytes: 1 << 20 });
    t.addNamespace(GOOD, { nsid: 1, backend, nguid: '00112233445566778899aabbccddee42' });
    const listener = await listenTcp({ host: '127.0.0.1', port: 0, portId: 1 }, t);
    try {
      const at = listener.address().port;
      const tcp = { trtype: 'tcp', adrfam: 'ipv4', traddr: '127.0.0.1' } as const;
      t.addPort({ ...tcp, portId: 1, trsvcid: String(at) }, { subsystems: [GOOD] });
      t.addPort({ ...tcp, portId: 2, trsvcid: '70000' }, { subsystems: [HIGH] });
      t.addPort({ ...tcp, portId: 3, trsvcid: 'nvme' }, { subsystems: [WORD] });
      const r = await probeTarget({ host: '127.0.0.1', port: at, hostnqn: HOST, readSeconds: 0 });
      expect(r.problem).toBeNull();
      expect(r.discovered!.map((d) => d.address)).toEqual(
        expect.arrayContaining(['127.0.0.1:70000', '127.0.0.1:nvme']), // before: …:NaN
      );
      const bySub = new Map(r.subsystems.map((s) => [s.subnqn, s]));
      expect(bySub.get(GOOD)!.problem).toBeNull();
      expect(bySub.get(GOOD)!.controller).not.toBeNull();
      // before: a connect was tried, and failed with Node's words ("Port should be >= 0
      // and < 65536. Received type number (NaN)") and a hint to look at the target's events
      for (const [nqn, trsvcid] of [
        [HIGH, '70000'],
        [WORD, 'nvme'],
      ] as const) {
        const bad = bySub.get(nqn)!;
        expect(bad.controller).toBeNull();
        expect(bad.address).toBe(`127.0.0.1:${trsvcid}`);
        expect(bad.problem!.error).toBe(
          `the discovery log at 127.0.0.1:${at} gives TRSVCID "${trsvcid}" for ${nqn}, which is not a TCP port (an integer 1..65535): no host can connect to it there`,
        );
        expect(bad.problem!.hint).toContain(`branchsan probe 127.0.0.1:PORT --nqn ${nqn}`);
      }
      expect(r.ok).toBe(false);
    } finally {
      t.close();
      await listener.close();
    }
  });

  it('names a closed port and a web server for what they are', async () => {
    const closed = await probeTarget({ host: '127.0.0.1', port: await freePort(), readSeconds: 0 });
    expect(closed.problem!.error).toContain('nothing accepts connections there');

    const web = http.createServer((_req, res) => res.end('console'));
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    const webPort = (web.address() as net.AddressInfo).port;
    try {
      // A web server answers the ICReq with "HTTP/1.1 400 ...".
      const r = await probeTarget({ host: '127.0.0.1', port: webPort, readSeconds: 0 });
      expect(r.problem!.error).toContain('a web server answered there, not an NVMe/TCP target');
    } finally {
      await new Promise((resolve) => web.close(resolve));
    }
  });

  it('tells a port that accepts but never answers, and one that answers garbage, from a firewall that drops the connect', async () => {
    const undo: (() => void)[] = [];
    // the probe resets its connections when it gives up on them (RST): that is no error here
    const silent = net.createServer((c) => c.on('error', () => {}));
    const garbage = net.createServer((c) =>
      c.on('error', () => {}).on('data', () => c.write(Buffer.alloc(200, 0xff))),
    );
    const ports = await Promise.all(
      [silent, garbage].map(
        (s) =>
          new Promise<number>((resolve) =>
            s.listen(0, '127.0.0.1', () => resolve((s.address() as net.AddressInfo).port)),
          ),
      ),
    );
    try {
      const quiet = await probeTarget({
        host: '127.0.0.1',
        port: ports[0]!,
        readSeconds: 0,
        connectTimeoutMs: 300,
      });
      // Before: "no answer in time ... no firewall drops the port", though it accepted.
      expect(quiet.problem!.error).toContain('the connection was accepted, but nothing answered');
      expect(quiet.problem!.hint).toContain('the target is hung');
      const junk = await probeTarget({ host: '127.0.0.1', port: ports[1]!, readSeconds: 0 });
      expect(junk.problem!.error).toContain('what answered there does not speak NVMe/TCP');
      expect(junk.problem!.hint).toContain('not another service');
      // A firewall that drops the SYNs: the TCP connect itself never completes.
      const dropped = await probeTarget({
        host: '127.0.0.1',
        port: await unansweredPort(undo),
        readSeconds: 0,
        connectTimeoutMs: 300,
      });
      // Before: "the connection was accepted, but nothing answered … the target is hung".
      expect(dropped.problem!.error).toContain(
        'nothing answered the TCP connection attempt in time (',
      );
      expect(dropped.problem!.error).toContain('TCP connect timed out after 300 ms)');
      expect(dropped.problem!.hint).toContain('no firewall drops the port');
    } finally {
      for (const s of [silent, garbage]) s.close();
      for (const u of undo) u();
    }
  });
});

/** A FakeTarget listing these active namespaces, each identified as `identify` says. */
async function namespacesTarget(
  nsids: number[],
  identify: (nsid: number, honest: () => Buffer) => Buffer,
): Promise<FakeTarget> {
  const target = await new FakeTarget().start();
  const t = target as unknown as Internals;
  const honest = t.onAdmin.bind(target);
  t.onAdmin = (c, sqe, cid, op) => {
    const cns = cdw(sqe, 10) & 0xff;
    if (op !== ADMIN.IDENTIFY) return honest(c, sqe, cid, op);
    if (cns === CNS.NS_ACTIVE_LIST) {
      return t.sendData(c, cid, encodeActiveNsList(nsids, sqeNsid(sqe)));
    }
    if (cns !== CNS.NS) return honest(c, sqe, cid, op);
    t.sendData(
      c,
      cid,
      identify(sqeNsid(sqe), () => t.identify(CNS.NS)),
    );
  };
  return target;
}

/** probeTarget of one subsystem of a test target on loopback (no read test unless told). */
function probeAt(t: { port: number }, subnqn: string, o: Partial<ProbeOptions> = {}) {
  return probeTarget({ host: '127.0.0.1', port: t.port, subnqn, readSeconds: 0, ...o });
}

async function snapshot(b: BlockBackend): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    b.read(0, b.sizeBytes, (err, data) => (err ? reject(err) : resolve(Buffer.from(data!)))),
  );
}

describe('probeTargets (both nodes of a pair)', () => {
  afterEach(runCleanup);

  const both = (a: { port: number }, b: { port: number }) =>
    probeTargets(
      [
        { host: '127.0.0.1', port: a.port },
        { host: '127.0.0.1', port: b.port },
      ],
      { readSeconds: 0.05 },
    );

  it('says a namespace one path refuses is a path less, and checks no further', async () => {
    const meta = await namespacesTarget([1], (_nsid, honest) => {
      const b = honest();
      b.writeUInt16LE(8, 128); // LBAF0: MS 8
      return b;
    });
    const plain = await namespacesTarget([1], (_nsid, honest) => honest());
    cleanup.push(
      () => meta.stop(),
      () => plain.stop(),
    );
    const r = await probeTargets(
      [
        { host: '127.0.0.1', port: meta.port },
        { host: '127.0.0.1', port: plain.port },
      ],
      { subnqn: 'nqn.2024-01.io.branchsan:meta', readSeconds: 0 },
    );
    // A refused namespace has no identity to compare with the other path's.
    expect(r.paths).toHaveLength(1);
    expect(r.paths[0]!.problem!.error).toBe(
      `namespace 1 of nqn.2024-01.io.branchsan:meta cannot be used at 127.0.0.1:${meta.port}, so a host has one path less to it: namespace 1 is formatted with 8 bytes of metadata per block: NVMe/TCP hosts cannot use it (Linux shows it with size 0)`,
    );
    expect(r.paths[0]!.problem!.hint).toContain('Fix the problem reported for it');
    expect(r.ok).toBe(false);
  });

  it('finds one namespace on two paths, the same disk on each, one optimized', async () => {
    const { a, b } = await startPair();
    const r = await both(a, b);
    expect(r.targets.map((t) => t.ok)).toEqual([true, true]);
    expect(r.paths).toEqual([
      {
        subnqn: MP_NQN,
        nsid: 1,
        paths: [
          { address: `127.0.0.1:${a.port}`, ana_state: 'optimized' },
          { address: `127.0.0.1:${b.port}`, ana_state: 'non-optimized' },
        ],
        problem: null,
      },
    ]);
    expect(r.ok).toBe(true);
    // One identity for all: the pair's allow-lists see one host.
    expect(r.targets.map((t) => t.hostnqn)).toEqual([r.hostnqn, r.hostnqn]);
  });

  it('keeps every path connected until all are probed, as a multipath host does', async () => {
    const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: 4096 });
    const a = await startNode('A', backend, 'optimized', [1, 0x7fff]);
    // B's reads note how many controllers A has at that moment.
    const aLive: number[] = [];
    const viaB = spy(backend, []);
    const read = viaB.read;
    viaB.read = (o, l, cb, into) => {
      aLive.push(a.target.listControllers().length);
      read(o, l, cb, into);
    };
    const b = await startNode('B', viaB, 'non-optimized', [0x8000, 0xffef]);
    const r = await both(a, b);
    expect(r.ok).toBe(true);
    expect(aLive.length).toBeGreaterThan(0);
    expect(new Set(aLive)).toEqual(new Set([1]));
    // and every one of them is closed at the end
    await waitFor(() => [a, b].every((n) => n.target.listControllers().length === 0));
  });

  it('says when the two nodes present different disks under one NQN', async () => {
    const { a, b } = await startPair('fedcba9876543210fedcba9876543210');
    const r = await both(a, b);
    expect(r.targets.every((t) => t.ok)).toBe(true); // each alone looks fine
    const [check] = r.paths;
    expect(check!.problem!.error).toContain('is not the same disk at');
    expect(check!.problem!.error).toContain(
      'NGUID 0123456789abcdef0123456789abcdef vs fedcba9876543210fedcba9876543210',
    );
    expect(check!.problem!.hint).toContain('Connect no host to both');
    expect(r.ok).toBe(false);
  });

  it('says when two nodes hand out the same controller ID in one subsystem', async () => {
    const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: 4096 });
    // One CNTLID range on both: each node's first controller is number 5.
    const a = await startNode('A', backend, 'optimized', [5, 5]);
    const b = await startNode('B', backend, 'non-optimized', [5, 5]);
    const r = await both(a, b);
    expect(r.paths[0]!.problem!.error).toContain('both have ID 5');
    expect(r.paths[0]!.problem!.error).toContain('Duplicate cntlid');
    expect(r.ok).toBe(false);
  });

  it('says when a namespace is served by one node only', async () => {
    const { a, b } = await startPair();
    b.target.removeNamespace(MP_NQN, 1);
    const r = await both(a, b);
    // Before the fix: ok, with no word about it (only namespaces seen twice were checked).
    expect(r.paths).toHaveLength(1);
    expect(r.paths[0]!.problem!.error).toBe(
      `namespace 1 of ${MP_NQN} is served at 127.0.0.1:${a.port} but not at 127.0.0.1:${b.port}: hosts lose it when 127.0.0.1:${a.port} goes down`,
    );
    expect(r.ok).toBe(false);
  });

  it('says when a controller does not allow others in its subsystem (CMIC bit 1)', async () => {
    const { a, b } = await startPair();
    const proxied = await Promise.all([a, b].map((n) => singleControllerProxy(n.port)));
    // By NQN: discovery would hand out the nodes' own ports, around the proxies.
    const r = await probeTargets(
      proxied.map((x) => ({ host: '127.0.0.1', port: x.port })),
      { readSeconds: 0, subnqn: MP_NQN },
    );
    expect(r.targets.map((t) => t.subsystems[0]!.controller!.multi_controller)).toEqual([
      false,
      false,
    ]);
    expect(r.paths[0]!.problem!.error).toContain('has no other controllers (CMIC bit 1 clear)');
    expect(r.ok).toBe(false);
  });

  it('says when no path is optimized', async () => {
    const { a, b } = await startPair();
    a.target.setAnaState(1, 'inaccessible');
    const r = await both(a, b);
    expect(r.paths[0]!.problem!.error).toMatch(/^no path to namespace 1 of .* is ANA optimized/);
    expect(r.ok).toBe(false);
  });
});

/**
 * A proxy to `port` that clears CMIC bit 1 (multi-controller) in Identify Controller
 * data on its way to the host: a target that presents a single-controller subsystem.
 */
async function singleControllerProxy(port: number): Promise<{ port: number }> {
  const server = net.createServer((client) => {
    const up = net.connect(port, '127.0.0.1');
    client.pipe(up);
    let buf = Buffer.alloc(0);
    up.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 8 && buf.length >= buf.readUInt32LE(4)) {
        const pdu = Buffer.from(buf.subarray(0, buf.readUInt32LE(4)));
        buf = buf.subarray(pdu.length);
        // C2HData (no digests: 24-byte header) of 4096 bytes with the SUBNQN at 768.
        const data = pdu.subarray(24);
        if (
          pdu[0] === 0x07 &&
          data.length === 4096 &&
          data.toString('latin1', 768, 772) === 'nqn.'
        ) {
          data[76]! &= ~0x02;
        }
        client.write(pdu);
      }
    });
    const end = () => (client.destroy(), up.destroy());
    client.on('close', end).on('error', end);
    up.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => new Promise((resolve) => server.close(resolve)));
  return { port: (server.address() as net.AddressInfo).port };
}
