/**
 * Keep Alive from the moment the controller's keep-alive timer runs until the host lets
 * the controller go: while the I/O queues connect (BranchSAN's own target, which drops a
 * controller whose KATO expires, behind a proxy that holds an ICResp back), at the KATO
 * a Set Features gave the controller since (on the same target), and through
 * whatever else the admin queue holds: slow admin commands filling every other slot
 * (FakeTarget holding them unanswered).
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { Target } from '../../../engine/src/core/index.js';
import {
  HostError,
  NvmeController,
  NvmeRequest,
  type ControllerOptions,
  type ControllerState,
  discover,
  execute,
  fillSetFeatures,
} from '../../../engine/src/host/index.js';
import { ADMIN, DISCOVERY_NQN, FID, IO, LID } from '../../../engine/src/protocol/opcodes.js';
import { SC } from '../../../engine/src/protocol/status.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import { serveOnLoopback } from '../../helpers/target.js';
import { onPortIn, waitFor } from './helpers.js';
import { FakeTarget } from './fake-target.js';

const NQN = 'nqn.2024-01.io.branchsan:keep-alive';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f().catch(() => {});
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Our own target on loopback, one 1 MiB namespace; KATO expires at ceil(KATO) + 0.5 s. */
async function ownTarget(): Promise<number> {
  const target = new Target({ kaSlackMs: 500 });
  target.addSubsystem({ nqn: NQN, serial: 'KA1', model: 'BranchSAN', allowAnyHost: true });
  const backend = new MemoryBackend({ sizeBytes: 1 << 20 });
  target.addNamespace(NQN, { nsid: 1, backend, nguid: 'cd'.repeat(16) });
  const served = await serveOnLoopback(target);
  cleanups.push(async () => {
    target.close();
    await served.transport.close();
  });
  return served.port;
}

/**
 * A TCP proxy to `port` that holds what the target sends on its connection number `n`
 * (0: the admin queue, then the I/O queues) for `ms` before passing it on: an ICResp
 * that is late, as from a loaded target or over a congested link.
 */
async function lateTarget(port: number, n: number, ms: number, listenPort = 0): Promise<number> {
  const sockets = new Set<net.Socket>();
  let count = 0;
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    const end = () => (client.destroy(), upstream.destroy());
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', end).on('close', end);
    }
    client.pipe(upstream);
    // Not read meanwhile: what the target sends waits in the socket.
    if (count++ === n) setTimeout(() => upstream.pipe(client), ms);
    else upstream.pipe(client);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject).listen(listenPort, '127.0.0.1', resolve);
  });
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => server.close(r));
  });
  return (server.address() as net.AddressInfo).port;
}

