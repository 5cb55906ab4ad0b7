/**
 * A volume's I/O tuning (`io` in target.namespace.add) on a real engine process with
 * real files in RAM (/dev/shm): it is checked, stored, shown by target.config, applied
 * at the open and at every later start, and the Prometheus endpoint shows what it did:
 * reads run on the event loop or not, and the polls for lone I/Os' completions.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode, type IoTuning } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';
import { until } from '../helpers/wait.js';
import { parseExposition } from '../unit/metrics/exposition.js';

const NQN = 'nqn.2026-11.io.branchsan.test:io-tuning';
const MiB = 1 << 20;
/** nsid → the tuning it is added with. */
const TUNING: [number, IoTuning | undefined][] = [
  [1, undefined], // the defaults
  [2, { inlineReads: false, completionSpinMicros: 0 }],
  [3, { inlineReads: false }],
];
const WRITES = 8;
const READS = 24;

const data = path.join(tempDir(), 'data');
const ram = fs.mkdtempSync('/dev/shm/branchsan-io-');
let engine: RunningEngine;
let api: SocketClient;
let port: number;
let token: string;

async function start(): Promise<void> {
  engine = await startEngine({ dataDir: data });
  api = await connectSocket(engine.socketPath);
}

async function stop(): Promise<void> {
  api?.close();
  await engine?.stop();
}

/** The `namespace attached` log line of nsid. */
function attached(nsid: number): Record<string, unknown> {
  return engine.lines.find((l) => l.msg === 'namespace attached' && l.nsid === nsid)!;
}

async function scrape(): Promise<Map<string, { labels: Record<string, string>; value: number }[]>> {
  const res = await fetch(new URL('/metrics', engine.consoleUrl!), {
    headers: { Authorization: `Bearer ${token}` },
  });
  expect(res.status).toBe(200);
  const fams = parseExposition(await res.text());
  return new Map([...fams].map(([name, f]) => [name, f.samples]));
}

/** The value of the sample of `family` for nsid with `label` = value. */
function value(
  fams: Map<string, { labels: Record<string, string>; value: number }[]>,
  family: string,
  nsid: number,
  label?: [string, string],
): number | undefined {
  return fams
    .get(family)
    ?.find(
      (s) =>
        s.labels.nqn === NQN &&
        s.labels.nsid === String(nsid) &&
        (!label || s.labels[label[0]] === label[1]),
    )?.value;
}

beforeAll(async () => {
  await start();
  port = await freePort();
  await api.call('target.subsystem.create', { nqn: NQN, allowAnyHost: true });
  await api.call('target.port.add', { host: '127.0.0.1', port });
  for (const [nsid, io] of TUNING) {
    const added = await api.call('target.namespace.add', {
      nqn: NQN,
      nsid,
      backend: {
        kind: 'file',
        path: path.join(ram, `vol${nsid}.img`),
        createSizeBytes: 4 * MiB,
        ...(io ? { io } : {}),
      },
    });
    expect(added.io).toEqual(io ?? {});
  }
  token = (await api.call('metrics.settings.set', { prometheusEnabled: true })).token!;
}, 60_000);

afterAll(async () => {
  await stop();
  fs.rmSync(ram, { recursive: true, force: true });
});

