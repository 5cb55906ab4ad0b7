/**
 * Multipath failure shapes, on the rig of multipath-rig.ts (two Targets over one
 * backend, real sockets, a pausable proxy in front of A): resends after a path fails
 * while its controller is still reporting the loss, a path without keep-alive (refused:
 * nothing could prove it dead), a namespace replaced or re-added on one node at runtime, and
 * an ANA change count that goes backwards.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Target } from '../../../engine/src/core/index.js';
import { CNS, FID } from '../../../engine/src/protocol/opcodes.js';
import {
  HostError,
  MultipathNamespace,
  NO_TIMEOUT,
  NvmeController,
  NvmeRequest,
  NvmeStatusError,
  anaStateOf,
  fillFlush,
  parseAnaLog,
} from '../../../engine/src/host/index.js';
import { BackendError, type BlockBackend } from '../../../engine/src/storage/backend.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import { serveOnLoopback } from '../../helpers/target.js';
import {
  BS,
  NGUID,
  NQN,
  PausableProxy,
  UUID,
  byName,
  cleanup,
  open,
  pathTo,
  runCleanup,
  sendsIdentify,
  type Node,
  spy,
  startNode,
  startPair,
  until,
} from './multipath-rig.js';
import { overBackend } from '../../helpers/backend.js';

const OTHER_NGUID = 'ffeeddccbbaa99887766554433221100';

/**
 * `b`, whose writes fail as 'unavailable' while `away()` (a storage thread restarting):
 * the target answers them ANA Transition (3/03) while its ANA log still says optimized.
 */
/**
 * `n` admin commands on `ctrl` whose answers the caller's proxy holds back: with
 * maxWaiting 1, what the host sends next on that admin queue is refused 'busy'.
 */
function fillAdminQueue(ctrl: NvmeController, n = 40): Promise<unknown>[] {
  return Array.from({ length: n }, () => ctrl.getFeatures(FID.KATO).catch((e: unknown) => e));
}

/** Namespace 1 on `node` becomes another volume (OTHER_NGUID); returns its writes' offsets. */
function replaceWithOther(node: { target: Target }): number[] {
  const otherWrites: number[] = [];
  const other = spy(new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS }), otherWrites, []);
  node.target.removeNamespace(NQN, 1);
  node.target.addNamespace(NQN, { nsid: 1, backend: other, nguid: OTHER_NGUID });
  return otherWrites;
}

/** Serve namespace 1 on `n` again over `backend` (same identity): a namespace changed event. */
function reAdd(n: Node, backend: BlockBackend): void {
  n.target.removeNamespace(NQN, 1);
  addSame(n, backend);
}

/** Namespace 1 on `n` over `backend`, with the volume's identity. */
function addSame(n: Node, backend: BlockBackend): void {
  n.target.addNamespace(NQN, {
    nsid: 1,
    backend: spy(backend, n.writes, n.reads),
    nguid: NGUID,
    uuid: UUID,
  });
}

function unavailableWhile(b: BlockBackend, away: () => boolean, afterMs = 0): BlockBackend {
  const inner = spy(b, []);
  return {
    ...inner,
    write: (o, d, f, cb) => {
      if (!away()) return inner.write(o, d, f, cb);
      const refuse = () => cb(new BackendError('unavailable', 'storage thread restarting'));
      if (afterMs > 0) setTimeout(refuse, afterMs);
      else setImmediate(refuse);
    },
  };
}

/**
 * Node A over `backend` made unavailable while `away()` (its writes refused after
 * `afterMs`), node B inaccessible: A is all.
 */
async function startAwayPair(away: () => boolean, anattA = 10, afterMs = 0) {
  const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS });
  const flaky = unavailableWhile(backend, away, afterMs);
  const a = await startNode('A', flaky, 'optimized', [1, 0x7fff], NGUID, anattA);
  const b = await startNode('B', backend, 'inaccessible', [0x8000, 0xffef]);
  return { a, b };
}

afterEach(runCleanup);