describe('keep-alive', () => {
  it('keeps the controller alive while an I/O queue waits for its ICResp', async () => {
    // KATO 1 s: the target drops the controller 1.5 s after the admin Connect unless a
    // Keep Alive comes; the I/O queue's ICResp comes after 3 s (connectTimeoutMs 10 s).
    const port = await lateTarget(await ownTarget(), 1, 3000);
    const connected = NvmeController.connect({ host: '127.0.0.1', port, subnqn: NQN, kato: 1000 });
    // Before: "connect qid 1: NVMe status CONNECT_INVALID_PARAM|DNR (connect data byte
    // 16)", an unknown CNTLID: no Keep Alive was sent until every I/O queue was up, so
    // the target had dropped the controller when the I/O queue's Connect arrived.
    const ctrl = await connected;
    cleanups.push(() => ctrl.close(100));
    expect(ctrl.ioQueueCount).toBe(1);
    const ns = await ctrl.namespace(1);
    const data = randomBytes(ns.blockSize);
    await ns.write(3, data);
    expect((await ns.read(3, 1)).equals(data)).toBe(true);
  });

  it('follows a KATO lowered by Set Features, on this association and the next', async () => {
    const port = await ownTarget();
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: NQN,
      kato: 10_000,
    });
    cleanups.push(() => ctrl.close(100));
    // Connected with KATO 10 s (Keep Alive every 5 s); from now on the target drops the
    // controller 1.5 s (at most a tick more) after the last command.
    await ctrl.setFeatures(FID.KATO, { cdw11: 1000 });
    await sleep(3000);
    // Before: 'dead', the target had dropped the idle controller ("connection closed
    // by the controller") before the next Keep Alive on the old period.
    expect(ctrl.state).toBe('live');
    expect((await ctrl.getFeatures(FID.KATO)).dw0).toBe(1000);
    // A new association is a new controller: it is told the KATO the host keeps to.
    await ctrl.reconnect();
    expect((await ctrl.getFeatures(FID.KATO)).dw0).toBe(1000);
  });

  // Before: only setFeatures() did; the same command through submit() (execute()) left
  // the Keep Alive on the old period (the target dropped the idle controller), the KATO
  // ceiling a multipath fence is timed by unraised, and KATO 0 on a path unrefused.
  it('follows a KATO set by a Set Features sent through submit(), as setFeatures() does', async () => {
    const port = await ownTarget();
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: NQN,
      kato: 10_000,
      requireKeepAlive: true,
    });
    cleanups.push(() => ctrl.close(100));
    const setKato = (ms: number) =>
      execute(ctrl, fillSetFeatures(new NvmeRequest(), FID.KATO, { cdw11: ms }));
    await setKato(20_000);
    expect(ctrl.keepAliveCeilingMs).toBe(20_000);
    await setKato(1000);
    expect(ctrl.keepAliveCeilingMs).toBe(20_000); // the largest it may have had
    await sleep(3000);
    expect(ctrl.state).toBe('live');
    expect((await ctrl.getFeatures(FID.KATO)).dw0).toBe(1000);
    await expect(setKato(0)).rejects.toThrow(/KATO 0 \(no keep-alive\) refused/);
    expect((await ctrl.getFeatures(FID.KATO)).dw0).toBe(1000);
  });

  // Before: connected with KATO 0 and no Keep Alive, it was dropped once the target's
  // discovery keep-alive timer (120 s by default, 1 s here) ran out.
  it('keeps a discovery controller it holds alive', async () => {
    const target = new Target({ discoveryKatoMs: 1000, kaSlackMs: 500 });
    const served = await serveOnLoopback(target);
    cleanups.push(async () => {
      target.close();
      await served.transport.close();
    });
    const port = served.port;
    const ctrl = await NvmeController.connect({ host: '127.0.0.1', port, subnqn: DISCOVERY_NQN });
    cleanups.push(() => ctrl.close(100));
    expect((await ctrl.getFeatures(FID.KATO)).dw0).toBe(30_000);
    await sleep(2500);
    expect(ctrl.state).toBe('live');
    // One read once and let go connects without keep-alive, as Linux does.
    const log = await discover({ host: '127.0.0.1', port });
    expect(log.entries.length).toBe(1);
  });

  it('sends Keep Alive while slow admin commands fill the admin queue', async () => {
    let held = 0;
    const target = await new FakeTarget({
      hold: (op, qid) => {
        const slow = qid === 0 && op === ADMIN.GET_LOG_PAGE;
        if (slow) held++;
        return slow;
      },
    }).start();
    cleanups.push(() => target.stop());
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port: target.port,
      subnqn: 'nqn.fake',
      kato: 1000,
    });
    // Dropped first (afterEach runs in reverse): the held commands fail instead of
    // keeping close() waiting for its shutdown.
    cleanups.push(
      () => ctrl.close(100),
      async () => target.dropAll(),
    );
    await waitFor(() => target.adminOps.includes(ADMIN.ASYNC_EVENT));
    const keepAlives = () => target.adminOps.filter((o) => o === ADMIN.KEEP_ALIVE).length;
    const slow = Array.from({ length: 40 }, () =>
      ctrl.getLogPage({ lid: LID.SMART, length: 512 }).catch((e: Error) => e),
    );
    await waitFor(() => held >= 29);
    const before = keepAlives();
    await sleep(1600); // KATO 1 s: a Keep Alive due every 500 ms
    // Before: none. The Keep Alive waited behind the 30 held commands for a free slot,
    // with no deadline, while a real controller's keep-alive timer ran out.
    expect(keepAlives() - before).toBeGreaterThanOrEqual(2);
    // 31 slots: the AER and Keep Alive have one each, the others wait for one of the 29.
    expect(held).toBe(29);
    expect(ctrl.state).toBe('live');
    target.dropAll();
    expect((await Promise.all(slow)).every((r) => r instanceof Error)).toBe(true);
  });
});

