/**
 * Durability of the engine (`branchsan serve`) as a host sees it over NVMe/TCP:
 * - data written (mixed sizes, some FUA, then a Flush) survives a clean restart, and the
 *   configuration comes back identical;
 * - kill -9 in the middle of a write workload loses no acknowledged write; writes in
 *   flight at the kill hold, block by block, their old or their new content and nothing
 *   else; the configuration comes back identical and the unclean stop is logged and
 *   recorded;
 * - SIGTERM while writes are in flight: the engine exits 0 and every acknowledged write
 *   reads back.
 * The host is the project's host library with automatic reconnect, so it also proves the
 * host finds its way back to a restarted engine.
 *
 * Needs the built engine (npm test builds it; or npm run build:engine).
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import type { TargetConfig } from '../../contract/api.js';
import {
  HostError,
  NvmeController,
  NvmeStatusError,
  type NvmeNamespace,
} from '../../engine/src/host/index.js';
import { SC } from '../../engine/src/protocol/status.js';
import { connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';

const NQN = 'nqn.2026-01.io.branchsan.test:durability';
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:0000dddd-0000-4000-8000-0000000000d1';
const SIZE = 64 << 20;
const BS = 512;
const ZERO_BLOCK = Buffer.alloc(BS);

// Everything a test started, so afterEach can always clean up.
const engines: RunningEngine[] = [];
const clients: SocketClient[] = [];
const ctrls: NvmeController[] = [];
const dirs: string[] = [];

afterEach(async () => {
  for (const c of ctrls.splice(0)) await c.close(500).catch(() => {});
  for (const a of clients.splice(0)) a.close();
  for (const e of engines.splice(0)) await e.stop('SIGKILL').catch(() => {});
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}, 30_000);

async function engineOn(dataDir: string): Promise<{ engine: RunningEngine; api: SocketClient }> {
  const engine = await startEngine({ dataDir, timeoutMs: 60_000 });
  engines.push(engine);
  const api = await connectSocket(engine.socketPath);
  clients.push(api);
  return { engine, api };
}

/** Stop an engine, wait for its exit code, and forget it. */
async function stopEngine(
  e: { engine: RunningEngine; api: SocketClient },
  signal: NodeJS.Signals,
): Promise<number | null> {
  const code = await e.engine.stop(signal);
  forget(e);
  return code;
}

/** The engine is gone: afterEach need not stop it. */
function forget(e: { engine: RunningEngine; api: SocketClient }): void {
  e.api.close();
  clients.splice(clients.indexOf(e.api), 1);
  engines.splice(engines.indexOf(e.engine), 1);
}

/** The engine's last log messages and stderr, for a failure message. */
function lastWords(engine: RunningEngine): string {
  const msgs = engine.lines.slice(-10).map((l) => String(l.msg ?? l.raw));
  return `engine log tail: ${JSON.stringify(msgs)}\nstderr: ${engine.stderr()}`;
}

function exited(engine: RunningEngine): Promise<void> {
  const p = engine.proc;
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once('exit', () => r()));
}

/** A fresh engine with a subsystem, a file namespace and a port, configured over the API. */
async function configuredEngine() {
  const dir = tempDir('branchsan-durability-');
  dirs.push(dir);
  const dataDir = path.join(dir, 'data');
  const e = await engineOn(dataDir);
  const port = await freePort();
  await e.api.call('target.subsystem.create', { nqn: NQN, hosts: [HOSTNQN] });
  await e.api.call('target.port.add', { host: '127.0.0.1', port });
  await e.api.call('target.namespace.add', {
    nqn: NQN,
    backend: { kind: 'file', path: path.join(dir, 'vol.img'), createSizeBytes: SIZE },
  });
  const config = await e.api.call('target.config', {});
  return { ...e, dataDir, port, config };
}

/** A host-library controller that reconnects on its own after the engine went away. */
async function host(port: number): Promise<{ ctrl: NvmeController; ns: NvmeNamespace }> {
  const ctrl = await NvmeController.connect({
    host: '127.0.0.1',
    port,
    subnqn: NQN,
    hostnqn: HOSTNQN,
    ioQueues: 2,
    queueSize: 32,
    reconnect: { delayMs: 200, lossTimeoutMs: 120_000 },
  });
  ctrls.push(ctrl);
  return { ctrl, ns: await ctrl.namespace(1) };
}