describe('multipath after a path failure', () => {
  // With one I/O queue the failed queue is the path's only one: a resend that still saw
  // A's controller live would go back to A and be refused there, again and again.
  it.each([
    ['connection drop', 1],
    ['I/O timeout', 1],
    ['connection drop', 2],
    ['I/O timeout', 2],
  ] as const)(
    'a read in flight on the only optimized path is served by the non-optimized one after a %s (%i I/O queues)',
    async (shape, ioQueues) => {
      const { a, b } = await startPair();
      const proxy = await PausableProxy.start(a.port);
      const data = randomBytes(BS);
      const reconnect = { delayMs: 200, lossTimeoutMs: 60_000 };
      const mp = await open({
        nsid: 1,
        paths: [
          pathTo(a, proxy.port, { reconnect, ioTimeoutMs: 400, ioQueues }),
          pathTo(b, b.port, { ioQueues }),
        ],
      });
      await mp.write(12, data);
      expect(a.writes).toContain(12 * BS);

      proxy.pause();
      const pending = mp.read(12, 1);
      // The read sits in the stalled proxy; then A's connection drops, or the read times out.
      await delay(50);
      if (shape === 'connection drop') proxy.resume();
      const back = await pending;
      expect(back.equals(data)).toBe(true);
      expect(b.reads).toContain(12 * BS);
    },
  );

  it('writes still waiting for a slot on the failed path (never sent) go to the other path', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const reconnect = { delayMs: 200, lossTimeoutMs: 60_000 };
    const mp = await open({
      nsid: 1,
      paths: [
        pathTo(a, proxy.port, { reconnect, ioQueues: 1, queueSize: 8 }),
        pathTo(b, b.port, { ioQueues: 1 }),
      ],
    });
    proxy.pause();
    // More writes than A's queue holds: some are sent into the stalled proxy, the rest
    // wait for a slot. Then A's connection drops.
    const blocks = Array.from({ length: 20 }, (_, i) => ({ lba: 100 + i, data: randomBytes(BS) }));
    const results = blocks.map(({ lba, data }) =>
      mp.write(lba, data).then(
        () => 'ok',
        (e: Error) => e.message,
      ),
    );
    await delay(50);
    proxy.resume();
    expect(await Promise.all(results)).toEqual(blocks.map(() => 'ok'));
    for (const { lba, data } of blocks) expect((await mp.read(lba, 1)).equals(data)).toBe(true);
    // The never-sent ones went to B at once, not after A's fence.
    expect(b.writes.length).toBeGreaterThan(0);
  });

  // Before: B refused the released write as too large for it, unsent, and the caller got
  // that refusal as is, maybeExecuted false, though the write may have run on A. Now B,
  // whose limit is smaller, is not offered it at all, and the failure says the same.
  it('a write released from doubt that the other path refuses as too large may still have run', async () => {
    const { a, b } = await startPair();
    const proxyA = await PausableProxy.start(a.port);
    const proxyB = await PausableProxy.start(b.port);
    proxyB.pause(); // B is not up yet when the write is sized: A's limit applies
    const events: string[] = [];
    const reconnect = { delayMs: 100, lossTimeoutMs: 60_000 };
    const mp = await open({
      nsid: 1,
      paths: [
        pathTo(a, proxyA.port, { kato: 1000, ioTimeoutMs: 400, reconnect }),
        pathTo(b, proxyB.port, { maxTransferBytes: 64 * 1024, reconnect }),
      ],
      onRetry: (ev) => events.push(ev.kind),
    });
    proxyA.pause();
    const write = mp.write(0, randomBytes(128 * 1024)).catch((e: unknown) => e);
    await until('the write held', () => events.includes('hold'));
    proxyB.resume();
    const err = (await write) as HostError;
    expect(events).toEqual(['hold', 'release']);
    expect(err).toBeInstanceOf(HostError);
    expect(err.kind).toBe('too-large');
    expect(err.maybeExecuted).toBe(true);
    expect(err.message).toMatch(
      /^namespace 1 write slba 0 nlb 32: 131072 bytes is more than any usable path takes .*\(B: 65536\).*; an earlier attempt may have been executed$/,
    );
    expect(byName(mp, 'B').io.submitted).toBe(0); // never offered to a path too small for it
  });

  // Without keep-alive the target never drops a controller it lost touch with, so no
  // wait, and no reconnect, proves a write in doubt there can no longer land: before,
  // a reconnect released it, and a partition that delivered it late replaced a newer
  // acknowledged write with it.
  it('refuses a path without keep-alive (KATO 0) before connecting anything', async () => {
    const { a, b } = await startPair();
    const err = await MultipathNamespace.connect({
      nsid: 1,
      paths: [pathTo(a), pathTo(b, b.port, { kato: 0 })],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(
      /^multipath: path B has no keep-alive \(kato 0\): .* Give the path a keep-alive/,
    );
    expect(a.target.listControllers()).toEqual([]);
    expect(b.target.listControllers()).toEqual([]);
  });

  // Before: the Connect carried 2^32 as KATO 0, so the target had no keep-alive at all
  // while the host took the path as fenceable.
  it('refuses a KATO the Connect cannot carry, before connecting anything', async () => {
    const { a, b } = await startPair();
    for (const kato of [2 ** 32, 0.5]) {
      const err = await MultipathNamespace.connect({
        nsid: 1,
        paths: [pathTo(a), pathTo(b, b.port, { kato })],
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RangeError);
      expect((err as Error).message).toMatch(
        new RegExp(`kato ${kato} is not a whole number of milliseconds from 0 to 4294967295`),
      );
    }
    expect(a.target.listControllers()).toEqual([]);
    expect(b.target.listControllers()).toEqual([]);
    const infinite = await MultipathNamespace.connect({
      nsid: 1,
      paths: [pathTo(a), pathTo(b)],
      fenceDelayMs: Infinity,
    }).catch((e: unknown) => e);
    expect((infinite as Error).message).toMatch(/fenceDelayMs Infinity is not a finite number/);
  });

  // Before: a fence over 2^31 - 1 ms (setTimeout's limit) fired after 1 ms, so the write
  // in doubt went to B at once, though A's target keeps its controller for that KATO.
  it('holds a write in doubt for a fence longer than setTimeout takes in one go', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const events: string[] = [];
    const reconnect = { delayMs: 200, lossTimeoutMs: 60_000 };
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a, proxy.port, { kato: 2 ** 31, ioTimeoutMs: 400, reconnect }), pathTo(b)],
      onRetry: (ev) => events.push(ev.kind),
    });
    const before = b.writes.length;
    proxy.partition(); // the write reaches neither A's target nor its end
    const write = mp.write(5, randomBytes(BS)).catch((e: unknown) => e);
    await until('the write held', () => events.includes('hold'));
    // A comes back (new connections pass): well after a 1 ms timer would have fired.
    await until('A live again', () => byName(mp, 'A').usable);
    expect(events).toEqual(['hold']);
    expect(byName(mp, 'A').inDoubt).toBe(1);
    expect(b.writes.length).toBe(before);
    await mp.close();
    const err = (await write) as HostError;
    expect(err).toBeInstanceOf(HostError);
    expect(err.maybeExecuted).toBe(true);
    // It says what to do: the write may still land on A.
    expect(err.kind).toBe('closed');
    expect(err.message).toMatch(
      /multipath namespace closed while it was in doubt on A: it may have been executed.*once connected again \(the multipath namespace was closed\) read those blocks back/,
    );
  });
});

