/**
 * A volume's storage I/O threads die under the engine's target service (real file
 * backend, real threads, real SQLite): the log says so, the event log records the
 * failure and the replacement, and the alert rule, fed by the engine's own input
 * collector, raises a critical alert while no threads serve the volume and an error
 * once new ones do. Killing a thread from the test is the fault; nothing else is faked.
 */
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { AlertEngine } from '../../engine/src/events/alert-engine.js';
import { EventStore } from '../../engine/src/events/event-store.js';
import { InputCollector } from '../../engine/src/events/inputs.js';
import {
  ioThreadsRule,
  volumeOfflineRule,
  DEFAULT_THRESHOLDS,
} from '../../engine/src/events/rules.js';
import { openDatabase, type Db } from '../../engine/src/persistence/db.js';
import type { FdBackend } from '../../engine/src/storage/file.js';
import { IoWorkerPool } from '../../engine/src/storage/io-worker-pool.js';
import { TargetRuntime } from '../../engine/src/service/target-runtime.js';
import { TargetService } from '../../engine/src/service/target-service.js';
import { createLogger } from '../../engine/src/util/log.js';
import { tempDir } from '../helpers/engine.js';

const NQN = 'nqn.2026-11.io.branchsan.test:vol1';

let dir: string;
let db: Db;
let rt: TargetRuntime;
let targets: TargetService;
let logged: { level: string; msg: string; [k: string]: unknown }[];

beforeEach(async () => {
  dir = tempDir();
  db = openDatabase(path.join(dir, 'engine.db')).db;
  logged = [];
  const log = createLogger({ sink: { write: (l) => logged.push(JSON.parse(l)) } });
  rt = new TargetRuntime(log);
  targets = new TargetService(db, rt, log, path.join(dir, 'data'));
  await targets.restore();
  await targets.createSubsystem({ nqn: NQN, allowAnyHost: true }, 'test');
  await targets.addNamespace(
    {
      nqn: NQN,
      backend: { kind: 'file', path: path.join(dir, 'vol1.img'), createSizeBytes: 4 << 20 },
    },
    'test',
  );
});

afterEach(async () => {
  targets.stop();
  await rt.close(0);
  db.close();
});

/** The namespace's backend, and a way to kill one of its current I/O threads. */
function backend(): { b: FdBackend; killThread: () => Promise<number> } {
  const b = (rt as unknown as { backends: Map<string, FdBackend> }).backends.get(`${NQN}#1`)!;
  type Pool = { lanes: { worker: { terminate(): Promise<number> } }[] };
  return {
    b,
    killThread: () => (b as unknown as { pool: Pool }).pool.lanes[0]!.worker.terminate(),
  };
}

async function until(f: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 25));
  expect(f()).toBe(true);
}

const eventsOf = (type: string) =>
  db.prepare('SELECT severity, message, data FROM events WHERE type = ? ORDER BY id').all(type) as {
    severity: string;
    message: string;
    data: string;
  }[];

