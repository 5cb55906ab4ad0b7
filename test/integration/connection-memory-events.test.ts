/**
 * The bound on what NVMe/TCP connections hold, under the engine's target service (real
 * core, real file backend, real sockets, real SQLite): a host whose I/O queue stops
 * taking its read data is disconnected, and the event log says which host, which
 * queue of which volume, and why; the node going over its cap and back is recorded
 * too, and the Prometheus exposition counts it all. The guard's checks are run by hand
 * with a clock passed in, so the test does not wait out 60 s.
 */
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { renderPrometheus } from '../../engine/src/metrics/prometheus.js';
import { openDatabase, type Db } from '../../engine/src/persistence/db.js';
import { IO, PROP } from '../../engine/src/protocol/opcodes.js';
import { PduType } from '../../engine/src/protocol/pdu.js';
import { OPEN_WAIT_MS, TargetRuntime } from '../../engine/src/service/target-runtime.js';
import {
  MEMORY_OVER_CAP,
  MEMORY_UNDER_CAP,
  PEERS_DISCONNECTED,
} from '../../engine/src/service/peer-memory-events.js';
import { TargetService } from '../../engine/src/service/target-service.js';
import { PEER_STALL_MS, PeerMemoryGuard } from '../../engine/src/transport/tcp/peer-memory.js';
import { createLogger } from '../../engine/src/util/log.js';
import { tempDir } from '../helpers/engine.js';
import {
  RawHost,
  adminConnect,
  enableController,
  ioConnect,
  propertyGetSqe,
  rwSqe,
} from '../helpers/raw-nvme.js';
import { until } from '../helpers/wait.js';
import { parseExposition } from '../unit/metrics/exposition.js';

const NQN = 'nqn.2026-11.io.branchsan.test:held';
const HOST_A = 'nqn.2026-11.io.branchsan.test:host-a';
const HOST_B = 'nqn.2026-11.io.branchsan.test:host-b';
const CAP = 8 << 20;

let dir: string;
let db: Db;
let rt: TargetRuntime;
let targets: TargetService;
let guard: PeerMemoryGuard;
let port: number;
const hosts: RawHost[] = [];

beforeEach(async () => {
  dir = tempDir();
  db = openDatabase(path.join(dir, 'engine.db')).db;
  const log = createLogger({ level: 'error', sink: { write: () => undefined } });
  guard = new PeerMemoryGuard({ capBytes: CAP, tightStallMs: 2000, tickMs: 3_600_000 });
  rt = new TargetRuntime(log, {}, OPEN_WAIT_MS, guard);
  targets = new TargetService(db, rt, log, path.join(dir, 'data'));
  await targets.restore();
  await targets.createSubsystem({ nqn: NQN, allowAnyHost: true }, 'test');
  await targets.addNamespace(
    {
      nqn: NQN,
      backend: { kind: 'file', path: path.join(dir, 'vol1.img'), createSizeBytes: 64 << 20 },
    },
    'test',
  );
  port = (await targets.addPort({ host: '127.0.0.1', port: 0 }, 'test')).port;
});

afterEach(async () => {
  for (const h of hosts.splice(0)) h.close();
  await targets.stop();
  await rt.close(0);
  db.close();
});

/** A host with its controller enabled and I/O queue 1 connected, on their own sockets. */
async function connectedHost(hostnqn: string): Promise<{ admin: RawHost; io: RawHost }> {
  const admin = await RawHost.connect(port);
  hosts.push(admin);
  const c = await adminConnect(admin, { subnqn: NQN, hostnqn, kato: 0 });
  expect(c.status).toBe(0);
  await enableController(admin);
  const io = await RawHost.connect(port);
  hosts.push(io);
  expect(
    (await ioConnect(io, { subnqn: NQN, hostnqn, cntlid: c.dw0 & 0xffff, qid: 1 })).status,
  ).toBe(0);
  return { admin, io };
}

/** 31 reads of 512 KiB on the I/O queue of a host that stops taking its answers. */
function stopReading(io: RawHost): void {
  io.socket.pause();
  for (let cid = 0; cid < 31; cid++)
    io.command(rwSqe({ opcode: IO.READ, cid, nsid: 1, slba: cid * 1024, nlb: 1024 }));
}

/** A 4 KiB read on `io`, answered in full. */
async function served(io: RawHost, cid: number): Promise<void> {
  io.command(rwSqe({ opcode: IO.READ, cid, nsid: 1, slba: cid * 8, nlb: 8 }));
  expect((await io.nextOf(PduType.C2HData)).data.length).toBe(4096);
  expect(await io.nextCqe()).toMatchObject({ cid, status: 0 });
}