describe('a Keep Alive answered with an error status', () => {
  /** A fake target on a port from 51100 + 10n whose first Keep Alive gets `status`. */
  async function refusing(n: number, status: number, more: Partial<ControllerOptions> = {}) {
    const target = new FakeTarget({
      adminStatus: (op, i) => (op === ADMIN.KEEP_ALIVE && i === 0 ? status : 0),
      hold: (op, qid) => qid > 0 && op === IO.READ,
    });
    await onPortIn(51100 + 10 * n, 51109 + 10 * n, (port) => target.start(port));
    cleanups.push(() => target.stop());
    const states: [ControllerState, string | undefined][] = [];
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port: target.port,
      subnqn: 'nqn.fake',
      kato: 1000,
      onStateChange: (next, _prev, why) => states.push([next, why?.message]),
      ...more,
    });
    cleanups.push(() => ctrl.close(100));
    return { target, ctrl, states, ns: await ctrl.namespace(1) };
  }

  // Before: ignored, the controller left live, while a target that did not take the Keep
  // Alive may end the association at its KATO under the commands in flight. Linux logs it
  // and sends no more Keep Alives, so the target ends the association.
  it('ends the association (error recovery), failing its commands in flight saying why', async () => {
    const { ctrl, states, ns } = await refusing(0, SC.INTERNAL);
    const read = ns.read(0, 1).catch((e: unknown) => e); // held by the target: in flight
    await waitFor(() => ctrl.state === 'dead', 3000);
    const why =
      /answered Keep Alive with status INTERNAL \(0x6\): its keep-alive timer may not have been restarted, so it could end this association without warning once KATO \(1000 ms\) runs out; the host ends it now \(error recovery\)/;
    expect(states.at(-1)![1]).toMatch(why);
    const err = (await read) as HostError;
    expect(err).toMatchObject({ kind: 'transport', maybeExecuted: true });
    expect(err.message).toMatch(why);
  });

  it('reconnects when reconnect is on, and keeps the new association', async () => {
    const { ctrl, target, states } = await refusing(1, SC.CMD_SEQ_ERROR, {
      reconnect: { delayMs: 50, lossTimeoutMs: 10_000 },
    });
    await waitFor(() => states.some(([s]) => s === 'recovering'), 3000);
    await waitFor(() => ctrl.state === 'live', 3000);
    const kas = () => target.adminOps.filter((o) => o === ADMIN.KEEP_ALIVE).length;
    const before = kas();
    await sleep(1200); // KATO 1 s: two Keep Alives, answered with success
    expect(kas() - before).toBeGreaterThanOrEqual(2);
    expect(ctrl.state).toBe('live');
  });
});

describe('a Keep Alive refused while the I/O queues connect', () => {
  // Before: the connect went on until the I/O queue's ICResp came (3 s here; with none,
  // connectTimeoutMs) on an association whose admin queue had failed at 500 ms.
  it('ends the connect attempt then, saying why', async () => {
    const target = new FakeTarget({
      adminStatus: (op) => (op === ADMIN.KEEP_ALIVE ? SC.INTERNAL : 0),
    });
    await onPortIn(53610, 53619, (port) => target.start(port));
    cleanups.push(() => target.stop());
    const held = 3000;
    const port = await onPortIn(53620, 53629, (p) => lateTarget(target.port, 1, held, p));
    const kato = 1000;
    const started = performance.now();
    const err = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: 'nqn.fake',
      kato,
      connectTimeoutMs: 10_000,
    }).then(
      (c) => (cleanups.push(() => c.close(100)), null),
      (e: HostError) => e,
    );
    const ms = performance.now() - started;
    expect(err).toMatchObject({ kind: 'connect' });
    expect(err!.message).toMatch(/answered Keep Alive with status INTERNAL/);
    expect(target.adminOps).toContain(ADMIN.KEEP_ALIVE);
    // The first Keep Alive goes out at KATO/2; its refusal ends the attempt then.
    expect(ms).toBeLessThan(kato * 2);
  });
});