describe('storage I/O threads that die under the target service', () => {
  it('are logged, recorded as events, and raise an alert: critical while down, an error once replaced', async () => {
    const collector = new InputCollector({
      dataDir: dir,
      target: rt.target,
      config: () => targets.config(),
      ioThreadsDown: (nqn, nsid) => rt.ioThreadsDown(nqn, nsid),
      events: new EventStore(db),
      now: Date.now,
    });
    const alerts = new AlertEngine(db, [ioThreadsRule()], () => DEFAULT_THRESHOLDS, {
      raised: () => undefined,
      cleared: () => undefined,
      acknowledged: () => undefined,
    });
    expect(alerts.evaluate(await collector.collect(), Date.now()).raised).toEqual([]);

    const { b, killThread } = backend();
    await killThread();
    await until(() => b.poolRestarts === 1);
    const failed = eventsOf('target.namespace.io-threads-failed');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.severity).toBe('error');
    expect(failed[0]!.message).toBe(
      `Namespace 1 of ${NQN}: its storage I/O threads failed (I/O thread exited (code 1)). The I/O they held fails once they have all stopped, and hosts retry it; ` +
        'new threads take over then. If this repeats, restart the engine service and send a diagnostics bundle (branchsan diagnostics).',
    );
    expect(JSON.parse(failed[0]!.data)).toEqual({
      nqn: NQN,
      nsid: 1,
      nguid: targets.config().subsystems[0]!.namespaces[0]!.nguid,
      path: path.join(dir, 'vol1.img'),
      reason: 'I/O thread exited (code 1)',
    });
    const restarted = eventsOf('target.namespace.io-threads-restarted');
    expect(restarted).toHaveLength(1);
    expect(restarted[0]!.severity).toBe('info');
    expect(restarted[0]!.message).toMatch(
      /^Namespace 1 of .*: new storage I\/O threads serve it again, after \d+\.\d s without\.$/,
    );
    expect(logged.map((l) => [l.level, l.msg])).toEqual(
      expect.arrayContaining([
        ['error', 'storage I/O threads failed: the I/O they held fails and hosts retry it'],
        ['warn', 'new storage I/O threads took over'],
      ]),
    );
    expect(logged.find((l) => l.level === 'error')).toMatchObject({
      nqn: NQN,
      nsid: 1,
      reason: 'I/O thread exited (code 1)',
    });

    // replaced already: an error, not critical
    const first = alerts.evaluate(await collector.collect(), Date.now()).raised;
    expect(first.map((a) => [a.rule, a.severity])).toEqual([['volume.io-threads', 'error']]);
    expect(first[0]!.message).toContain('failed once in the last hour');

    // a second failure waits a second for new threads: critical meanwhile
    await killThread();
    await until(() => b.ioThreadsDown);
    const down = alerts.evaluate(await collector.collect(), Date.now());
    expect(down.raised.map((a) => a.severity)).toEqual(['critical']);
    expect(down.raised[0]!.message).toContain('failed 2 times in the last hour');
    expect(down.raised[0]!.message).toContain('No new threads serve it yet');
    await until(() => b.poolRestarts === 2);
    const back = alerts.evaluate(await collector.collect(), Date.now());
    expect(back.cleared.map((a) => a.severity)).toEqual(['critical']);
    expect(back.raised.map((a) => a.severity)).toEqual(['error']);
    expect(eventsOf('target.namespace.io-threads-restarted')).toHaveLength(2);
  });

  it('records only the first of new threads failing to start in a row', () => {
    const at = { nqn: NQN, nsid: 1, nguid: '0'.repeat(32), location: '/srv/vol1.img' };
    const tell = rt.onIoThreads!;
    const exited = 'I/O thread exited (code 1)';
    tell({ ...at, kind: 'failed', reason: exited, retryInMs: 0 });
    tell({ ...at, kind: 'start-failed', reason: 'EMFILE', retryInMs: 1000, attempt: 1 });
    tell({ ...at, kind: 'start-failed', reason: 'EMFILE', retryInMs: 5000, attempt: 2 });
    tell({ ...at, kind: 'restarted', downMs: 6100, restarts: 1 });
    tell({ ...at, kind: 'failed', reason: exited, retryInMs: 1000 });
    tell({ ...at, kind: 'start-failed', reason: 'EMFILE', retryInMs: 5000, attempt: 1 });
    const rows = db
      .prepare(
        "SELECT type, message FROM events WHERE type LIKE 'target.namespace.io-threads-%' ORDER BY id",
      )
      .all() as { type: string; message: string }[];
    expect(rows.map((r) => r.type.slice('target.namespace.io-threads-'.length))).toEqual([
      'failed',
      'start-failed',
      'restarted',
      'failed',
      'start-failed',
    ]);
    expect(rows[1]!.message).toBe(
      `Namespace 1 of ${NQN}: new storage I/O threads could not start (EMFILE), so its I/O fails. ` +
        'They are tried again in 1 s, then ever more slowly. Restart the engine service; if that does not help, send a diagnostics bundle (branchsan diagnostics).',
    );
    expect(rows[2]!.message).toBe(
      `Namespace 1 of ${NQN}: new storage I/O threads serve it again, after 6.1 s without.`,
    );
    expect(rows[3]!.message).toContain('new threads take over then and 1 s more.');
  });

  it("a namespace added later under the same nsid does not inherit the removed one's alert", async () => {
    const collector = new InputCollector({
      dataDir: dir,
      target: rt.target,
      config: () => targets.config(),
      events: new EventStore(db),
      now: Date.now,
    });
    const { b, killThread } = backend();
    await killThread();
    await until(() => b.poolRestarts === 1);
    expect((await collector.collect()).ioThreadFailures).toHaveLength(1);
    await targets.removeNamespace(NQN, 1, 'test');
    const again = await targets.addNamespace(
      {
        nqn: NQN,
        backend: { kind: 'file', path: path.join(dir, 'new.img'), createSizeBytes: 4 << 20 },
      },
      'test',
    );
    expect(again.nsid).toBe(1);
    expect((await collector.collect()).ioThreadFailures).toEqual([]);
  });

  it('a namespace removed while its new threads start records no failure to start', async () => {
    const { b, killThread } = backend();
    const options = (b as unknown as { poolOptions: { fd: number } }).poolOptions;
    options.fd = 1_000_000; // new threads cannot open the file: they fail to start
    // The removal must come while the new threads start: the real start, timed from it.
    const start = IoWorkerPool.start.bind(IoWorkerPool);
    let removal: Promise<void> | undefined;
    const spy = vi.spyOn(IoWorkerPool, 'start').mockImplementation((o) => {
      const starting = start(o);
      removal = targets.removeNamespace(NQN, 1, 'test');
      return starting;
    });
    try {
      await killThread();
      await until(() => removal !== undefined);
      await removal;
    } finally {
      spy.mockRestore();
    }
    // Before: "could not start … restart the engine service" was recorded for a
    // namespace being removed, and the removal sat out the next back-off (1 s).
    await new Promise((r) => setTimeout(r, 300));
    expect(eventsOf('target.namespace.io-threads-start-failed')).toEqual([]);
    expect(logged.filter((l) => l.msg.includes('could not start'))).toEqual([]);
    expect(targets.config().subsystems[0]!.namespaces).toEqual([]);
  });
});

