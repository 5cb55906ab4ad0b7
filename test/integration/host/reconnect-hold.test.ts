/**
 * I/O submitted while a controller is reconnecting: held until the controller is live
 * again, as Linux requeues it, then sent on the new association (never sent before, so a
 * write too); bounded by the command's timeout and fastIoFailMs, and ended at once by
 * close() and by giving up reconnecting. A multipath path does not hold: its namespace
 * sends the command to another live path at once.
 *
 * Our own Target on 127.0.0.1 behind a proxy that drops the connections and refuses new
 * ones for as long as a test needs (PausableProxy: resume() drops, pause() refuses).
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { Target } from '../../../engine/src/core/index.js';
import {
  HostError,
  MultipathNamespace,
  NvmeController,
  NvmeRequest,
  fillRw,
  type ControllerOptions,
} from '../../../engine/src/host/index.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import { serveOnLoopback } from '../../helpers/target.js';
import { portsInTurn, waitFor } from './helpers.js';
import { PausableProxy, runCleanup, cleanup } from './multipath-rig.js';

const NQN = 'nqn.2026-01.io.branchsan.test:reconnect-hold';
/** This file's ports: 51000..51099, taken in turn (a port in use is skipped). */
const onNextPort = portsInTurn(51000, 51099);

afterEach(runCleanup);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Our target serving one 1 MiB memory namespace, behind a proxy. */
async function rig(more: Partial<ControllerOptions> = {}) {
  const target = new Target({ kaSlackMs: 500 });
  target.addSubsystem({ nqn: NQN, serial: 'RCH1', model: 'BranchSAN', allowAnyHost: true });
  target.addNamespace(NQN, {
    nsid: 1,
    backend: new MemoryBackend({ sizeBytes: 1 << 20 }),
    nguid: 'ef'.repeat(16),
  });
  const served = await onNextPort((port) => serveOnLoopback(target, { port }));
  cleanup.push(async () => {
    target.close();
    await served.transport.close();
  });
  const proxy = await onNextPort((port) => PausableProxy.start(served.port, port));
  const ctrl = await NvmeController.connect({
    host: '127.0.0.1',
    port: proxy.port,
    subnqn: NQN,
    reconnect: { delayMs: 50, lossTimeoutMs: 60_000 },
    ...more,
  });
  cleanup.push(() => ctrl.close(0));
  const ns = await ctrl.namespace(1);
  /** The connections drop, and new ones are refused until proxy.resume(). */
  const cut = async () => {
    proxy.resume();
    proxy.pause();
    await waitFor(() => ctrl.state === 'recovering');
  };
  return { target, proxy, ctrl, ns, cut };
}

/** How `p` ended, and when (ms after `since`). */
async function outcome(p: Promise<unknown>, since: number) {
  const error = await p.then(
    () => null,
    (e: Error) => e,
  );
  return { error, ms: performance.now() - since };
}

