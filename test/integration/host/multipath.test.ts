/**
 * Multipath against two real in-process Targets that present the same subsystem and
 * namespace over one MemoryBackend (the rig in multipath-rig.ts): routing by ANA, a node
 * stopped mid-workload, ANA flips, held writes and their fencing, and path refusal.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import {
  HostError,
  MultipathNamespace,
  type PathInfo,
  type PathOptions,
  type RetryEvent,
} from '../../../engine/src/host/index.js';
import { FID } from '../../../engine/src/protocol/opcodes.js';
import {
  BS,
  NGUID,
  NQN,
  PausableProxy,
  byName,
  open,
  pathTo,
  runCleanup,
  startPair,
  until,
  type Node,
} from './multipath-rig.js';

afterEach(runCleanup);

/**
 * The path to `n` through a proxy the test can pause: a 1 s keep-alive (so a 2 s fence),
 * short I/O and connect timeouts, quick reconnects, and the path given up after
 * `lossTimeoutMs` without a connection.
 */
function stallablePath(n: Node, proxy: PausableProxy, lossTimeoutMs: number): PathOptions {
  return pathTo(n, proxy.port, {
    kato: 1000,
    ioTimeoutMs: 1500,
    connectTimeoutMs: 1000,
    reconnect: { delayMs: 300, lossTimeoutMs },
  });
}

/** When path A's association was first lost (its controller went 'recovering'). */
function lossOfA() {
  const clock = { lostAt: 0 };
  const onPathChange = (p: PathInfo, why: string) => {
    if (p.name === 'A' && why.startsWith('controller recovering') && !clock.lostAt) {
      clock.lostAt = performance.now();
    }
  };
  return { clock, onPathChange };
}

/**
 * Writers on disjoint blocks, each waiting for its write before the next, so "the last
 * acknowledged content of a block" is well defined. Any failed write is recorded.
 */