async function until(cond: () => boolean, what: string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function expectSameConfig(after: TargetConfig, before: TargetConfig): void {
  expect(after).toEqual(before);
  expect(before.subsystems[0]?.namespaces).toHaveLength(1);
}

/**
 * What the host knows about every block it wrote: the content of its last acknowledged
 * write, and, for writes that were in flight when the engine went away (a HostError
 * with maybeExecuted), every content the block may legitimately hold. NVMe makes no
 * promise beyond one block for a write that did not complete, so the check is per block.
 */
class WriteLog {
  readonly acked = new Map<number, Buffer>();
  readonly inDoubt = new Map<number, Buffer[]>();
  acks = 0;
  doubtful = 0;

  /** Submit a write and account for its outcome; never throws (returns the error). */
  async write(ns: NvmeNamespace, slba: number, data: Buffer, fua: boolean): Promise<Error | null> {
    try {
      await ns.write(slba, data, { fua });
    } catch (e) {
      if (e instanceof HostError && e.maybeExecuted) {
        this.doubtful++;
        this.each(slba, data, (lba, block) => {
          const maybe = this.inDoubt.get(lba) ?? [this.acked.get(lba) ?? ZERO_BLOCK];
          this.inDoubt.set(lba, [...maybe, block]);
        });
      }
      return e as Error;
    }
    this.acks++;
    this.each(slba, data, (lba, block) => {
      this.acked.set(lba, block);
      this.inDoubt.delete(lba);
    });
    return null;
  }

  private each(slba: number, data: Buffer, fn: (lba: number, block: Buffer) => void): void {
    for (let i = 0; i < data.length / BS; i++) fn(slba + i, data.subarray(i * BS, (i + 1) * BS));
  }

  /** Read back every block written; returns a list of problems (empty = all good). */
  async verify(ns: NvmeNamespace): Promise<string[]> {
    const lbas = [...new Set([...this.acked.keys(), ...this.inDoubt.keys()])].sort((a, b) => a - b);
    const problems: string[] = [];
    // Read in runs of consecutive blocks (at most 256 at once).
    for (let i = 0; i < lbas.length;) {
      let j = i + 1;
      while (j < lbas.length && lbas[j] === lbas[j - 1]! + 1 && j - i < 256) j++;
      const back = await ns.read(lbas[i]!, j - i);
      for (let k = i; k < j; k++) {
        const lba = lbas[k]!;
        const got = back.subarray((k - i) * BS, (k - i + 1) * BS);
        const maybe = this.inDoubt.get(lba);
        if (maybe) {
          if (!maybe.some((m) => m.equals(got))) {
            problems.push(`in-doubt block ${lba} holds neither its old nor its new content`);
          }
        } else if (!got.equals(this.acked.get(lba)!)) {
          problems.push(`acknowledged block ${lba} lost its content`);
        }
      }
      i = j;
    }
    return problems;
  }
}

/**
 * Writers, each on its own slots (16 blocks apart, so writes in flight never overlap):
 * random sizes of 1..16 blocks, a quarter of them FUA, until stopped or an error.
 */
class Writers {
  private stopped = false;
  private readonly done: Promise<void>[] = [];
  readonly errors: Error[] = [];

  constructor(
    private readonly ns: NvmeNamespace,
    private readonly log: WriteLog,
    n: number,
    /** Called before every submission (the kill test uses it to pick its moment). */
    private readonly beforeWrite: () => void = () => {},
  ) {
    for (let w = 0; w < n; w++) this.done.push(this.run(w, n));
  }

  private async run(w: number, n: number): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      const slot = w + n * (i % 64);
      const nlb = 1 + ((i * 7 + w * 3) % 16);
      this.beforeWrite();
      const err = await this.log.write(this.ns, slot * 16, randomBytes(nlb * BS), i % 4 === 0);
      if (err) {
        this.errors.push(err);
        return; // the engine went away: stop, as a host would until it is back
      }
    }
  }

  stop(): Promise<void> {
    this.stopped = true;
    return Promise.all(this.done).then(() => {});
  }

  finished(): Promise<void> {
    return Promise.all(this.done).then(() => {});
  }
}