describe('reconnecting to a target that refuses Keep Alives', () => {
  const kato = 1000;
  const delayMs = 50;

  /** A fake target whose Keep Alives get INTERNAL while `refuse.on` holds. */
  async function refusingTarget(port = 0) {
    const refuse = { on: true };
    const target = new FakeTarget({
      adminStatus: (op) => (op === ADMIN.KEEP_ALIVE && refuse.on ? SC.INTERNAL : 0),
    });
    await target.start(port);
    cleanups.push(() => target.stop());
    return { target, refuse };
  }

  /** A controller on `port` that notes each state it takes, and when. */
  async function controller(port: number, lossTimeoutMs: number) {
    const states: { state: ControllerState; at: number; why?: string }[] = [];
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: 'nqn.fake',
      kato,
      reconnect: { delayMs, lossTimeoutMs },
      onStateChange: (state, _prev, why) =>
        states.push({ state, at: performance.now(), why: why?.message }),
    });
    cleanups.push(() => ctrl.close(100));
    const ns = await ctrl.namespace(1);
    /** Associations connected (went live), from the `from`th state on. */
    const associations = (from = 0) => states.slice(from).filter((s) => s.state === 'live').length;
    /** The waits between losing (or failing) an association and the next attempt. */
    const waits = () =>
      states.flatMap((s, i) =>
        s.state === 'connecting' && states[i - 1]?.state === 'recovering'
          ? [s.at - states[i - 1]!.at]
          : [],
      );
    return { ctrl, ns, states, associations, waits };
  }

  // Before: each association that connected started the loss timeout again, so the host
  // reconnected every ~550 ms (the first Keep Alive at KATO/2, refused, then delayMs) for
  // as long as the target ran, never 'dead' (22 associations in 12 s).
  it('gives up once lossTimeoutMs runs out, naming the associations no Keep Alive was answered on', async () => {
    const lossTimeoutMs = 3000;
    const { target } = await refusingTarget();
    const { ctrl, ns, states, associations, waits } = await controller(target.port, lossTimeoutMs);
    await waitFor(() => ctrl.state === 'dead', lossTimeoutMs + kato + 3000);
    const lost = states.find((s) => s.state === 'recovering')!.at;
    const dead = states.at(-1)!;
    expect(dead.state).toBe('dead');
    expect(dead.why).toMatch(/answered Keep Alive with status INTERNAL/);
    // Given up within lossTimeoutMs of the first loss, and at most one KATO later (the
    // association live then ends at its first Keep Alive), having kept trying till then.
    expect(dead.at - lost).toBeGreaterThan(lossTimeoutMs - kato);
    expect(dead.at - lost).toBeLessThan(lossTimeoutMs + kato);
    // The first association and one every ~550 ms after it was lost.
    const n = associations();
    expect(n).toBeGreaterThanOrEqual(4);
    expect(n).toBeLessThanOrEqual(8);
    // No backoff: every attempt came delayMs after the loss before it (a doubling wait
    // would be 400 ms by the fourth; the slack is for timers late on a loaded machine).
    expect(waits().length).toBe(n - 1);
    for (const ms of waits()) expect(ms).toBeLessThan(delayMs + 250);
    const err = (await ns.read(0, 1).catch((e: unknown) => e)) as HostError;
    expect(err).toMatchObject({ kind: 'not-connected', maybeExecuted: false });
    expect(err.message).toContain(
      `controller is dead: 127.0.0.1:${target.port}: the controller answered Keep Alive with status INTERNAL`,
    );
    expect(err.message).toContain(
      `; it gave up reconnecting: reconnect.lossTimeoutMs (3000 ms) ran out since it lost its ` +
        `first association (or failed its first attempt) after connect or reconnect(); the ${n} ` +
        `associations connected since connect or reconnect() ended before a Keep Alive was ` +
        `answered on any (check the target's log for why)`,
    );
    // reconnect() by the caller starts the loss timeout afresh: it tries again for as long.
    const from = states.length;
    const again = performance.now();
    await ctrl.reconnect();
    await waitFor(() => ctrl.state === 'dead', lossTimeoutMs + kato + 3000);
    expect(performance.now() - again).toBeGreaterThan(lossTimeoutMs);
    expect(associations(from)).toBeGreaterThanOrEqual(4);
  });

  // Before: never 'dead' at all (as above), so the loss timeout never ran out after the
  // second round of refusals either.
  it('starts the loss timeout again once a Keep Alive is answered on an association', async () => {
    const lossTimeoutMs = 2500;
    const { target, refuse } = await refusingTarget();
    const { ctrl, ns, states, associations } = await controller(target.port, lossTimeoutMs);
    // Refused for 2 s of the 2.5 s, then answered on the next association.
    await sleep(2000);
    refuse.on = false;
    const kas = () => target.adminOps.filter((o) => o === ADMIN.KEEP_ALIVE).length;
    const before = kas();
    await waitFor(() => kas() >= before + 2 && ctrl.state === 'live', 3000);
    expect(associations()).toBeGreaterThanOrEqual(3);
    // Kept past the first loss's 2.5 s.
    await sleep(600);
    expect(ctrl.state).toBe('live');
    // Refused again: a full loss timeout from the next loss.
    const from = states.length;
    refuse.on = true;
    await waitFor(() => ctrl.state === 'dead', lossTimeoutMs + kato + 3000);
    const lost = states.slice(from).find((s) => s.state === 'recovering')!.at;
    const dead = states.at(-1)!.at;
    expect(dead - lost).toBeGreaterThan(lossTimeoutMs - kato);
    expect(dead - lost).toBeLessThan(lossTimeoutMs + kato);
    const n = associations(from);
    const err = (await ns.read(0, 1).catch((e: unknown) => e)) as HostError;
    expect(err.message).toContain(
      `; it gave up reconnecting: reconnect.lossTimeoutMs (2500 ms) ran out since it lost the ` +
        `last association on which a Keep Alive was answered; the ${n} associations connected ` +
        `since that one ended before a Keep Alive was answered on any`,
    );
  });

  // Before: only the timer's Keep Alives counted (the first at KATO/2, here 30 s in): an
  // association the caller's own Keep Alive was answered on still counted as never kept,
  // so the loss timeout ran from the loss before it and the error said so.
  it('counts a Keep Alive the caller sends, answered, as proof the association is kept', async () => {
    const lossTimeoutMs = 1500;
    const { target, refuse } = await onPortIn(54020, 54039, (p) => refusingTarget(p));
    refuse.on = false;
    const port = target.port;
    const ctrl = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: 'nqn.fake',
      kato: 60_000,
      reconnect: { delayMs, lossTimeoutMs },
    });
    cleanups.push(() => ctrl.close(100));
    const ns = await ctrl.namespace(1);
    await target.stop();
    await waitFor(() => ctrl.state === 'recovering');
    await target.start(port);
    await waitFor(() => ctrl.state === 'live', 3000);
    await ctrl.keepAlive();
    expect(target.adminOps.filter((o) => o === ADMIN.KEEP_ALIVE)).toHaveLength(1);
    await target.stop();
    await waitFor(() => ctrl.state === 'dead', lossTimeoutMs + 3000);
    const err = (await ns.read(0, 1).catch((e: unknown) => e)) as HostError;
    expect(err.message).toContain(
      `; it gave up reconnecting: reconnect.lossTimeoutMs (1500 ms) ran out since it lost the ` +
        `last association on which a Keep Alive was answered`,
    );
    expect(err.message).not.toContain('ended before a Keep Alive was answered');
  });

  // Unchanged: a target that was down comes back within about delayMs, I/O held across
  // it flows, and an association that answered a Keep Alive resets the loss timeout.
  it('reconnects to a target that was down once it is back, and starts over after a kept association', async () => {
    const lossTimeoutMs = 2000;
    const { target, refuse } = await onPortIn(54000, 54019, (p) => refusingTarget(p));
    refuse.on = false;
    const port = target.port;
    const { ctrl, ns, states } = await controller(port, lossTimeoutMs);
    const kas = () => target.adminOps.filter((o) => o === ADMIN.KEEP_ALIVE).length;
    for (let round = 0; round < 2; round++) {
      // Down 1.5 s twice: 3 s in all, past lossTimeoutMs, with a kept association between.
      await target.stop();
      await waitFor(() => ctrl.state === 'recovering');
      const data = randomBytes(512);
      const write = ns.write(10 + round, data); // held for the reconnect
      await sleep(1500);
      expect(ctrl.state).not.toBe('dead');
      const back = performance.now();
      await target.start(port);
      await write;
      const live = states.findLast((s) => s.state === 'live')!.at;
      expect(live - back).toBeLessThan(delayMs + 450); // not a backoff's seconds
      expect((await ns.read(10 + round, 1)).equals(data)).toBe(true);
      const before = kas();
      await waitFor(() => kas() > before, 2 * kato);
      await sleep(50);
    }
    expect(ctrl.state).toBe('live');
  });
});