describe('I/O submitted while the controller reconnects', () => {
  // Before: refused at once, 'controller is recovering: ...' (not-connected).
  it('holds a write until the controller is live again, then sends it', async () => {
    const { proxy, ctrl, ns, cut } = await rig();
    await cut();
    const data = randomBytes(4096);
    const write = outcome(ns.write(16, data), 0);
    const read = outcome(ns.read(0, 8), 0);
    await sleep(400);
    expect(ctrl.reconnecting).toBe(true);
    proxy.resume();
    expect((await write).error).toBeNull();
    expect((await read).error).toBeNull();
    expect(ctrl.state).toBe('live');
    expect((await ns.read(16, 8)).equals(data)).toBe(true);
  });

  it('holds one submitted with the raw callback API too (submitIo)', async () => {
    const { proxy, ctrl, ns, cut } = await rig();
    await cut();
    const data = randomBytes(512);
    const req = fillRw(new NvmeRequest(), IO.WRITE, 1, 3, 1);
    req.dataOut = data;
    const done = new Promise<NvmeRequest>((r) => (req.onDone = r));
    ctrl.submitIo(req);
    await sleep(200);
    proxy.resume();
    const r = await done;
    expect(r.error).toBeNull();
    expect(r.status).toBe(0);
    expect((await ns.read(3, 1)).equals(data)).toBe(true);
  });

  it('fails it, never sent, once its ioTimeoutMs has passed and the controller is still reconnecting', async () => {
    const { ctrl, ns, cut } = await rig({ ioTimeoutMs: 600 });
    await cut();
    const started = performance.now();
    const r = await outcome(ns.write(16, randomBytes(4096)), started);
    expect(r.error).toBeInstanceOf(HostError);
    expect(r.error).toMatchObject({ kind: 'not-connected', maybeExecuted: false });
    expect(r.error!.message).toMatch(
      /controller is (recovering|connecting): .+; the command waited for it to reconnect until its timeout \(600 ms\) ran out and was not sent: check the connection to the target, then send it again/,
    );
    expect(r.ms).toBeGreaterThan(550);
    expect(ctrl.state).toBe('recovering');
  });

  it('fails held commands once fastIoFailMs has passed since the loss, and refuses new ones at once', async () => {
    const { proxy, ctrl, ns, cut } = await rig({ fastIoFailMs: 500 });
    const lost = performance.now();
    await cut();
    const r = await outcome(ns.write(16, randomBytes(4096)), lost);
    expect(r.error).toMatchObject({ kind: 'not-connected', maybeExecuted: false });
    expect(r.error!.message).toMatch(
      /controller is (recovering|connecting): .+; it has been reconnecting for longer than fastIoFailMs \(500 ms\), so I\/O fails at once until it is live again \(not sent\): check the connection to the target, then send it again once it is live, or raise fastIoFailMs/,
    );
    expect(r.ms).toBeGreaterThan(450);
    // Refused at once: held, it would wait out its 30 s ioTimeoutMs.
    const late = await outcome(ns.read(0, 1), 0);
    expect(late.error).toMatchObject({ kind: 'not-connected' });
    expect(late.error!.message).toMatch(/longer than fastIoFailMs \(500 ms\)/);
    // Live again: held from the next loss on, as before.
    proxy.resume();
    await waitFor(() => ctrl.state === 'live', 5000);
    await ns.read(0, 1);
  });

  it('ends held commands at once on close()', async () => {
    const { ctrl, ns, cut } = await rig();
    await cut();
    const write = outcome(ns.write(16, randomBytes(4096)), 0);
    await sleep(100);
    const started = performance.now();
    await ctrl.close(0);
    const r = await write;
    expect(r.error).toMatchObject({ kind: 'closed', maybeExecuted: false });
    expect(r.error!.message).toMatch(
      /controller closed while the command waited for it to reconnect \(never sent\)/,
    );
    expect(performance.now() - started).toBeLessThan(1000);
  });

  it('ends held commands when the controller gives up reconnecting', async () => {
    const { ctrl, ns, cut } = await rig({ reconnect: { delayMs: 50, lossTimeoutMs: 600 } });
    await cut();
    const r = await outcome(ns.write(16, randomBytes(4096)), performance.now());
    expect(ctrl.state).toBe('dead');
    expect(r.error).toMatchObject({ kind: 'not-connected', maybeExecuted: false });
    expect(r.error!.message).toMatch(
      /controller is dead: .+; it reconnects no more, so the command was not sent: check the connection to the target, reconnect\(\) the controller, then send it again/,
    );
  });

  it('still fails a write in flight when the connection was lost, and does not send it again', async () => {
    const { proxy, ctrl, ns } = await rig();
    proxy.stall(); // what the target answers is held: the write stays in flight
    const write = outcome(ns.write(16, randomBytes(4096)), 0);
    await sleep(100);
    proxy.resume();
    proxy.pause();
    const r = await write;
    expect(r.error).toMatchObject({ kind: 'transport', maybeExecuted: true });
    expect(r.error!.message).toMatch(/may have been executed, and is not sent again/);
    proxy.resume();
    await waitFor(() => ctrl.state === 'live', 5000);
  });
});