describe('durability', () => {
  it('data written with mixed sizes, FUA and a Flush survives a clean restart; configuration is identical', async () => {
    const e = await configuredEngine();
    const { ctrl, ns } = await host(e.port);
    // A known pattern: sizes from one block to 1 MiB, in-capsule and R2T, some FUA.
    const log = new WriteLog();
    const sizes = [1, 7, 8, 16, 33, 64, 128, 255, 256, 1024, 2048];
    let slba = 0;
    for (const [i, nlb] of sizes.entries()) {
      const err = await log.write(ns, slba, randomBytes(nlb * BS), i % 3 === 0);
      expect(err).toBeNull();
      slba += nlb + 5; // gaps stay zero and are not checked
    }
    // Concurrent small writes on both queues, then one Flush for all of them.
    const batch = Array.from({ length: 64 }, (_, i) =>
      log.write(ns, 100_000 + i * 9, randomBytes(8 * BS), false),
    );
    expect(await Promise.all(batch)).toEqual(Array(64).fill(null));
    await ns.flush();

    const code = await stopEngine(e, 'SIGTERM');
    expect(code, lastWords(e.engine)).toBe(0);
    await until(() => ctrl.state !== 'live', 'the host noticing the engine is gone');
    const e2 = await engineOn(e.dataDir);
    expectSameConfig(await e2.api.call('target.config', {}), e.config);
    await until(() => ctrl.state === 'live', 'the host reconnecting');
    expect(await log.verify(ns)).toEqual([]);
    expect(log.acked.size).toBe(sizes.reduce((a, b) => a + b, 0) + 64 * 8);
    expect(e2.engine.lines.some((l) => l.msg === 'previous run did not stop cleanly')).toBe(false);
  }, 120_000);

  it('kill -9 under host writes: every acknowledged write reads back, in-flight ones hold old or new', async () => {
    const e = await configuredEngine();
    const { ctrl, ns } = await host(e.port);
    const log = new WriteLog();
    let killed = false;
    const writers = new Writers(ns, log, 4, () => {
      // Once enough writes were acknowledged, kill the engine right as this write goes
      // out: so writes are certainly in flight (some sent, some maybe executed).
      if (!killed && log.acks >= 300) {
        killed = true;
        queueMicrotask(() => process.kill(e.engine.pid, 'SIGKILL'));
      }
    });
    await writers.finished();
    expect(killed).toBe(true);
    expect(writers.errors.length).toBe(4);
    expect(log.acks).toBeGreaterThanOrEqual(300);
    expect(log.doubtful, 'writes were in flight at the kill').toBeGreaterThanOrEqual(1);
    await exited(e.engine); // the launcher follows its engine
    forget(e);

    const e2 = await engineOn(e.dataDir);
    expectSameConfig(await e2.api.call('target.config', {}), e.config);
    expect(e2.engine.lines.some((l) => l.msg === 'previous run did not stop cleanly')).toBe(true);
    await until(() => ctrl.state === 'live', 'the host reconnecting');
    expect(await log.verify(ns)).toEqual([]);

    // The unclean stop is also recorded in the event history.
    const db = new Database(path.join(e.dataDir, 'branchsan.db'), { readonly: true });
    const types = (
      db.prepare('SELECT type FROM events ORDER BY id').all() as { type: string }[]
    ).map((r) => r.type);
    db.close();
    expect(types).toContain('engine.unclean-restart');
    // And the host goes on writing after the restart.
    const again = new WriteLog();
    expect(await again.write(ns, 120_000, randomBytes(4096), true)).toBeNull();
    expect(await again.verify(ns)).toEqual([]);
  }, 120_000);

  it('SIGTERM with writes in flight: they complete (drain), exit code 0, every acknowledged write reads back', async () => {
    const e = await configuredEngine();
    const { ctrl, ns } = await host(e.port);
    const log = new WriteLog();
    let stopped = false;
    const writers = new Writers(ns, log, 4, () => {
      // SIGTERM to the engine itself, right as this write goes out.
      if (!stopped && log.acks >= 300) {
        stopped = true;
        queueMicrotask(() => process.kill(e.engine.pid, 'SIGTERM'));
      }
    });
    await writers.finished();
    expect(stopped).toBe(true);
    expect(writers.errors.length).toBe(4);
    // The graceful stop drains: writes already taken get their completion, later ones a
    // definite refusal (ANA Transition, or never sent) -- no write is left in doubt.
    expect(log.doubtful, writers.errors.map(String).join('\n')).toBe(0);
    for (const err of writers.errors) {
      const definite =
        (err instanceof NvmeStatusError && err.status === SC.ANA_TRANSITION) ||
        (err instanceof HostError && !err.maybeExecuted);
      expect(definite, String(err)).toBe(true);
    }
    await exited(e.engine);
    forget(e);
    expect(e.engine.proc.exitCode, lastWords(e.engine)).toBe(0);

    const e2 = await engineOn(e.dataDir);
    expectSameConfig(await e2.api.call('target.config', {}), e.config);
    const unclean = e2.engine.lines.some((l) => l.msg === 'previous run did not stop cleanly');
    expect(unclean, lastWords(e.engine)).toBe(false);
    await until(() => ctrl.state === 'live', 'the host reconnecting');
    expect(await log.verify(ns)).toEqual([]);
  }, 120_000);
});