function workload(mp: MultipathNamespace, workers = 4, blocksEach = 16) {
  const acked = new Map<number, Buffer>();
  const errors: Error[] = [];
  let running = true;
  let acks = 0;
  const loops = Array.from({ length: workers }, async (_, w) => {
    // Each pass writes every block of the worker once, in a new random order: random
    // overwrites, yet after blocksEach writes every block has been written.
    let pass: number[] = [];
    while (running) {
      if (pass.length === 0) pass = shuffled(blocksEach);
      const lba = w * blocksEach + pass.pop()!;
      const data = randomBytes(BS);
      try {
        await mp.write(lba, data);
        acked.set(lba, data);
        acks++;
      } catch (e) {
        errors.push(e as Error);
        return;
      }
    }
  });
  return {
    acked,
    errors,
    get acks() {
      return acks;
    },
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

/** 0..n-1 in a random order (Fisher-Yates). */
function shuffled(n: number): number[] {
  const out = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function verify(mp: MultipathNamespace, acked: Map<number, Buffer>): Promise<void> {
  for (const [lba, data] of acked) {
    const back = await mp.read(lba, 1);
    expect(back.equals(data), `block ${lba}`).toBe(true);
  }
}

describe('multipath over two BranchSAN targets sharing one backend', () => {
  it('sends all I/O to the optimized path and verifies data', async () => {
    const { a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    expect(mp.paths().map((p) => [p.name, p.ana, p.controller, p.usable])).toEqual([
      ['A', 'optimized', 'live', true],
      ['B', 'non-optimized', 'live', true],
    ]);
    expect(byName(mp, 'A').cntlid).toBeLessThan(0x8000);
    expect(byName(mp, 'B').cntlid).toBeGreaterThanOrEqual(0x8000);
    expect(mp.ids.nguid?.toString('hex')).toBe(NGUID);

    const blocks = Array.from({ length: 64 }, () => randomBytes(2 * BS));
    await Promise.all(blocks.map((d, i) => mp.write(i * 2, d)));
    const back = await Promise.all(blocks.map((_, i) => mp.read(i * 2, 2)));
    back.forEach((d, i) => expect(d.equals(blocks[i]!)).toBe(true));
    await mp.flush();

    expect(byName(mp, 'A').io).toMatchObject({ submitted: 129, completed: 129 });
    expect(byName(mp, 'B').io.submitted).toBe(0);
    expect(a.target.namespaceStats(NQN, 1)).toMatchObject({ writeOps: 64, readOps: 64 });
    expect(b.target.namespaceStats(NQN, 1)).toMatchObject({ writeOps: 0, readOps: 0 });
  });

  it('keeps every acknowledged write when the optimized node stops mid-workload', async () => {
    const { a, b } = await startPair();
    const changes: string[] = [];
    const mp = await open({
      nsid: 1,
      paths: [
        pathTo(a, a.port, { kato: 1000, reconnect: { delayMs: 200, lossTimeoutMs: 1000 } }),
        pathTo(b),
      ],
      onPathChange: (p, why) => changes.push(`${p.name} ${why}`),
      onRetry: (ev) => changes.push(`${ev.kind} ${ev.what}: ${ev.reason}`),
    });
    const w = workload(mp);
    await until('writes on A', () => w.acks > 200);
    await a.stop();
    const atStop = w.acks;
    await until('A given up', () => byName(mp, 'A').controller === 'dead');
    await until('writes on B', () => w.acks > atStop + 300 && byName(mp, 'B').io.completed > 300);
    await w.stop();

    expect(w.errors).toEqual([]);
    expect(byName(mp, 'A').inDoubt).toBe(0);
    expect(byName(mp, 'B').usable).toBe(true);
    expect(changes.some((c) => c.startsWith('A controller recovering'))).toBe(true);
    // Writes in flight on A when it stopped were held until A's fence delay (KATO 1 s
    // rounded up, plus 1 s) had passed since the loss, then resent.
    const holds = changes.filter((c) => c.startsWith('hold'));
    const releases = changes.filter((c) => c.startsWith('release'));
    const lost = changes.findIndex((c) => c.startsWith('A controller recovering'));
    expect(holds.length).toBeGreaterThan(0);
    expect(releases.length).toBe(holds.length);
    expect(holds.every((h) => changes.indexOf(h) > lost)).toBe(true);
    expect(releases.every((r) => / association lost 2000 ms ago /.test(r))).toBe(true);
    expect(changes.indexOf(releases[0]!)).toBeGreaterThan(holds.length + lost);
    await verify(mp, w.acked);
    expect(w.acked.size).toBe(64);
    expect(b.writes.length).toBeGreaterThan(300);
  });

  it('follows an ANA flip (A inaccessible, B optimized) without errors to the caller', async () => {
    const { a, b } = await startPair();
    const retries: RetryEvent[] = [];
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a), pathTo(b)],
      onRetry: (ev) => retries.push(ev),
    });
    const w = workload(mp);
    await until('writes on A', () => w.acks > 200);
    a.target.setAnaState(1, 'inaccessible');
    b.target.setAnaState(1, 'optimized');
    await until('the flip to be seen', () => {
      const [pa, pb] = [byName(mp, 'A'), byName(mp, 'B')];
      return pa.ana === 'inaccessible' && pb.ana === 'optimized';
    });
    const bBefore = b.writes.length;
    const aBefore = a.writes.length;
    await until('writes on B', () => b.writes.length > bBefore + 300);
    await w.stop();

    expect(w.errors).toEqual([]);
    expect(a.writes.length).toBe(aBefore); // nothing reaches A's backend any more
    expect(byName(mp, 'A').usable).toBe(false);
    // Only path statuses may have been retried here, never a write in doubt.
    expect(retries.every((r) => r.kind === 'retry' && /ANA_/.test(r.reason))).toBe(true);
    await verify(mp, w.acked);
  });

  // The fence runs from the loss, not from giving the path up: A keeps reconnecting
  // (its loss timeout is a minute, Linux's ctrl_loss_tmo is ten) while the write moves.
  it('holds a timed-out write until its fence delay has passed since the loss, then resends it on B', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const events: string[] = [];
    let bWritesAtRelease = -1;
    let aAtRelease = '';
    const { clock, onPathChange } = lossOfA();
    let releasedAt = 0;
    const LBA = 77;
    const bWritesOfLba = () => b.writes.filter((o) => o === LBA * BS).length;
    const mp = await open({
      nsid: 1,
      paths: [stallablePath(a, proxy, 60_000), pathTo(b)],
      onPathChange,
      onRetry: (ev) => {
        events.push(`${ev.kind} ${ev.what} (${ev.reason.split(':')[0]})`);
        if (ev.kind !== 'release') return;
        releasedAt = performance.now();
        bWritesAtRelease = bWritesOfLba();
        aAtRelease = byName(mp, 'A').controller;
      },
    });
    await mp.write(LBA, Buffer.alloc(BS, 1)); // through A, proxy forwarding

    expect(a.writes).toContain(LBA * BS);

    proxy.pause(); // A unreachable: the write stalls, and A's reconnects are refused
    const data = Buffer.alloc(BS, 2);
    const pending = mp.write(LBA, data);
    await until('the write to be held', () => events.some((e) => e.startsWith('hold')));
    // In doubt: A may still run it, so B must not have seen it.
    expect(byName(mp, 'A').inDoubt).toBe(1);
    expect(bWritesOfLba()).toBe(0);
    await pending;
    // Not before the fence: A's 1 s KATO rounded up, plus 1 s, after the loss.
    expect(clock.lostAt).toBeGreaterThan(0);
    expect(releasedAt - clock.lostAt).toBeGreaterThanOrEqual(1990);
    expect(bWritesAtRelease).toBe(0);
    expect(['recovering', 'connecting']).toContain(aAtRelease);
    expect(bWritesOfLba()).toBe(1);
    expect(events).toEqual([
      expect.stringMatching(/^hold write slba 77 nlb 1/),
      expect.stringMatching(
        /^release write slba 77 nlb 1 \(association lost 2000 ms ago \((recovering|connecting)\)\)$/,
      ),
    ]);
    expect((await mp.read(LBA, 1)).equals(data)).toBe(true);
  });

  it("lengthens a path's fence when Set Features raises its KATO, and refuses to turn keep-alive off", async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const events: string[] = [];
    const { clock, onPathChange } = lossOfA();
    let releasedAt = 0;
    const mp = await open({
      nsid: 1,
      paths: [stallablePath(a, proxy, 60_000), pathTo(b)],
      onPathChange,
      onRetry: (ev) => {
        events.push(`${ev.kind} ${ev.reason}`);
        if (ev.kind === 'release') releasedAt = performance.now();
      },
    });
    const ctrlA = mp.controller(mp.paths().findIndex((p) => p.name === 'A'));
    // A FID with bits above the 8 the command carries is still KATO (0x10F sends 0x0F).
    await ctrlA.setFeatures(0x100 | FID.KATO, { cdw11: 2000 });
    expect(ctrlA.keepAliveCeilingMs).toBe(2000);
    // Connected with KATO 1 s (fence 2 s); the target now keeps a lost controller ~3.75 s.
    await ctrlA.setFeatures(FID.KATO, { cdw11: 3000 });
    expect(ctrlA.keepAliveCeilingMs).toBe(3000);
    for (const fid of [FID.KATO, 0x100 | FID.KATO]) {
      await expect(ctrlA.setFeatures(fid, { cdw11: 0 })).rejects.toThrow(
        /KATO 0 \(no keep-alive\) refused: this controller is a multipath path/,
      );
    }
    expect((await ctrlA.getFeatures(FID.KATO)).dw0).toBe(3000);
    await mp.write(5, Buffer.alloc(BS, 1)); // through A
    proxy.pause();
    const data = Buffer.alloc(BS, 2);
    const pending = mp.write(5, data);
    await pending;
    // Before: released 2 s after the loss, while A's controller could still run the write.
    expect(releasedAt - clock.lostAt).toBeGreaterThanOrEqual(3990);
    expect(events.at(-1)).toMatch(/^release association lost 4000 ms ago/);
    expect((await mp.read(5, 1)).equals(data)).toBe(true);
  });

  // Before: the later association's shorter fence fenced every association up to it, so
  // the write went out 2 s after its loss, though its own fence was 4 s.
  it("holds a write in doubt for its own association's fence, even when a later, shorter one ends first", async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const events: RetryEvent[] = [];
    let heldAt = 0;
    let releasedAt = 0;
    const reconnect = { delayMs: 100, lossTimeoutMs: 60_000 };
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a, proxy.port, { kato: 1000, ioTimeoutMs: 400, reconnect }), pathTo(b)],
      onRetry: (ev) => {
        events.push(ev);
        if (ev.kind === 'hold') heldAt = performance.now();
        if (ev.kind === 'release') releasedAt = performance.now();
      },
    });
    const ctrlA = mp.controller(0);
    proxy.partition(); // new connections pass, the ones open now are cut
    // Sent, never answered: this association's KATO may be 3 s now (a 4 s fence), while
    // the next ones connect with 1 s (2 s fences).
    const raised = ctrlA.setFeatures(FID.KATO, { cdw11: 3000 }).catch((e: unknown) => e);
    expect(ctrlA.keepAliveCeilingMs).toBe(3000);
    const data = randomBytes(BS);
    const pending = mp.write(17, data);
    await until('the write held', () => heldAt > 0);
    expect(await raised).toBeInstanceOf(HostError);
    await until('A back', () => byName(mp, 'A').usable);
    await ctrlA.reconnect(); // the second association is lost too, its 2 s fence starts
    await pending;
    expect(events.map((e) => e.kind)).toEqual(['hold', 'release']);
    expect(releasedAt - heldAt).toBeGreaterThanOrEqual(3990);
    // Its own association's delay, not the later one's 2000 ms (which the text gave).
    expect(events[1]!.reason).toMatch(/^association lost 4000 ms ago /);
    expect((await mp.read(17, 1)).equals(data)).toBe(true);
  });

  it('holds a timed-out write through its path reconnecting, until the fence delay since the loss has passed', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const events: string[] = [];
    const LBA = 91;
    const bWritesOfLba = () => b.writes.filter((o) => o === LBA * BS).length;
    const mp = await open({
      nsid: 1,
      // Both paths with a 1 s KATO (2 s fence): 4 s lengthens the wait well past A's
      // reconnect, even on a busy machine.
      paths: [stallablePath(a, proxy, 60_000), pathTo(b, b.port, { kato: 1000 })],
      fenceDelayMs: 4000,
      onRetry: (ev) => events.push(`${ev.kind} ${ev.reason}`),
    });
    const cntlidBefore = byName(mp, 'A').cntlid;
    proxy.pause();
    const data = randomBytes(BS);
    const pending = mp.write(LBA, data);
    await until('the write to be held', () => events.some((e) => e.startsWith('hold')));
    await until('a failed reconnect attempt', () => byName(mp, 'A').controller === 'recovering');
    proxy.resume();
    // A new association says nothing about the old controller: the write stays held.
    await until('A back', () => byName(mp, 'A').usable);
    expect(byName(mp, 'A').cntlid).not.toBe(cntlidBefore);
    expect(byName(mp, 'A').inDoubt).toBe(1);
    expect(a.writes).not.toContain(LBA * BS);
    expect(bWritesOfLba()).toBe(0);

    await pending;
    expect(events.filter((e) => !e.startsWith('hold'))).toEqual([
      'release association lost 4000 ms ago (live)',
    ]);
    expect((await mp.read(LBA, 1)).equals(data)).toBe(true);
    // Once A is optimized and verified again, I/O goes back to it.
    const aBefore = a.writes.length;
    await mp.write(LBA + 1, randomBytes(BS));
    expect(a.writes.length).toBe(aBefore + 1);
  });

  // The corruption a reconnect used as a fence allowed: the old connection delivers the
  // write after the host resent it and wrote the block again through the new one.
  it('a write in doubt that reaches the old controller late cannot replace a newer write', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const events: string[] = [];
    const LBA = 123;
    const aWritesOfLba = () => a.writes.filter((o) => o === LBA * BS).length;
    let aWritesAtRelease = -1;
    const mp = await open({
      nsid: 1,
      paths: [
        pathTo(a, proxy.port, {
          kato: 4000,
          ioTimeoutMs: 400,
          connectTimeoutMs: 1000,
          reconnect: { delayMs: 200, lossTimeoutMs: 60_000 },
        }),
        pathTo(b),
      ],
      onRetry: (ev) => {
        events.push(`${ev.kind} ${ev.reason}`);
        if (ev.kind === 'release') aWritesAtRelease = aWritesOfLba();
      },
    });
    proxy.partition(); // A's connections now: the host's bytes wait in the network
    const older = mp.write(LBA, Buffer.alloc(BS, 0xaa));
    await until('the write to be held', () => events.some((e) => e.startsWith('hold')));
    await until('A reconnected', () => byName(mp, 'A').usable);
    // The write's bytes sit in the partition: nothing reached A's backend.
    expect(proxy.heldBytes()).toBeGreaterThanOrEqual(BS);
    expect(aWritesOfLba()).toBe(0);
    // The old connection delivers it now, to the old controller, which lives on at the
    // target beside the new one (it never saw its sockets close)...
    await new Promise((r) => setTimeout(r, 300));
    proxy.heal();
    await until('the late write to land', () => aWritesOfLba() === 1);
    // ...and only then may the host resend it (4 s KATO: 5 s after the loss).
    await older;
    expect(aWritesAtRelease).toBe(1);
    expect(events.filter((e) => !e.startsWith('hold'))).toEqual([
      'release association lost 5000 ms ago (live)',
    ]);
    const newer = Buffer.alloc(BS, 0xbb);
    await mp.write(LBA, newer);
    expect((await mp.read(LBA, 1)).equals(newer)).toBe(true);
  });

  it('fails I/O with a clear error after noPathTimeoutMs when no path is usable', async () => {
    const { a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)], noPathTimeoutMs: 500 });
    a.target.setAnaState(1, 'inaccessible');
    b.target.setAnaState(1, 'inaccessible');
    await until('both inaccessible', () => mp.paths().every((p) => p.ana === 'inaccessible'));
    const err = await mp.write(5, randomBytes(BS)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).kind).toBe('not-connected');
    expect((err as HostError).maybeExecuted).toBe(false);
    expect((err as Error).message).toMatch(
      /no usable path for 500 ms \(A: live, inaccessible; B: live, inaccessible\)/,
    );
    // A path coming back wakes waiting I/O.
    const later = mp.write(6, randomBytes(BS));
    b.target.setAnaState(1, 'optimized');
    await later;
    expect(byName(mp, 'B').io.completed).toBe(1);
  });

  it('uses B while A is in ANA change, and resets A after 2×ANATT in change', async () => {
    const { a, b } = await startPair(NGUID, 1);
    const changes: string[] = [];
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a, a.port, { reconnect: { delayMs: 200, lossTimeoutMs: 10_000 } }), pathTo(b)],
      onPathChange: (p, why) => changes.push(`${p.name} ${why}`),
    });
    const cntlidBefore = byName(mp, 'A').cntlid;
    a.target.setAnaState(1, 'change');
    await until('A in change', () => byName(mp, 'A').ana === 'change');
    const data = randomBytes(BS);
    await mp.write(3, data);
    expect(b.writes).toContain(3 * BS);
    await until('A reset', () => changes.some((c) => /^A ANA change lasted over 2 s/.test(c)));
    await until('A live again', () => byName(mp, 'A').controller === 'live');
    expect(byName(mp, 'A').cntlid).not.toBe(cntlidBefore);
    a.target.setAnaState(1, 'optimized');
    await until('A optimized', () => byName(mp, 'A').usable);
    const aBefore = a.writes.length;
    await mp.write(4, data);
    expect(a.writes.length).toBe(aBefore + 1);
  });

  it('refuses paths whose namespace NGUID differs', async () => {
    const { a, b } = await startPair('ffeeddccbbaa99887766554433221100');
    const err = await MultipathNamespace.connect({ nsid: 1, paths: [pathTo(a), pathTo(b)] }).catch(
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(
      /refusing path (A|B): NGUID [0-9a-f]{32} vs [0-9a-f]{32} \(compared with path (A|B)\)/,
    );
    // Nothing stays connected.
    await until('controllers gone', () => a.target.listControllers().length === 0);
    expect(b.target.listControllers()).toEqual([]);
  });

  it('refuses a fenceDelayMs shorter than a path needs to see its controller dropped', async () => {
    const { a, b } = await startPair();
    const paths = [pathTo(a, a.port, { kato: 1000 }), pathTo(b, b.port, { kato: 3000 })];
    // B's target may keep a lost controller for 3 s rounded up plus its slack: 4 s.
    await expect(
      MultipathNamespace.connect({ nsid: 1, paths, fenceDelayMs: 3999 }),
    ).rejects.toThrow(
      /^multipath: fenceDelayMs 3999 is shorter than path B needs: .* at least 4000 ms/,
    );
    expect(a.target.listControllers()).toEqual([]);
    // Lengthening the wait is fine.
    const mp = await open({ nsid: 1, paths, fenceDelayMs: 4000 });
    expect(mp.paths().every((p) => p.usable)).toBe(true);
  });

  it('connects every path as one host: one host NQN and host ID, generated when no path gives one', async () => {
    const { a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    const [ca, cb] = [mp.controller(0), mp.controller(1)];
    expect(cb.hostid.equals(ca.hostid)).toBe(true);
    expect(cb.hostnqn).toBe(ca.hostnqn);
    // Both nodes of the subsystem see the same host.
    expect(a.target.listControllers().map((c) => c.hostnqn)).toEqual([ca.hostnqn]);
    expect(b.target.listControllers().map((c) => c.hostnqn)).toEqual([ca.hostnqn]);
    // Another multipath namespace is another host unless told otherwise.
    const other = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    expect(other.controller(0).hostid.equals(ca.hostid)).toBe(false);

    // What one path gives is used on every path; the same ID in another spelling agrees.
    const hostnqn = 'nqn.2014-08.io.branchsan:host-1';
    const uuid = '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0';
    const given = await open({
      nsid: 1,
      paths: [
        pathTo(a, a.port, { hostnqn, hostid: uuid }),
        pathTo(b, b.port, { hostid: Buffer.from(uuid.replace(/-/g, ''), 'hex') }),
      ],
    });
    for (const i of [0, 1]) {
      expect(given.controller(i).hostnqn).toBe(hostnqn);
      expect(given.controller(i).hostid.toString('hex')).toBe(uuid.replace(/-/g, ''));
    }
  });

  it('refuses paths that give different host NQNs or host IDs, before connecting', async () => {
    const { a, b } = await startPair();
    const connect = (pa: Partial<PathOptions>, pb: Partial<PathOptions>) =>
      MultipathNamespace.connect({
        nsid: 1,
        paths: [pathTo(a, a.port, pa), pathTo(b, b.port, pb)],
      });
    await expect(
      connect(
        { hostnqn: 'nqn.2014-08.io.branchsan:h1' },
        { hostnqn: 'nqn.2014-08.io.branchsan:h2' },
      ),
    ).rejects.toThrow(/^multipath: paths A and B give different hostnqns .* see one host as two/);
    await expect(
      connect({ hostid: '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0' }, { hostid: Buffer.alloc(16, 1) }),
    ).rejects.toThrow(/^multipath: paths A and B give different hostids/);
    expect(a.target.listControllers()).toEqual([]);
    expect(b.target.listControllers()).toEqual([]);
  });

  it('refuses paths to different subsystems before connecting', async () => {
    const { a, b } = await startPair();
    await expect(
      MultipathNamespace.connect({
        nsid: 1,
        paths: [pathTo(a), { ...pathTo(b), subnqn: 'nqn.2024-01.io.branchsan:other' }],
      }),
    ).rejects.toThrow(/same subsystem/);
  });
});