describe('multipath and namespace identity', () => {
  it('stops using a path whose namespace was replaced by another disk (NS attribute changed event)', async () => {
    const { a, b } = await startPair();
    const events: number[] = [];
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a), pathTo(b, b.port, { onAsyncEvent: (ev) => events.push(ev.lid) })],
      noPathTimeoutMs: 1000,
    });
    const data = randomBytes(BS);
    await mp.write(20, data);

    // On node B, namespace 1 becomes another volume (another NGUID and backend).
    const otherWrites = replaceWithOther(b);
    await until('the namespace change event on B', () => events.includes(0x04));

    // A goes away: I/O must not fall back to B, which now shows another disk.
    a.target.setAnaState(1, 'inaccessible');
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible');
    const err = await mp.write(20, randomBytes(BS)).catch((e: unknown) => e);
    expect(otherWrites).toEqual([]);
    expect(err).toBeInstanceOf(HostError);
    expect(byName(mp, 'B').usable).toBe(false);
    expect(byName(mp, 'B').problem).toMatch(/NGUID/);
  });

  it('opens with a path that does not have the namespace (yet), and takes it in once it does', async () => {
    const { backend, a, b } = await startPair();
    b.target.removeNamespace(NQN, 1); // node B does not serve the volume yet
    // Before the fix: connect() rejected the whole namespace, though A serves it.
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    expect(byName(mp, 'B').problem).toMatch(/not active|namespace 1/);
    expect(byName(mp, 'B').usable).toBe(false);
    const data = randomBytes(BS);
    await mp.write(4, data);
    expect(a.writes).toContain(4 * BS);
    addSame(b, backend);
    await until('B verified', () => byName(mp, 'B').problem === null && byName(mp, 'B').usable);
    a.target.setAnaState(1, 'inaccessible');
    b.target.setAnaState(1, 'optimized');
    await until('B optimized', () => byName(mp, 'B').ana === 'optimized');
    expect((await mp.read(4, 1)).equals(data)).toBe(true);
    expect(b.reads).toContain(4 * BS);
  });

  // Before: a re-check that met a full admin queue ('busy') left the path unverified
  // without a word, and nothing checked it again: it stayed out until a reconnect.
  it('checks a path again when its identity check gets no answer (admin queue full)', async () => {
    const { backend, a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const changes: string[] = [];
    const mp = await open({
      nsid: 1,
      // One admin command may wait for a slot: more at once are refused 'busy'.
      paths: [pathTo(a, proxy.port, { maxWaiting: 1 }), pathTo(b)],
      onPathChange: (p, why) => changes.push(`${p.name} ${why}`),
    });
    await until('A usable', () => byName(mp, 'A').usable);
    // A's admin queue fills with commands whose answers do not come yet.
    proxy.hold();
    const ctrlA = mp.controller(0);
    const held = fillAdminQueue(ctrlA);
    // The namespace changed event comes in: A's identity check meets the full queue.
    reAdd(a, backend);
    await until(
      'A reported unchecked',
      () => /could not be identified: .*waiting/.test(byName(mp, 'A').problem ?? ''),
      5000,
    );
    expect(byName(mp, 'A').usable).toBe(false);
    expect(mp.controller(0).state).toBe('live');
    expect(changes).toContainEqual(
      expect.stringMatching(
        /^A unchecked: .* could not be identified: .*; checking again in 50 ms$/,
      ),
    );
    proxy.release();
    await Promise.all(held);
    await until('A usable again', () => byName(mp, 'A').usable, 5000);
    expect(byName(mp, 'A').problem).toBeNull();
    const data = randomBytes(BS);
    await mp.write(3, data);
    expect(a.writes).toContain(3 * BS);
  });

  // Before: the namespace changed log, unread for want of an admin slot, was never read
  // again, so the target kept that event masked: A's namespace replaced later by another
  // disk went unnoticed, and A stayed in use.
  it('still hears of namespace changes after a change log read met a full admin queue', async () => {
    const { backend, a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a, proxy.port, { maxWaiting: 1 }), pathTo(b)],
      noPathTimeoutMs: 1000,
    });
    await until('A usable', () => byName(mp, 'A').usable);
    proxy.hold();
    const ctrlA = mp.controller(0);
    const held = fillAdminQueue(ctrlA);
    // A changed event whose log read finds no slot.
    reAdd(a, backend);
    await until('A out of use', () => !byName(mp, 'A').usable, 5000);
    proxy.release();
    await Promise.all(held);
    await until('A usable again', () => byName(mp, 'A').usable, 5000);

    // Now namespace 1 on A becomes another volume.
    const otherWrites = replaceWithOther(a);
    await until('A refused', () => /NGUID/.test(byName(mp, 'A').problem ?? ''), 5000);
    b.target.setAnaState(1, 'optimized');
    await mp.write(6, randomBytes(BS));
    expect(otherWrites).toEqual([]);
    expect(b.writes).toContain(6 * BS);
  });

  // Before: the Set Features that enables events, refused 'busy' as A came up, was taken
  // for a controller without events: none came on that association, and A's namespace
  // replaced by another disk went unnoticed.
  it('enables events on a path that came up with its admin queue full', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const held: Promise<unknown>[] = [];
    let fill = false;
    const mp: MultipathNamespace = await open({
      nsid: 1,
      paths: [
        pathTo(a, proxy.port, {
          maxWaiting: 1,
          onStateChange: (next) => {
            if (next !== 'live' || !fill) return;
            // A is up again: its admin queue fills with commands answered only later.
            fill = false;
            proxy.hold();
            const ctrlA = mp.controller(0);
            held.push(...fillAdminQueue(ctrlA));
            setTimeout(() => proxy.release(), 300);
          },
        }),
        pathTo(b),
      ],
    });
    fill = true;
    await mp.controller(0).reconnect();
    await Promise.all(held);
    await until('A usable', () => byName(mp, 'A').usable, 5000);

    const otherWrites = replaceWithOther(a);
    await until('A refused', () => /NGUID/.test(byName(mp, 'A').problem ?? ''), 5000);
    await mp.write(6, randomBytes(BS));
    expect(otherWrites).toEqual([]);
  });

  // Before: "no path came up ()": the path whose Identify got no answer gave no reason.
  it('says which path did not come up and why when its Identify gets no answer', async () => {
    const { a } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const err = await MultipathNamespace.connect({
      nsid: 1,
      paths: [
        pathTo(a, proxy.port, {
          adminTimeoutMs: 500,
          // Connected: the target's answers from here on (the Identify's) are held.
          onStateChange: (next) => next === 'live' && proxy.stall(),
        }),
      ],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostError);
    expect((err as Error).message).toMatch(
      /no path came up \(A: namespace 1 could not be identified: .*identify \(opcode 0x6\), timed out after \d+ ms \(controller dead\)\)\. Fix what each path reports/,
    );
  });

  /**
   * Path A's first identity check meets a full admin queue ('busy', maxWaiting 1): just
   * before it, admin commands whose answers are held fill A's queue. They are answered
   * after `releaseMs`.
   */
  function busyFirstCheck(proxy: PausableProxy, releaseMs: number): Promise<unknown>[] {
    const held: Promise<unknown>[] = [];
    const real = NvmeController.prototype.namespace;
    let first = true;
    const spied = vi.spyOn(NvmeController.prototype, 'namespace').mockImplementation(function (
      this: NvmeController,
      nsid: number,
    ) {
      if (first) {
        first = false;
        proxy.hold();
        held.push(...fillAdminQueue(this));
        setTimeout(() => proxy.release(), releaseMs);
      }
      return real.call(this, nsid);
    });
    cleanup.push(async () => spied.mockRestore());
    return held;
  }

  // Before: connect() looked once; A, unchecked and due to be checked again 50 ms later,
  // made it fail with "no path came up (A: ... could not be identified: ...)".
  it("waits for a path's identity re-check before saying no path came up", async () => {
    const { a } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const held = busyFirstCheck(proxy, 300);
    const changes: string[] = [];
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a, proxy.port, { maxWaiting: 1 })],
      onPathChange: (p, why) => changes.push(`${p.name} ${why}`),
    });
    await Promise.all(held);
    expect(changes).toContainEqual(
      expect.stringMatching(
        /^A unchecked: .* could not be identified: .*; checking again in 50 ms$/,
      ),
    );
    expect(byName(mp, 'A').usable).toBe(true);
    await mp.write(7, randomBytes(BS));
    expect(a.writes).toContain(7 * BS);
  });

  // Before: connect() waited only for a path still live; A, reconnecting after its
  // Identify timed out, made it fail at once with "no path came up (A: ... (controller
  // recovering))" although A's next association came up 100 ms later and passed.
  it('waits for a path whose identity check was cut short by a reconnect', async () => {
    const { a } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    let first = true;
    const mp = await open({
      nsid: 1,
      paths: [
        pathTo(a, proxy.port, {
          adminTimeoutMs: 300,
          reconnect: { delayMs: 100, lossTimeoutMs: 60_000 },
          // The first association's answers from here on (its Identify's) are held.
          onStateChange: (next) => {
            if (next !== 'live' || !first) return;
            first = false;
            proxy.stall();
          },
        }),
      ],
    });
    expect(byName(mp, 'A').usable).toBe(true);
    await mp.write(5, randomBytes(BS));
    expect(a.writes).toContain(5 * BS);
  });

  it('gives up on a reconnecting path once the connect timeout has passed', async () => {
    const { a } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const started = performance.now();
    const err = await MultipathNamespace.connect({
      nsid: 1,
      paths: [
        pathTo(a, proxy.port, {
          adminTimeoutMs: 300,
          connectTimeoutMs: 1500,
          reconnect: { delayMs: 100, lossTimeoutMs: 60_000 },
          // Every association's answers are held: no check ever passes.
          onStateChange: (next) => next === 'live' && proxy.stall(),
        }),
      ],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostError);
    // Its last check failed, or was still out at the deadline.
    expect((err as Error).message).toMatch(
      /no path came up \(A: namespace 1 (could not be|not) identified/,
    );
    const took = performance.now() - started;
    expect(took).toBeGreaterThan(1400);
    expect(took).toBeLessThan(4000); // not the reconnects' 60 s loss timeout
  });

  it('gives up on a path whose re-checks do not pass within the connect timeout', async () => {
    const { a } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const held = busyFirstCheck(proxy, 1500);
    const err = await MultipathNamespace.connect({
      nsid: 1,
      paths: [pathTo(a, proxy.port, { maxWaiting: 1, connectTimeoutMs: 500 })],
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostError);
    expect((err as Error).message).toMatch(
      /no path came up \(A: namespace 1 could not be identified/,
    );
    await Promise.all(held);
  });

  // Before: the descriptor read's failure was taken for "no descriptors", so A's view had
  // no descriptor NGUID or UUID and did not match B's: a path whose answer did not come
  // refused the whole namespace (or, read first, became the view B was refused against).
  it('does not take a namespace descriptor list that got no answer for one without IDs', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    proxy.stallWhen((chunk) => sendsIdentify(chunk, CNS.NS_DESC_LIST));
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a, proxy.port, { adminTimeoutMs: 500 }), pathTo(b)],
    });
    await until('A checked', () => byName(mp, 'A').problem !== null, 5000);
    expect(byName(mp, 'A').problem).toMatch(/could not be identified: .*timed out/);
    expect(byName(mp, 'B').problem).toBeNull();
    expect(byName(mp, 'B').usable).toBe(true);
  });

  it('takes a path back once its namespace is re-added with the same identity', async () => {
    const { backend, a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    b.target.removeNamespace(NQN, 1);
    await until('B refused', () => byName(mp, 'B').problem !== null, 2000);
    expect(byName(mp, 'B').problem).toMatch(/not active/);
    addSame(b, backend);
    await until('B usable again', () => byName(mp, 'B').usable, 2000);
    expect(byName(mp, 'B').problem).toBeNull();
    a.target.setAnaState(1, 'inaccessible');
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible');
    const data = randomBytes(BS);
    await mp.write(21, data);
    expect(b.writes).toContain(21 * BS);
    expect((await mp.read(21, 1)).equals(data)).toBe(true);
  });
});