describe('a device that goes away under the target service', () => {
  // Before: ENXIO was a media error like any other, and nothing was recorded.
  it('is logged and recorded as an error event naming the volume, the device and what to do', async () => {
    const { b } = backend();
    // the kernel's answer for a device that is not there (see target-ana.test.ts)
    (b as unknown as { pool: { submit: (...args: unknown[]) => void } }).pool.submit = (
      ...args: unknown[]
    ) => setImmediate(() => (args[4] as (status: number) => void)(6 /* ENXIO */));
    const err = await new Promise<Error | null>((resolve) => b.read(4096, 512, resolve));
    expect(err?.message).toMatch(/is gone \(ENXIO/);
    expect(b.closed).toBe(true);
    const file = path.join(dir, 'vol1.img');
    const gone = eventsOf('target.namespace.storage-gone');
    expect(gone).toHaveLength(1);
    expect(gone[0]!.severity).toBe('error');
    expect(gone[0]!.message).toBe(
      `Namespace 1 of ${NQN}: its backing file ${file} is gone (ENXIO on a read at offset 4096: the storage under the file went away). ` +
        'This node no longer serves the volume: hosts see its path inaccessible and use another path or wait, and nothing is read from it. ' +
        `Bring back the disk or mount the file is on (dmesg and findmnt -T '${file}' say what happened to it), then restart the engine service; or remove the volume.`,
    );
    expect(JSON.parse(gone[0]!.data)).toMatchObject({
      nqn: NQN,
      nsid: 1,
      path: file,
      errno: 'ENXIO',
    });
    expect(logged.map((l) => [l.level, l.msg])).toContainEqual([
      'error',
      'the storage of a namespace is gone: this node no longer serves it, hosts use another path or wait',
    ]);
    // a second failure tells nothing new
    await new Promise((resolve) => b.read(0, 512, resolve));
    expect(eventsOf('target.namespace.storage-gone')).toHaveLength(1);
  });

  // Before: the volume stayed off every alert (its namespace is still attached), so the
  // console showed nothing while hosts could no longer reach it here.
  it('raises the critical volume.offline alert that says which device and what to do', async () => {
    const collector = new InputCollector({
      dataDir: dir,
      target: rt.target,
      config: () => targets.config(),
      storageGone: (nqn, nsid) => rt.storageGone(nqn, nsid),
      events: new EventStore(db),
      now: Date.now,
    });
    const alerts = new AlertEngine(db, [volumeOfflineRule()], () => DEFAULT_THRESHOLDS, {
      raised: () => undefined,
      cleared: () => undefined,
      acknowledged: () => undefined,
    });
    expect(alerts.evaluate(await collector.collect(), Date.now()).raised).toEqual([]);

    const { b } = backend();
    (b as unknown as { pool: { submit: (...args: unknown[]) => void } }).pool.submit = (
      ...args: unknown[]
    ) => setImmediate(() => (args[4] as (status: number) => void)(19 /* ENODEV */));
    await new Promise((resolve) => b.write(0, Buffer.alloc(512), false, resolve));
    const [alert] = alerts.evaluate(await collector.collect(), Date.now()).raised;
    expect(alert!.severity).toBe('critical');
    expect(alert!.title).toBe('Volume vol1 (namespace 1) is offline');
    expect(alert!.message).toBe(
      `Volume vol1 (namespace 1) is no longer served, so hosts cannot reach it on this node: backing file ${path.join(dir, 'vol1.img')} is gone ` +
        '(ENODEV: the storage under the file went away), so this node no longer serves the volume: hosts use another path or wait. ' +
        `Bring back the disk or mount it is on (check dmesg and findmnt -T '${path.join(dir, 'vol1.img')}'), then restart the engine service; or remove the volume.`,
    );
    // what the alert offers works: the volume is removed, its backend closed, the alert gone
    await targets.removeNamespace(NQN, 1, 'test');
    expect(rt.hasNamespace(NQN, 1)).toBe(false);
    const after = alerts.evaluate(await collector.collect(), Date.now());
    expect(after.cleared.map((c) => c.subject)).toEqual([`${NQN}/1`]);
  });
});