describe('a volume I/O tuning', () => {
  it('refuses a tuning that is not one, saying which field', async () => {
    const file = (io: unknown) => ({
      nqn: NQN,
      backend: { kind: 'file', path: path.join(ram, 'bad.img'), createSizeBytes: MiB, io },
    });
    const cases: [unknown, string, RegExp][] = [
      [file({ completionSpinMicros: -1 }), 'backend.io.completionSpinMicros', /at least 0/],
      [file({ completionSpinMicros: 5000 }), 'backend.io.completionSpinMicros', /1000/],
      [file({ completionSpinMicros: 1.5 }), 'backend.io.completionSpinMicros', /whole number/],
      [file({ inlineReads: 'no' }), 'backend.io.inlineReads', /boolean/],
      [file({ spin: 30 }), 'backend.io.spin', /Unrecognized key/],
      [
        { nqn: NQN, backend: { kind: 'memory', sizeBytes: MiB, io: {} } },
        'backend.io',
        /nothing to tune/,
      ],
    ];
    for (const [params, field, message] of cases) {
      const err = await apiError(api.call('target.namespace.add', params as never));
      expect(err.code, err.message).toBe(ErrorCode.InvalidParams);
      expect(err.data?.field, err.message).toBe(field);
      expect(err.message).toMatch(message);
    }
    expect(fs.existsSync(path.join(ram, 'bad.img'))).toBe(false);
    const config = await api.call('target.config', {});
    expect(config.subsystems[0]!.namespaces.map((n) => n.nsid)).toEqual([1, 2, 3]);
  });

  it('runs each volume as its tuning says, and /metrics shows it', async () => {
    const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN });
    const reads = new Map<number, () => Promise<void>>();
    try {
      for (const [nsid] of TUNING) {
        const ns = await ctrl.namespace(nsid);
        const blocks: Buffer[] = [];
        for (let i = 0; i < WRITES; i++) {
          const b = randomBytes(4096);
          await ns.write(i * 8, b); // one at a time: each is alone
          blocks.push(b);
        }
        const readAll = async () => {
          for (let i = 0; i < READS; i++) {
            expect((await ns.read((i % WRITES) * 8, 8)).equals(blocks[i % WRITES]!)).toBe(true);
          }
        };
        await readAll();
        reads.set(nsid, readAll);
      }
      // the exposition is the last one-second sample's: wait for one that saw every read
      const seen = (rounds: number) =>
        until(async () => {
          const f = await scrape();
          const done = TUNING.every(
            ([nsid]) =>
              value(f, 'branchsan_namespace_read_ops_total', nsid) ===
              READS * (nsid === 3 ? rounds : 1),
          );
          return done && f;
        });
      let fams = await seen(1);
      const loop = (nsid: number, op: string) =>
        value(fams, 'branchsan_namespace_event_loop_io_total', nsid, ['op', op]);
      const polls = (nsid: number, result: string) =>
        value(fams, 'branchsan_namespace_completion_polls_total', nsid, ['result', result]);
      // 1, the defaults: reads of a RAM file run on the event loop (each one), and so do
      // its lone writes when no swap can page the file out
      expect(attached(1).inlineReads).not.toBe('off');
      expect(loop(1, 'read')).toBe(READS);
      expect(loop(1, 'read-missed')).toBe(0);
      expect(loop(1, 'write')).toBe(attached(1).inlineWrites ? WRITES : 0);
      // 2: no read on the loop, and no poll for any I/O on a thread
      expect(attached(2).inlineReads).toBe('off');
      for (const op of ['read', 'read-missed']) expect(loop(2, op)).toBe(0);
      expect([polls(2, 'caught'), polls(2, 'missed')]).toEqual([0, 0]);
      // 3: reads on a thread, each one alone, so the loop polls for them. Under load
      // (a full CI run) the thread can finish a read before the loop comes to poll,
      // and no poll is counted: more rounds of lone reads then, up to 10.
      expect(loop(3, 'read')).toBe(0);
      const polled = () => polls(3, 'caught')! + polls(3, 'missed')!;
      let rounds = 1;
      while (polled() === 0 && rounds < 10) {
        await reads.get(3)!();
        fams = await seen(++rounds);
      }
      expect(polled()).toBeGreaterThanOrEqual(1);
      expect(polled()).toBeLessThanOrEqual(READS * rounds + WRITES);
      expect(loop(3, 'read')).toBe(0);
    } finally {
      await ctrl.close();
    }
  }, 60_000);

  it('keeps the tuning across a restart and applies it at the open', async () => {
    await stop();
    await start();
    const config = await api.call('target.config', {});
    expect(config.subsystems[0]!.namespaces.map((n) => [n.nsid, n.io])).toEqual(
      TUNING.map(([nsid, io]) => [nsid, io ?? {}]),
    );
    expect(attached(1).inlineReads).not.toBe('off');
    expect(attached(2).inlineReads).toBe('off');
    expect(attached(3).inlineReads).toBe('off');
    for (const [nsid, io] of TUNING) expect(attached(nsid).io).toEqual(io ?? {});
  });

  it('serves a tuning edited by hand into something that is not one with the defaults, and says so', async () => {
    await stop();
    const db = new Database(path.join(data, 'branchsan.db'));
    db.prepare('UPDATE namespaces SET io = ? WHERE nsid = 3').run('{"completionSpinMicros":"30"}');
    db.prepare('UPDATE namespaces SET io = ? WHERE nsid = 2').run('{inlineReads');
    db.close();
    await start();
    const warned = engine.lines.filter((l) => typeof l.msg === 'string' && /io tuning/.test(l.msg));
    expect(warned.map((l) => [l.nsid, l.problem])).toEqual([
      [2, 'not JSON: "{inlineReads"'],
      [3, expect.stringMatching(/^io\.completionSpinMicros: .*number/)],
    ]);
    expect(warned[0]!.msg).toMatch(/served with the default tuning/);
    const config = await api.call('target.config', {});
    expect(config.subsystems[0]!.namespaces.map((n) => n.io)).toEqual([{}, {}, {}]);
    expect(attached(2).inlineReads).not.toBe('off');
    expect(attached(3).inlineReads).not.toBe('off');
  });

  it('retunes a served volume at once, and keeps the new tuning', async () => {
    // (counters start at 0 with this engine run: the test before restarted it)
    const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN });
    try {
      const ns = await ctrl.namespace(1);
      const blocks = Array.from({ length: WRITES }, () => randomBytes(4096));
      const readAll = async () => {
        for (let i = 0; i < READS; i++)
          expect((await ns.read((i % WRITES) * 8, 8)).equals(blocks[i % WRITES]!)).toBe(true);
      };
      const afterReads = (n: number) =>
        until(async () => {
          const f = await scrape();
          return value(f, 'branchsan_namespace_read_ops_total', 1) === n && f;
        });
      const loop = (f: Awaited<ReturnType<typeof scrape>>, op: string) =>
        value(f, 'branchsan_namespace_event_loop_io_total', 1, ['op', op]);
      const polls = (f: Awaited<ReturnType<typeof scrape>>) =>
        ['caught', 'missed'].map((r) =>
          value(f, 'branchsan_namespace_completion_polls_total', 1, ['result', r]),
        );

      const off = await api.call('target.namespace.tune', {
        nqn: NQN,
        nsid: 1,
        io: { inlineReads: false, completionSpinMicros: 0 },
      });
      expect(off.io).toEqual({ inlineReads: false, completionSpinMicros: 0 });
      expect(off.nguid).toBe(
        (await api.call('target.config', {})).subsystems[0]!.namespaces[0]!.nguid,
      );
      const changed = engine.lines.filter((l) => l.msg === 'namespace io tuning changed');
      expect(changed.map((l) => [l.nsid, l.inlineReads, l.inlineWrites])).toEqual([
        [1, 'off', false],
      ]);
      // the same connection, at once: no read or write on the event loop, and no poll
      for (const [i, b] of blocks.entries()) await ns.write(i * 8, b);
      await readAll();
      let f = await afterReads(READS);
      expect([loop(f, 'read'), loop(f, 'write')]).toEqual([0, 0]);
      expect(polls(f)).toEqual([0, 0]);
      // back to the defaults: each read on the event loop again
      expect((await api.call('target.namespace.tune', { nqn: NQN, nsid: 1, io: {} })).io).toEqual(
        {},
      );
      await readAll();
      f = await afterReads(2 * READS);
      expect(loop(f, 'read')).toBe(READS);
    } finally {
      await ctrl.close();
    }
    // a tuning set this way replaces the one edited by hand, and is the one a start applies
    await api.call('target.namespace.tune', { nqn: NQN, nsid: 2, io: { inlineReads: false } });
    await stop();
    await start();
    const config = await api.call('target.config', {});
    expect(config.subsystems[0]!.namespaces.map((n) => n.io)).toEqual([
      {},
      { inlineReads: false },
      {},
    ]);
    expect(attached(2).inlineReads).toBe('off');
    expect(attached(1).inlineReads).not.toBe('off');
    const warned = engine.lines.filter((l) => typeof l.msg === 'string' && /io tuning/.test(l.msg));
    expect(warned.map((l) => l.nsid)).toEqual([3]);
  }, 60_000);

  it('refuses to tune what has nothing to tune, or with a tuning that is not one', async () => {
    await api.call('target.namespace.add', {
      nqn: NQN,
      nsid: 4,
      backend: { kind: 'memory', sizeBytes: MiB },
    });
    const cases: [unknown, ErrorCode, string, RegExp][] = [
      [{ nqn: NQN, nsid: 9, io: {} }, ErrorCode.NotFound, 'nsid', /does not exist/],
      [{ nqn: NQN, nsid: 4, io: {} }, ErrorCode.InvalidParams, 'nsid', /lives in memory/],
      [
        { nqn: NQN, nsid: 1, io: { completionSpinMicros: 2000 } },
        ErrorCode.InvalidParams,
        'io.completionSpinMicros',
        /at most 1000/,
      ],
      [{ nqn: NQN, nsid: 1 }, ErrorCode.InvalidParams, 'io', /io/],
    ];
    for (const [params, code, field, message] of cases) {
      const err = await apiError(api.call('target.namespace.tune', params as never));
      expect(err.code, err.message).toBe(code);
      expect(err.data?.field, err.message).toBe(field);
      expect(err.message).toMatch(message);
    }
    // nothing changed
    const config = await api.call('target.config', {});
    expect(config.subsystems[0]!.namespaces.map((n) => n.io)).toEqual([
      {},
      { inlineReads: false },
      {},
      {},
    ]);
  });
});