describe('multipath and a namespace whose size changes', () => {
  // Before: every path that reported the grown size was refused ("size in blocks (NSZE)
  // 4096 vs 8192"), so growing the volume took the whole multipath namespace down.
  it('follows a grown volume on every path, and keeps refusing a shrunk one', async () => {
    const { a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)], noPathTimeoutMs: 1000 });
    expect(mp.nsze).toBe(4096);
    const grown = new MemoryBackend({ sizeBytes: 32 << 20, blockSize: BS });
    reAdd(b, grown);
    const checked = (n: string) => () => mp.nsze === 8192 || byName(mp, n).problem !== null;
    await until('B checked again', checked('B'), 5000);
    expect(byName(mp, 'B').problem).toBeNull();
    expect(mp.nsze).toBe(8192);
    reAdd(a, grown);
    // A (optimized) shows the grown size too: it takes I/O again, beyond the old end.
    const aChecked = () => byName(mp, 'A').nsze === 8192 || !!byName(mp, 'A').problem;
    await until('A checked again', aChecked, 5000);
    expect(byName(mp, 'A').problem).toBeNull();
    const data = randomBytes(BS);
    await mp.write(6000, data);
    expect(a.writes).toContain(6000 * BS);
    expect((await mp.read(6000, 1)).equals(data)).toBe(true);

    // A path that shows it smaller again is refused: its end would cut off data.
    reAdd(b, new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS }));
    await until('B refused', () => /NSZE\) 8192 vs 4096/.test(byName(mp, 'B').problem ?? ''), 5000);
    expect(mp.nsze).toBe(8192);
    // So is one whose reconnect finds it shrunk.
    await mp.controller(1).reconnect();
    await until('B refused again', () => /NSZE/.test(byName(mp, 'B').problem ?? ''), 5000);
    expect(byName(mp, 'B').usable).toBe(false);
  });

  /** `b` as a node that has not grown it yet serves it: its first `bytes` only. */
  function sized(b: BlockBackend, bytes: number): BlockBackend {
    return overBackend(b, { sizeBytes: bytes, close: () => Promise.resolve() });
  }

  /** A (optimized) and B over one 32 MiB volume, both serving its first 16 MiB. */
  async function startSmallPair() {
    const volume = new MemoryBackend({ sizeBytes: 32 << 20, blockSize: BS });
    const a = await startNode('A', sized(volume, 16 << 20), 'optimized', [1, 0x7fff]);
    const b = await startNode('B', sized(volume, 16 << 20), 'non-optimized', [0x8000, 0xffef]);
    return { volume, a, b };
  }

  // Before: B's larger NSZE became the namespace's, but I/O past A's end still went to A
  // (optimized), which answered LBA Out of Range, and the caller got that error.
  it('sends I/O past the old end only to paths that show the volume grown', async () => {
    const { volume, a, b } = await startSmallPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)], noPathTimeoutMs: 1000 });
    reAdd(b, volume); // B's node grew; A's has not yet
    await until('B grown', () => mp.nsze === 8192, 5000);
    const data = randomBytes(BS);
    await mp.write(6000, data);
    expect(b.writes).toContain(6000 * BS);
    expect((await mp.read(6000, 1)).equals(data)).toBe(true);
    // A still serves the blocks it has.
    await mp.write(10, data);
    expect(a.writes).toContain(10 * BS);
    expect(byName(mp, 'A')).toMatchObject({ usable: true, problem: null, nsze: 4096 });
    // A's node grows too: A takes I/O past the old end again.
    reAdd(a, volume);
    await until('A grown', () => byName(mp, 'A').nsze === 8192, 5000);
    await mp.write(7000, data);
    expect(a.writes).toContain(7000 * BS);
  });

  // Before: at connect, a path whose node had not grown the volume yet was refused
  // ('size in blocks (NSZE) 8192 vs 4096') when the grown path's Identify answered first,
  // and connect() failed; kept, serving its blocks, when its own answer came first.
  it.each([
    ['the grown path', 'B'],
    ['the path behind', 'A'],
  ])('takes a path behind the volume at connect when %s answers first', async (_, first) => {
    const volume = new MemoryBackend({ sizeBytes: 32 << 20, blockSize: BS });
    const a = await startNode('A', sized(volume, 16 << 20), 'optimized', [1, 0x7fff]);
    const b = await startNode('B', volume, 'non-optimized', [0x8000, 0xffef]); // grown
    const later = await PausableProxy.start(first === 'A' ? b.port : a.port);
    let held = false;
    later.stallWhen((chunk) => (held = sendsIdentify(chunk, CNS.NS)));
    const verified: string[] = [];
    const via = (n: Node) => (n.name === first ? n.port : later.port);
    const connecting = MultipathNamespace.connect({
      nsid: 1,
      paths: [pathTo(a, via(a)), pathTo(b, via(b))],
      onPathChange: (p, why) => {
        if (why === 'namespace verified' || why.startsWith('ANA ')) verified.push(p.name);
      },
    });
    await until('the other path held', () => held && verified.includes(first), 5000);
    later.unstall();
    const mp = await connecting;
    cleanup.push(() => mp.close());
    await until('both usable', () => byName(mp, 'A').usable && byName(mp, 'B').usable, 5000);
    expect(mp.nsze).toBe(8192);
    expect(byName(mp, 'A')).toMatchObject({ problem: null, nsze: 4096 });
    expect(byName(mp, 'B')).toMatchObject({ problem: null, nsze: 8192 });
    // A serves the blocks it has; past them, B.
    const data = randomBytes(BS);
    await mp.write(10, data);
    await mp.write(6000, data);
    expect(a.writes).toEqual([10 * BS]);
    expect(b.writes).toEqual([6000 * BS]);
  });

  it('waits for a path that has the blocks when only a path behind is usable', async () => {
    const { volume, a, b } = await startSmallPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)], noPathTimeoutMs: 800 });
    reAdd(b, volume);
    await until('B grown', () => mp.nsze === 8192, 5000);
    b.target.setAnaState(1, 'inaccessible');
    await until('B inaccessible', () => byName(mp, 'B').ana === 'inaccessible');
    const data = randomBytes(BS);
    const err = await mp.write(6000, data).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).maybeExecuted).toBe(false);
    expect((err as Error).message).toMatch(
      /write slba 6000 nlb 1: no usable path for 800 ms \(A: live, optimized, 4096 of 8192 blocks; B: live, inaccessible\)/,
    );
    expect(a.writes).not.toContain(6000 * BS);
    // Once B is back, a write that waits goes there.
    const pending = mp.write(6001, data);
    b.target.setAnaState(1, 'optimized');
    await pending;
    expect(b.writes).toContain(6001 * BS);
  });

  // Before: the caller got A's LBA Out of Range for a block every path had shown, and A
  // went on taking I/O.
  it('checks again a path that answers LBA Out of Range within its blocks, and resends there', async () => {
    const { a, b } = await startPair();
    const changes: string[] = [];
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a), pathTo(b)],
      onPathChange: (p, why) => changes.push(`${p.name} ${why}`),
    });
    // A's namespace is cut to 2048 blocks and no event says so (an LV cut under the target).
    const ns = a.target.findSubsystem(NQN)!.namespaces.get(1)!;
    (ns as { blocks: number }).blocks = 2048;
    const data = randomBytes(BS);
    await mp.write(3000, data);
    expect(a.writes).not.toContain(3000 * BS);
    expect(b.writes).toContain(3000 * BS);
    expect(changes).toContainEqual(
      'A write slba 3000 nlb 1 got LBA Out of Range within the 4096 blocks it showed: checking its identity again',
    );
    await until('A refused', () => byName(mp, 'A').problem !== null, 5000);
    expect(byName(mp, 'A').problem).toMatch(/NSZE\) 4096 vs 2048/);
    // Past the end the namespace reports, the caller still gets the target's answer.
    const err = await mp.write(4096, data).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NvmeStatusError);
    expect((err as Error).message).toMatch(/LBA_RANGE/);
  });

  it('takes a path whose reconnect finds the volume grown', async () => {
    const { a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    const grown = new MemoryBackend({ sizeBytes: 32 << 20, blockSize: BS });
    // Removed and added while B is down: no event, the reconnect's check finds it grown.
    reAdd(b, grown);
    await mp.controller(1).reconnect();
    await until('B checked', () => byName(mp, 'B').usable && mp.nsze === 8192, 5000);
    expect(byName(mp, 'B').problem).toBeNull();
  });
});