const eventsOf = (type: string) =>
  db.prepare('SELECT severity, message, data FROM events WHERE type = ? ORDER BY id').all(type) as {
    severity: string;
    message: string;
    data: string;
  }[];

const heldByAll = () => rt.memory.stats().heldBytes;

describe('connections the memory guard disconnects, in the event log', () => {
  it('names the host, its queue and volume, and why; and counts it for Prometheus', async () => {
    const a = await connectedHost(HOST_A);
    const b = await connectedHost(HOST_B);
    stopReading(a.io);
    const t0 = performance.now();
    // A takes nothing: once its answers pile up, the guard sees it owing them.
    await until(() => {
      guard.check(t0);
      return heldByAll() > 4 << 20;
    });
    // Once the kernel's buffers are full too, a check sees it take nothing.
    await new Promise((r) => setTimeout(r, 300));
    guard.check(t0);
    // B keeps working on both queues.
    await served(b.io, 1);

    guard.check(t0 + PEER_STALL_MS + 1000);
    // A's I/O queue goes; its admin queue owed nothing, and B is served on.
    expect(rt.memory.stats()).toMatchObject({ shedNoProgress: 1, connections: 3 });
    await served(b.io, 2);
    b.admin.command(propertyGetSqe(9, PROP.CSTS));
    expect((await b.admin.nextCqe()).status).toBe(0);
    a.admin.command(propertyGetSqe(9, PROP.CSTS));
    expect((await a.admin.nextCqe()).status).toBe(0);

    const shed = eventsOf(PEERS_DISCONNECTED);
    expect(shed).toHaveLength(1);
    expect(shed[0]!.severity).toBe('warning');
    const peer = `127.0.0.1:${a.io.socket.localPort}`;
    expect(shed[0]!.message).toMatch(
      new RegExp(
        `^Disconnected host ${esc(HOST_A)} \\(${esc(peer)}, I/O queue 1 of ${esc(NQN)}, \\d+\\.\\d MiB held\\): ` +
          'it took none of the answers sent to it, and sent none of the write data asked of it, for 61 s or more\\. ' +
          'A live host reconnects and retries its commands\\. If a host does not come back, or this repeats, check that host and its network',
      ),
    );
    const data = JSON.parse(shed[0]!.data) as { count: number; peers: Record<string, unknown>[] };
    expect(data.count).toBe(1);
    expect(data.peers[0]).toMatchObject({
      peer,
      hostnqn: HOST_A,
      subnqn: NQN,
      qid: 1,
      reason: 'no-progress',
    });

    const fams = parseExposition(renderPrometheus(null, null, [], rt.memory.stats()));
    const value = (name: string, reason?: string) =>
      fams.get(name)!.samples.find((s) => reason === undefined || s.labels.reason === reason)!
        .value;
    expect(value('branchsan_nvme_tcp_disconnected_total', 'no-progress')).toBe(1);
    expect(value('branchsan_nvme_tcp_disconnected_total', 'over-cap')).toBe(0);
    expect(value('branchsan_nvme_tcp_held_cap_bytes')).toBe(CAP);
    expect(value('branchsan_nvme_tcp_connections')).toBe(3);
  });

  it('records the node going over its cap, and back under it', async () => {
    const a = await connectedHost(HOST_A);
    const b = await connectedHost(HOST_B);
    stopReading(a.io);
    stopReading(b.io);
    await until(() => {
      guard.check();
      return guard.tight;
    });
    const over = eventsOf(MEMORY_OVER_CAP);
    expect(over).toHaveLength(1);
    expect(over[0]!.severity).toBe('warning');
    expect(over[0]!.message).toMatch(
      /^The node's NVMe\/TCP connections hold \d+\.\d MiB for their hosts, more than their 8\.0 MiB cap .*Each connection now runs one read and one write transfer at a time until they drain/,
    );
    expect(eventsOf(MEMORY_UNDER_CAP)).toHaveLength(0);

    a.io.close();
    b.io.close();
    await until(() => {
      guard.check();
      return !guard.tight;
    });
    const under = eventsOf(MEMORY_UNDER_CAP);
    expect(under).toHaveLength(1);
    expect(under[0]!.severity).toBe('info');
    expect(under[0]!.message).toMatch(
      /^The node's NVMe\/TCP connections are back under their 8\.0 MiB memory cap after \d+\.\d s; hosts run at full depth again\.$/,
    );
    expect(eventsOf(MEMORY_OVER_CAP)).toHaveLength(1);
    expect(rt.memory.stats()).toMatchObject({ tightEntered: 1, shedNoProgress: 0, shedOverCap: 0 });
  });
});

function esc(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