describe('I/O waiting for a queue slot when the connection is lost', () => {
  // Before: failed with the lost connection's error (maybeExecuted false), though never
  // sent, while those submitted a moment later were held for the reconnect.
  it('holds the writes never sent and sends them after the reconnect; those in flight fail in doubt', async () => {
    const { proxy, ctrl, ns } = await rig({ queueSize: 4 });
    expect(ctrl.ioQueueDepth).toBe(3);
    proxy.stall(); // the target's answers are held: three writes stay in flight
    const blocks = Array.from({ length: 6 }, () => randomBytes(512));
    const writes = blocks.map((b, i) => outcome(ns.write(i, b), 0));
    expect(ctrl.ioQueueLoad).toEqual([{ inFlight: 3, queued: 3 }]);
    await sleep(100);
    proxy.resume();
    proxy.pause();
    await waitFor(() => ctrl.state === 'recovering');
    await sleep(200);
    proxy.resume();
    const ended = await Promise.all(writes);
    for (const r of ended.slice(0, 3)) {
      expect(r.error).toMatchObject({ kind: 'transport', maybeExecuted: true });
    }
    for (const r of ended.slice(3)) expect(r.error).toBeNull();
    for (let i = 3; i < 6; i++) expect((await ns.read(i, 1)).equals(blocks[i]!)).toBe(true);
  });
});

describe('a multipath path reconnecting', () => {
  it('does not hold I/O: it goes to the other live path at once', async () => {
    const backend = new MemoryBackend({ sizeBytes: 1 << 20 });
    const ports: number[] = [];
    for (const [name, lo, hi] of [
      ['A', 1, 0x7fff],
      ['B', 0x8000, 0xffef],
    ] as const) {
      const target = new Target({ cntlidMin: lo, cntlidMax: hi, kaSlackMs: 500 });
      target.addSubsystem({ nqn: NQN, serial: 'RCH2', model: 'BranchSAN', allowAnyHost: true });
      target.addNamespace(NQN, { nsid: 1, backend, nguid: 'ef'.repeat(16) });
      target.setAnaState(1, name === 'A' ? 'optimized' : 'non-optimized');
      const served = await onNextPort((port) => serveOnLoopback(target, { port }));
      cleanup.push(async () => {
        target.close();
        await served.transport.close();
      });
      ports.push(served.port);
    }
    const proxy = await onNextPort((port) => PausableProxy.start(ports[0]!, port));
    const reconnect = { delayMs: 50, lossTimeoutMs: 60_000 };
    const path = (port: number, name: string) => ({
      host: '127.0.0.1',
      port,
      subnqn: NQN,
      name,
      reconnect,
    });
    const mp = await MultipathNamespace.connect({
      nsid: 1,
      paths: [path(proxy.port, 'A'), path(ports[1]!, 'B')],
    });
    cleanup.push(() => mp.close());
    proxy.resume();
    proxy.pause();
    await waitFor(() => mp.controller(0).reconnecting);
    // A stays unreachable: a read held for its reconnect would never complete.
    for (let i = 0; i < 8; i++) await mp.read(i, 1);
    expect(mp.controller(0).reconnecting).toBe(true);
    // A path's controller itself holds nothing (fastIoFailMs 0): refused at once.
    const req = fillRw(new NvmeRequest(), IO.READ, 1, 0, 1);
    req.readLength = 512;
    const done = new Promise<NvmeRequest>((r) => (req.onDone = r));
    mp.controller(0).submitIo(req);
    expect((await done).error).toMatchObject({ kind: 'not-connected', maybeExecuted: false });
  });
});