describe('multipath and ANA statuses', () => {
  // Before: the log read right after each 3/03 said optimized, the command went straight
  // back, and after 16 such bounces (within milliseconds) it failed.
  it('waits out a path that answers ANA Transition while its log says optimized, re-reading the log with a backoff', async () => {
    let awayUntil = 0;
    const { a, b } = await startAwayPair(() => performance.now() < awayUntil);
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    awayUntil = performance.now() + 600;
    const data = randomBytes(BS);
    await mp.write(9, data);
    expect(performance.now()).toBeGreaterThanOrEqual(awayUntil);
    // A log read after 50, 100, 200, 400 ms...: a handful of refusals, not a hot loop.
    const refused = byName(mp, 'A').io.pathErrors;
    expect(refused).toBeGreaterThan(1);
    expect(refused).toBeLessThanOrEqual(10);
    expect((await mp.read(9, 1)).equals(data)).toBe(true);
  });

  // Before: a log read that failed without an NVMe status while the association stayed
  // live (the admin queue full: 'busy') was taken for a lost association and dropped: A
  // stayed in 'change', unusable and unread, until 2×ANATT reset its controller.
  it('reads the ANA log again when a read fails while the association stays up', async () => {
    let awayUntil = 0;
    const { a } = await startAwayPair(() => performance.now() < awayUntil);
    const proxy = await PausableProxy.start(a.port);
    const changes: string[] = [];
    let filled = false;
    const held: Promise<unknown>[] = [];
    const mp = await open({
      nsid: 1,
      // One admin command may wait for a slot: the 30th at once is refused 'busy'.
      paths: [pathTo(a, proxy.port, { maxWaiting: 1 })],
      onPathChange: (p, why) => changes.push(`${p.name} ${p.ana} ${why}`),
      onRetry: () => {
        if (filled) return;
        filled = true;
        // A answered 3/03: its log is read in 50 ms. Until then, fill its admin queue
        // with commands whose answers the proxy holds back.
        proxy.stall();
        const ctrlA = mp.controller(0);
        held.push(...fillAdminQueue(ctrlA, 30));
      },
    });
    awayUntil = performance.now() + 100;
    const pending = mp.write(4, randomBytes(BS)).then(
      () => 'written',
      (e: unknown) => e,
    );
    await until('the log read refused', () => changes.some((c) => /ANA log: .*waiting/.test(c)));
    expect(mp.controller(0).state).toBe('live');
    proxy.unstall();
    await Promise.all(held);
    expect(await pending).toBe('written');
    expect(byName(mp, 'A').ana).toBe('optimized');
    expect(changes.some((c) => /ANA change lasted/.test(c))).toBe(false);
  });

  // Before: each time the command was parked again its clock started over, so it could
  // wait maxAttempts x noPathTimeoutMs, or (with ANA bounces not counted) for ever.
  it('fails a command once its parks add up to noPathTimeoutMs, however often it was parked again', async () => {
    // ANATT 1 s: re-reads at most 1 s apart, each re-admitting A for one more refusal.
    const { a, b } = await startAwayPair(() => true, 1);
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)], noPathTimeoutMs: 1500 });
    const started = performance.now();
    const err = await Promise.race([
      mp.write(9, randomBytes(BS)).catch((e: unknown) => e),
      delay(6000, 'still waiting 6 s later'),
    ]);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).kind).toBe('not-connected');
    expect((err as HostError).maybeExecuted).toBe(false);
    expect((err as Error).message).toMatch(
      /no usable path for 1500 ms \(A: live, change; B: live, inaccessible\)/,
    );
    expect(performance.now() - started).toBeGreaterThanOrEqual(1490);
    expect(byName(mp, 'A').io.pathErrors).toBeGreaterThan(2);
  });

  // Before: a wait over setTimeout's 2^31 - 1 ms limit armed a timer that fired after
  // 1 ms, again and again while the command waited, each time with a warning printed.
  it('lets a command wait for a path with noPathTimeoutMs Infinity, without a timer firing each millisecond', async () => {
    const { a, b } = await startPair();
    a.target.setAnaState(1, 'inaccessible');
    b.target.setAnaState(1, 'inaccessible');
    for (const bad of [NaN, -1]) {
      await expect(
        MultipathNamespace.connect({ nsid: 1, paths: [pathTo(a)], noPathTimeoutMs: bad }),
      ).rejects.toThrow(/^multipath: noPathTimeoutMs (NaN|-1) is not a number of milliseconds/);
    }
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)], noPathTimeoutMs: Infinity });
      const data = randomBytes(BS);
      const write = mp.write(8, data); // parked: no path is usable
      a.target.setAnaState(1, 'optimized');
      await write;
      expect((await mp.read(8, 1)).equals(data)).toBe(true);
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
  });

  // Before: only the backoff parks counted, 50 ms each while other I/O on A succeeded,
  // so a refusal that took 300 ms let the write go on ~7 times as long as the limit.
  it('counts the time of attempts refused with an ANA status toward noPathTimeoutMs', async () => {
    const { a, b } = await startAwayPair(() => true, 1, 300);
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)], noPathTimeoutMs: 1500 });
    let reading = true;
    const reader = (async () => {
      while (reading) await Promise.all([mp.read(0, 1).catch(() => {}), delay(5)]);
    })();
    const started = performance.now();
    const err = await Promise.race([
      mp.write(9, randomBytes(BS)).catch((e: unknown) => e),
      delay(6000, 'still retrying 6 s later'),
    ]);
    const took = performance.now() - started;
    reading = false;
    await reader;
    expect(err).toBeInstanceOf(HostError);
    expect((err as Error).message).toMatch(/no usable path for 1500 ms/);
    expect(took).toBeGreaterThanOrEqual(1490);
    expect(took).toBeLessThan(3000); // at most one more refusal past the limit
  });

  // Before: its clock ran from the first time it found no path, so its time in flight
  // (until the I/O timeout) and held in doubt (until A's fence) counted as waiting, and
  // released with no usable path it failed at once, "no usable path for 1500 ms".
  it('gives a command released from doubt with no usable path the rest of its wait', async () => {
    const LBA = 9;
    let writes = 0;
    const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS });
    const away = unavailableWhile(backend, () => writes === 1);
    // On A, the write is refused with ANA Transition (parked until A's log is read
    // again), then never answered (times out, held until A is fenced), then runs.
    const stalling: BlockBackend = {
      ...away,
      write: (o, d, f, cb) => {
        if (o === LBA * BS && ++writes === 2) return; // never answered
        away.write(o, d, f, cb);
      },
    };
    const a = await startNode('A', stalling, 'optimized', [1, 0x7fff]);
    const b = await startNode('B', backend, 'inaccessible', [0x8000, 0xffef]);
    const events: string[] = [];
    let releasedAt = 0;
    const reconnect = { delayMs: 100, lossTimeoutMs: 60_000 };
    const mp = await open({
      nsid: 1,
      // KATO 1 s: A's fence is 2 s, past the 1.5 s the command may wait for a path.
      paths: [pathTo(a, a.port, { kato: 1000, ioTimeoutMs: 400, reconnect }), pathTo(b)],
      noPathTimeoutMs: 1500,
      onRetry: (ev) => {
        events.push(ev.kind);
        if (ev.kind === 'release') releasedAt = performance.now();
      },
    });
    const data = randomBytes(BS);
    let outcome: unknown = 'pending';
    const pending = mp.write(LBA, data).then(
      () => (outcome = 'written'),
      (e: unknown) => (outcome = e),
    );
    await until('the write to be held', () => events.includes('hold'));
    expect(writes).toBe(2);
    // A comes back inaccessible: when the write is released nothing can take it.
    a.target.setAnaState(1, 'inaccessible');
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible');
    expect(events).not.toContain('release');
    await until('the write to be released', () => releasedAt > 0, 5000);
    await delay(300);
    expect(outcome).toBe('pending');
    a.target.setAnaState(1, 'optimized');
    expect(await pending).toBe('written');
    expect(performance.now() - releasedAt).toBeGreaterThanOrEqual(300);
    expect(writes).toBe(3);
    expect((await mp.read(LBA, 1)).equals(data)).toBe(true);
  });
});

// Before: the fence of a path whose controller was closed by hand started when the
// close did, though the close keeps the association's sockets open while it drains and
// shuts down: a write that failed there was resent as soon as the close ended.
describe('multipath and a path closed by hand', () => {
  it("counts the path's fence from the end of its controller's close, not its start", async () => {
    const LBA = 11;
    const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS });
    const inner = spy(backend, []);
    const stalling: BlockBackend = {
      ...inner,
      write: (o, d, f, cb) => (o === LBA * BS ? undefined : inner.write(o, d, f, cb)),
    };
    const a = await startNode('A', stalling, 'optimized', [1, 0x7fff]);
    const b = await startNode('B', backend, 'non-optimized', [0x8000, 0xffef]);
    let releasedAt = 0;
    const mp = await open({
      nsid: 1,
      // KATO 1 s: A's fence is 2 s
      paths: [pathTo(a, a.port, { kato: 1000 }), pathTo(b)],
      onRetry: (ev) => {
        if (ev.kind === 'release') releasedAt = performance.now();
      },
    });
    const data = randomBytes(BS);
    const write = mp.write(LBA, data);
    await until('the write to be in flight on A', () => byName(mp, 'A').inFlight === 1);
    // a drain of 1.5 s that the stuck write outlasts, then the shutdown
    await mp.controller(0).close(1500);
    const closedAt = performance.now();
    await write;
    expect(releasedAt - closedAt).toBeGreaterThanOrEqual(1990);
    expect((await mp.read(LBA, 1)).equals(data)).toBe(true);
  });
});

describe('multipath and ANA logs', () => {
  // Before: the path stayed 'unknown' until an event or a reconnect happened to read again.
  it('reads a refused ANA log again, with a backoff, until it gets it', async () => {
    const { a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    const ana = a.target.ana;
    const list = ana.list;
    ana.list = () => {
      throw new Error('ANA state unreadable'); // Get Log Page 0x0C fails: Internal Error
    };
    a.target.setAnaState(1, 'non-optimized'); // the event makes the host read, refused
    await until('A unknown', () => byName(mp, 'A').ana === 'unknown');
    const data = randomBytes(BS);
    await mp.write(7, data);
    expect(b.writes).toContain(7 * BS);
    // No event announces the log readable again: only the host's own re-read finds it.
    ana.list = list;
    await until('A read again', () => byName(mp, 'A').ana === 'non-optimized', 5000);
    expect(byName(mp, 'A').usable).toBe(true);
  });

  // Before: A went 'unknown' for good (no re-read), and the reason read only "ANA log
  // (CHGCNT n)", not that the log left the namespace out.
  it('says so when the ANA log leaves the namespace out, and reads it again', async () => {
    const { a, b } = await startPair();
    const changes: string[] = [];
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a), pathTo(b)],
      onPathChange: (p, why) => changes.push(`${p.name} ${why}`),
    });
    const ana = a.target.ana;
    const list = ana.list;
    ana.list = () => []; // a log with no groups: namespace 1 in none
    a.target.setAnaState(1, 'non-optimized'); // the event makes the host read
    await until('A unknown', () => byName(mp, 'A').ana === 'unknown');
    expect(changes.at(-1)).toMatch(
      /^A ANA unknown: ANA log \(CHGCNT \d+\) does not list namespace 1 in any group/,
    );
    const data = randomBytes(BS);
    await mp.write(8, data);
    expect(b.writes).toContain(8 * BS);
    // No event announces the namespace back in the log: only the host's re-read finds it.
    ana.list = list;
    await until('A read again', () => byName(mp, 'A').ana === 'non-optimized', 5000);
    expect(byName(mp, 'A').usable).toBe(true);
  });

  // Before: the log read was refused unsent as too large for the admin queue, whose limit
  // followed the path's maxTransferBytes; nothing said so, and the path stayed 'unknown'.
  it("reads an ANA log larger than the path's maxTransferBytes", async () => {
    const target = new Target({});
    // Valid for the target (its ANA log, ~81 KiB, fits its MDTS), above the host's 64 KiB.
    target.addSubsystem({
      nqn: NQN,
      serial: 'ANALOG1',
      model: 'BranchSAN',
      allowAnyHost: true,
      maxNamespaces: 20_000,
    });
    const backend = new MemoryBackend({ sizeBytes: 1 << 20, blockSize: BS });
    target.addNamespace(NQN, { nsid: 1, backend, nguid: NGUID, uuid: UUID });
    const { transport, port } = await serveOnLoopback(target);
    cleanup.push(async () => {
      target.close();
      await transport.close();
    });
    const mp = await open({
      nsid: 1,
      paths: [{ host: '127.0.0.1', port, subnqn: NQN, name: 'A', maxTransferBytes: 64 * 1024 }],
    });
    expect(byName(mp, 'A').ana).toBe('optimized');
    const data = randomBytes(BS);
    await mp.write(2, data);
    expect((await mp.read(2, 1)).equals(data)).toBe(true);
  });

  /**
   * A target whose ANA log (300 groups, namespace 1 in the last, namespace 100 + g in
   * each group g before it: a log lists only groups holding namespaces) is longer than
   * its MDTS (8 KiB): ours refuses to be configured so, as Linux turns ANA off for such a
   * target, but another target may well be (SPDK with many namespaces). Made here by
   * lowering MDTS once the subsystem is added.
   */
  async function startLongLogTarget(): Promise<{ target: Target; port: number; reads: number[] }> {
    const target = new Target({ maxAnaGroups: 300 });
    target.addSubsystem({ nqn: NQN, serial: 'ANALOG2', model: 'BranchSAN', allowAnyHost: true });
    for (let g = 1; g < 300; g++) {
      const nsid = 100 + g;
      const backend = new MemoryBackend({ sizeBytes: 8 * BS, blockSize: BS });
      const nguid = nsid.toString(16).padStart(32, 'e');
      target.addNamespace(NQN, { nsid, backend, nguid, anagrpid: g });
    }
    for (let g = 2; g <= 300; g++) target.setAnaState(g, g % 2 ? 'optimized' : 'non-optimized');
    const backend = new MemoryBackend({ sizeBytes: 1 << 20, blockSize: BS });
    target.addNamespace(NQN, { nsid: 1, backend, nguid: NGUID, uuid: UUID, anagrpid: 300 });
    (target.options as { mdts: number }).mdts = 1; // 8 KiB; the log is 16 + 300 × (32 + 4) bytes
    // Each build of the log, by the CHGCNT it carries.
    const reads: number[] = [];
    const list = target.ana.list.bind(target.ana);
    target.ana.list = () => (reads.push(target.ana.chgcnt), list());
    const { transport, port } = await serveOnLoopback(target);
    cleanup.push(async () => {
      target.close();
      await transport.close();
    });
    return { target, port, reads };
  }

  // Before: read in one Get Log Page of 9620 bytes, which the target refused (Invalid
  // Field, over its 8 KiB MDTS): the path stayed 'unknown', read again and again.
  it("reads an ANA log longer than the controller's MDTS in pieces", async () => {
    const { target, port } = await startLongLogTarget();
    const mp = await open({
      nsid: 1,
      paths: [{ host: '127.0.0.1', port, subnqn: NQN, name: 'A' }],
    });
    expect(byName(mp, 'A').ana).toBe('non-optimized');
    target.setAnaState(300, 'inaccessible');
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible');
    target.setAnaState(300, 'optimized');
    await until('A optimized', () => byName(mp, 'A').ana === 'optimized');
    const data = randomBytes(BS);
    await mp.write(2, data);
    expect((await mp.read(2, 1)).equals(data)).toBe(true);
  });

  // Pieces read across a change would be stitched from two logs: here namespace 2 joins
  // group 2 between them, which moves every later group 4 bytes on.
  it('reads an ANA log in pieces again when it changed between them', async () => {
    const { target, port, reads } = await startLongLogTarget();
    const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN });
    cleanup.push(() => ctrl.close());
    const list = target.ana.list;
    target.ana.list = () => {
      target.ana.list = list;
      setImmediate(() => {
        const backend = new MemoryBackend({ sizeBytes: 1 << 20, blockSize: BS });
        target.addNamespace(NQN, { nsid: 2, backend, anagrpid: 2, nguid: OTHER_NGUID });
      });
      return list();
    };
    const from = reads.length;
    const log = parseAnaLog(await ctrl.getAnaLog(), 300);
    const chgcnt = target.ana.chgcnt;
    expect(log.chgcnt).toBe(BigInt(chgcnt));
    expect(log.groups.map((g) => g.anagrpid)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(anaStateOf(log, 1)).toBe('non-optimized');
    expect(log.groups[1]!.nsids).toEqual([2, 102]);
    // Pieces 1 and 2 and the header, the first piece before the change (the namespace's
    // joining alone moves CHGCNT); then all three again.
    expect(reads.slice(from, from + 6)).toEqual([
      chgcnt - 1,
      chgcnt,
      chgcnt,
      chgcnt,
      chgcnt,
      chgcnt,
    ]);
  });

  it('follows the newest ANA log even when the change count went backwards', async () => {
    const { a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    for (const s of ['inaccessible', 'optimized', 'inaccessible', 'optimized'] as const) {
      a.target.setAnaState(1, s);
      await until(`A ${s}`, () => byName(mp, 'A').ana === s);
    }
    // The target's counter restarts (a target that lies, or reset it in place): its
    // next logs carry CHGCNT 1 and 2, below the 4 the host has seen.
    (a.target.ana as unknown as { changeCount: number }).changeCount = 0;
    a.target.setAnaState(1, 'inaccessible');
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible');
    a.target.setAnaState(1, 'optimized');
    // Before the fix: the host dropped every log below CHGCNT 4 and kept A unusable.
    await until('A optimized again', () => byName(mp, 'A').ana === 'optimized');
    const before = a.writes.length;
    await mp.write(3, randomBytes(BS));
    expect(a.writes.length).toBe(before + 1);
  });
});

describe('multipath with callbacks that throw', () => {
  const buggy = () => {
    throw new Error('a buggy callback');
  };
  /** The process warnings emitted from now until the test ends. */
  const collectWarnings = (): string[] => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    cleanup.push(async () => void process.off('warning', onWarning));
    return warnings;
  };

  // Before: the throw escaped StateMachine.transition() inside the queue failure path, so
  // the association's other queues were never failed (their commands never ended, its
  // keep-alive ran on), and the exception escaped a timer callback.
  it('still takes a failed association down when onStateChange and onPathChange throw', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const warnings = collectWarnings();
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a, proxy.port, { ioTimeoutMs: 300, onStateChange: buggy }), pathTo(b)],
      onPathChange: buggy,
    });
    await until('A usable', () => byName(mp, 'A').usable);
    const ctrlA = mp.controller(0);
    proxy.stall();
    // Queue 1's command never times out on its own: only the association's failure ends it.
    const forever = fillFlush(new NvmeRequest(), 1);
    forever.timeoutMs = NO_TIMEOUT;
    const other = ctrlA.io(forever, 'flush', 1).catch((e: unknown) => e);
    const timedOut = ctrlA.io(fillFlush(new NvmeRequest(), 1), 'flush', 0).catch((e) => e);
    expect(await timedOut).toBeInstanceOf(HostError);
    const err = await other;
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).message).toMatch(/controller error recovery/);
    expect(ctrlA.state).toBe('dead');
    await until('B takes I/O', () => byName(mp, 'B').usable);
    await mp.write(2, randomBytes(BS));
    expect(b.writes).toContain(2 * BS);
    await until('the warnings', () => warnings.length > 0);
    expect(warnings).toContainEqual(expect.stringMatching(/onStateChange callback threw: a buggy/));
    expect(warnings).toContainEqual(expect.stringMatching(/onPathChange callback threw: a buggy/));
  });

  it('a lone controller whose onStateChange throws still fails the rest of a lost association', async () => {
    const { a } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port: proxy.port,
      subnqn: NQN,
      ioQueues: 2,
      ioTimeoutMs: 300,
      onStateChange: buggy,
    });
    cleanup.push(() => ctrl.close());
    proxy.stall();
    const forever = fillFlush(new NvmeRequest(), 1);
    forever.timeoutMs = NO_TIMEOUT;
    const other = ctrl.io(forever, 'flush', 1).catch((e: unknown) => e);
    await ctrl.io(fillFlush(new NvmeRequest(), 1), 'flush', 0).catch((e) => e);
    expect(((await other) as Error).message).toMatch(/controller error recovery/);
    expect(ctrl.state).toBe('dead');
  });

  // Before: a throwing onRetry left the refused write unsent (it never ended) and threw
  // out of the queue's completion handler.
  it('still resends a refused write when onRetry throws', async () => {
    let away = true;
    const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS });
    const a = await startNode(
      'A',
      unavailableWhile(backend, () => away),
      'optimized',
      [1, 0x7fff],
    );
    const b = await startNode('B', backend, 'non-optimized', [0x8000, 0xffef]);
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)], onRetry: buggy });
    await until('both usable', () => byName(mp, 'A').usable && byName(mp, 'B').usable);
    const data = randomBytes(BS);
    await mp.write(5, data);
    away = false;
    expect(b.writes).toContain(5 * BS);
    expect((await mp.read(5, 1)).equals(data)).toBe(true);
  });

  // Before: a throw in onAsyncEvent rejected the event's delivery (an unhandled rejection).
  it('still checks a replaced namespace when onAsyncEvent throws', async () => {
    const { a, b } = await startPair();
    const warnings = collectWarnings();
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a), pathTo(b, b.port, { onAsyncEvent: buggy })],
    });
    replaceWithOther(b);
    await until('B refused', () => /NGUID/.test(byName(mp, 'B').problem ?? ''), 5000);
    expect(byName(mp, 'B').usable).toBe(false);
    await until('the warning', () => warnings.some((w) => /onAsyncEvent callback threw/.test(w)));
  });
});

describe('multipath paths with different transfer limits (MDTS)', () => {
  // Before: a command sized under the limit of the paths known when it was submitted went
  // to a path that joined later with a smaller MDTS, which refused it (Invalid Field).
  it('never sends a command to a path whose MDTS is smaller than it', async () => {
    const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS });
    const a = await startNode('A', backend, 'optimized', [1, 0x7fff]);
    // MDTS 1: 8 KiB per command on B, 1 MiB (the default, MDTS 8) on A.
    const b = await startNode('B', backend, 'optimized', [0x8000, 0xffef], NGUID, 10, {
      mdts: 1,
    });
    const proxyB = await PausableProxy.start(b.port);
    proxyB.pause(); // B is not up when the namespace connects: its MDTS is not known yet
    const reconnect = { delayMs: 100, lossTimeoutMs: 60_000 };
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b, proxyB.port, { reconnect })] });
    expect(byName(mp, 'A').usable).toBe(true);
    a.target.setAnaState(1, 'inaccessible');
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible');
    // 64 KiB: within the limit of every path known now (A's), so it is taken, and parks.
    const data = randomBytes(64 * 1024);
    const written = mp.write(16, data).then(
      () => null,
      (e: Error) => e,
    );
    proxyB.resume();
    const err = await written;
    expect(byName(mp, 'B').usable).toBe(true);
    expect(byName(mp, 'B').io.submitted).toBe(0);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).kind).toBe('too-large');
    expect((err as HostError).maybeExecuted).toBe(false);
    expect(err!.message).toMatch(/65536 bytes.*B.*8192/);
    // Sized for B, it goes there.
    await mp.write(16, data.subarray(0, 8192));
    expect(byName(mp, 'B').io.completed).toBe(1);
  });
});

/** `b`, whose first `n` writes (through any node) fail with a media error (Write Fault,
 * no DNR: a retry may pass). */
function writeFaults(b: BlockBackend, n: { left: number }): BlockBackend {
  const inner = spy(b, []);
  return {
    ...inner,
    write: (o, d, f, cb) => {
      if (n.left-- > 0) return setImmediate(() => cb(new BackendError('io', 'media error')));
      inner.write(o, d, f, cb);
    },
  };
}

// Before: a write the target completed with a status without DNR outside SCT 3 (Write
// Fault here) failed to the caller at once. Now it is sent again, on the same path only.
describe('multipath: a status without DNR that is not a path status', () => {
  it('sends a write again on the path that answered it, never on the other', async () => {
    const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS });
    const faults = { left: 0 };
    const flaky = writeFaults(backend, faults);
    // Both optimized: round robin would spread attempts over both.
    const a = await startNode('A', flaky, 'optimized', [1, 0x7fff]);
    const b = await startNode('B', flaky, 'optimized', [0x8000, 0xffef]);
    const events: string[] = [];
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a), pathTo(b)],
      onRetry: (ev) => events.push(`${ev.kind} ${ev.path}`),
    });
    await until('both usable', () => byName(mp, 'A').usable && byName(mp, 'B').usable);
    for (let lba = 0; lba < 4; lba++) {
      faults.left = 2;
      const data = randomBytes(BS);
      await mp.write(lba, data);
      const tries = [a, b].map((n) => n.writes.filter((o) => o === lba * BS).length);
      expect(tries.sort()).toEqual([0, 3]); // 2 refused and 1 written, all on one path
      expect((await mp.read(lba, 1)).equals(data)).toBe(true);
    }
    expect(events.filter((e) => e.startsWith('again')).length).toBe(8);
    expect(byName(mp, 'A').io.retried + byName(mp, 'B').io.retried).toBe(8);
  });

  it('fails with the status after 5 retries on that path', async () => {
    const backend = new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS });
    const faults = { left: 1000 };
    const a = await startNode('A', writeFaults(backend, faults), 'optimized', [1, 0x7fff]);
    const b = await startNode('B', backend, 'non-optimized', [0x8000, 0xffef]);
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    const err = (await mp.write(7, randomBytes(BS)).catch((e: unknown) => e)) as NvmeStatusError;
    expect(err).toBeInstanceOf(NvmeStatusError);
    expect(err.statusName).toBe('WRITE_FAULT');
    expect(err.message).toMatch(/sent again 5 times/);
    expect(a.writes.filter((o) => o === 7 * BS).length).toBe(6);
    expect(b.writes).toEqual([]);
  });
});
