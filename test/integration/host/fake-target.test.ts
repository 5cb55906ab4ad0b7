/**
 * Host library behaviour that a well-behaved kernel target never exercises: queue-depth
 * limiting, the bounded wait queue, C2H data in pieces and completed by SUCCESS, writes
 * pulled by several R2Ts, timeouts and error recovery, automatic reconnect, async events
 * and keep-alive. Uses the in-process FakeTarget.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { performance } from 'node:perf_hooks';
import {
  HostError,
  NvmeController,
  NvmeStatusError,
  NvmeRequest,
  fillRw,
  type ControllerOptions,
  type ControllerState,
} from '../../../engine/src/host/index.js';
import { ADMIN, IO } from '../../../engine/src/protocol/opcodes.js';
import { DNR, SC } from '../../../engine/src/protocol/status.js';
import { onPortIn, waitFor } from './helpers.js';
import { FakeTarget, type FakeTargetOptions } from './fake-target.js';

let target: FakeTarget | null = null;
let ctrl: NvmeController | null = null;

afterEach(async () => {
  await ctrl?.close(100);
  await target?.stop();
  ctrl = target = null;
});

async function setup(t: FakeTargetOptions = {}, c: Partial<ControllerOptions> = {}, port = 0) {
  const fake = new FakeTarget(t);
  // A port of this file's range (first of ten), or any free one (0).
  target = await (port === 0 ? fake.start() : onPortIn(port, port + 9, (p) => fake.start(p)));
  ctrl = await NvmeController.connect({
    host: '127.0.0.1',
    port: target.port,
    subnqn: 'nqn.fake',
    ...c,
  });
  return { target, ctrl, ns: await ctrl.namespace(1) };
}

describe('host library vs fake target', () => {
  it('limits commands in flight to the queue depth (entries - 1) and queues the rest', async () => {
    const { target, ns, ctrl } = await setup({}, { ioQueues: 2, queueSize: 8 });
    // 8 entries hold 7 commands (a full queue keeps one entry free): Connect SQSIZE 7.
    expect(ctrl.ioQueueDepth).toBe(7);
    const blocks = Array.from({ length: 100 }, () => randomBytes(4096));
    const writes = Promise.all(blocks.map((b, i) => ns.write(i * 8, b)));
    expect(ctrl.ioQueueLoad).toEqual([
      { inFlight: 7, queued: 43 },
      { inFlight: 7, queued: 43 },
    ]);
    await writes;
    expect(target.maxOutstanding).toBeLessThanOrEqual(7);
    expect(ctrl.ioQueueLoad).toEqual([
      { inFlight: 0, queued: 0 },
      { inFlight: 0, queued: 0 },
    ]);
    const back = await Promise.all(blocks.map((_, i) => ns.read(i * 8, 8)));
    back.forEach((b, i) => expect(b.equals(blocks[i]!)).toBe(true));
  });

  it('keeps one entry of the queue free at the target, with SQ flow control on', async () => {
    const { target, ns } = await setup(
      { hold: (op, qid) => qid > 0 && op === IO.READ },
      { queueSize: 16, disableSqFlow: false, kato: 0 },
    );
    for (let i = 0; i < 40; i++) ns.read(i, 1).catch(() => {});
    await waitFor(() => target.ioCommands >= 15);
    await new Promise((r) => setTimeout(r, 50));
    // Before the fix: 16 reads outstanding on a 16-entry queue, which is then over full.
    expect(target.maxOutstanding).toBe(15);
  });

  it('fails submissions beyond the bounded wait queue with kind busy', async () => {
    // 2 entries: one command in flight, 4 waiting, the other 5 refused.
    const { ns } = await setup({}, { queueSize: 2, maxWaiting: 4 });
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) => ns.write(i, Buffer.alloc(512, i))),
    );
    const busy = results.filter(
      (r) => r.status === 'rejected' && (r.reason as HostError).kind === 'busy',
    );
    expect(busy).toHaveLength(5);
    expect((busy[0] as PromiseRejectedResult).reason.maybeExecuted).toBe(false);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(5);
  });

  it.each([
    { name: 'C2H pieces, CapsuleResp', t: { c2hPiece: 1000 } },
    { name: 'C2H pieces, SUCCESS flag', t: { c2hPiece: 4096, c2hSuccess: true } },
    { name: 'one C2H PDU, SUCCESS flag', t: { c2hSuccess: true } },
  ])('gathers reads: $name', async ({ t }) => {
    const { ns, target } = await setup(t, { hdgst: true, ddgst: true });
    const data = randomBytes(65536);
    data.copy(target.memory, 512 * 10);
    expect((await ns.read(10, 128)).equals(data)).toBe(true);
    const into = Buffer.alloc(65536);
    expect(await ns.read(10, 128, { into })).toBe(into);
    expect(into.equals(data)).toBe(true);
  });

  it('lands a large read that spans socket reads in `into`, and nothing around it', async () => {
    for (const t of [{}, { c2hPiece: 100_000 }]) {
      const { ns, target } = await setup(t, { hdgst: true, ddgst: true });
      const data = randomBytes(256 * 1024);
      data.copy(target.memory, 0);
      const guard = Buffer.alloc(data.length + 8192, 0x5a);
      const into = guard.subarray(4096, 4096 + data.length);
      expect(await ns.read(0, data.length / 512, { into })).toBe(into);
      expect(into.equals(data)).toBe(true);
      expect(guard.subarray(0, 4096).every((b) => b === 0x5a)).toBe(true);
      expect(guard.subarray(4096 + data.length).every((b) => b === 0x5a)).toBe(true);
      expect((await ns.read(0, data.length / 512)).equals(data)).toBe(true); // gathered
    }
  });

  it('answers several R2T windows with H2CData no larger than MAXH2CDATA', async () => {
    const { ns, target } = await setup({ r2tWindow: 12288, maxh2cdata: 4096, inCapsule: 4096 });
    const data = randomBytes(65536);
    await ns.write(20, data);
    expect(target.memory.subarray(20 * 512, 20 * 512 + 65536).equals(data)).toBe(true);
    const small = randomBytes(4096); // exactly the in-capsule limit
    await ns.write(0, small, { fua: true });
    expect(target.memory.subarray(0, 4096).equals(small)).toBe(true);
  });

  it('times out a command, fails the others on the controller, and goes dead', async () => {
    const states: ControllerState[] = [];
    const { ns, ctrl } = await setup(
      { hold: (op, qid) => qid > 0 && op === IO.READ },
      { ioTimeoutMs: 150, ioQueues: 2, onStateChange: (s) => states.push(s) },
    );
    const t0 = Date.now();
    const a = ns.read(0, 1, { queue: 0 }).catch((e: HostError) => e);
    const b = ns.read(0, 1, { queue: 1 }).catch((e: HostError) => e);
    const [ea, eb] = await Promise.all([a, b]);
    expect(Date.now() - t0).toBeLessThan(2000);
    const kinds = [ea, eb].map((e) => (e as HostError).kind).sort();
    // Both time out about together (one scan each), or one times out and recovery
    // fails the other: never a success, never silence.
    expect(kinds.every((k) => k === 'timeout' || k === 'transport')).toBe(true);
    expect(kinds).toContain('timeout');
    expect((ea as HostError).maybeExecuted).toBe(true);
    expect(ctrl.state).toBe('dead');
    expect(states).toEqual(['connecting', 'live', 'dead']);
    const late = await ns.read(0, 1).catch((e: HostError) => e);
    expect((late as HostError).kind).toBe('not-connected');
  });

  it('reconnects automatically after the connection drops, without resending', async () => {
    const states: ControllerState[] = [];
    const { ns, ctrl, target } = await setup(
      { hold: (op, qid) => qid > 0 && op === IO.WRITE },
      { reconnect: { delayMs: 50, lossTimeoutMs: 5000 }, onStateChange: (s) => states.push(s) },
    );
    const pending = ns.write(0, Buffer.alloc(512, 1)).catch((e: HostError) => e);
    await waitFor(() => target.ioCommands === 1);
    target.dropAll();
    const err = (await pending) as HostError;
    expect(err).toBeInstanceOf(HostError);
    expect(err.kind).toBe('transport');
    expect(err.maybeExecuted).toBe(true);
    expect(err.message).toMatch(
      /^write slba 0 nlb 1: .*connection closed by the controller; it may have been executed, and is not sent again: the target may still apply it, even after a newer write/,
    );
    await waitFor(() => ctrl.state === 'live' && states.length > 2);
    expect(states).toEqual(['connecting', 'live', 'recovering', 'connecting', 'live']);
    expect(target.ioCommands).toBe(1); // the write was not resent
    await ns.flush();
  });

  it('gives up after the loss timeout', async () => {
    const { ctrl, target } = await setup({}, { reconnect: { delayMs: 30, lossTimeoutMs: 200 } });
    await target.stop();
    target.dropAll();
    await waitFor(() => ctrl.state === 'dead');
  });

  it('delivers async events with their log page and re-arms', async () => {
    const events: { lid: number; log: Buffer | null }[] = [];
    const { target } = await setup({}, { onAsyncEvent: (e) => events.push(e) });
    await waitFor(() => target.adminOps.includes(ADMIN.ASYNC_EVENT));
    expect(target.fireEvent(0x00040002)).toBe(1);
    await waitFor(() => events.length === 1);
    expect(events[0]!.lid).toBe(4);
    expect(events[0]!.log!.length).toBe(4096);
    await waitFor(() => target.adminOps.filter((o) => o === ADMIN.ASYNC_EVENT).length === 2);
  });

  it('sends Keep Alive every KATO/2', async () => {
    const { target } = await setup({}, { kato: 100 });
    await waitFor(() => target.adminOps.filter((o) => o === ADMIN.KEEP_ALIVE).length >= 3, 2000);
  });

  it('refuses an LBA that is no whole number, sending nothing, as a rejected promise', async () => {
    const { target, ns } = await setup();
    target.memory.fill(0x55, 0, 4096);
    // Before: write(1.9) wrote LBA 1, and write(NaN) and writeZeroes(NaN) LBA 0.
    const one = Buffer.alloc(512, 0x77);
    await expect(ns.write(1.9, one)).rejects.toThrow(/starting LBA must be a whole number/);
    await expect(ns.write(Number.NaN, one)).rejects.toThrow(RangeError);
    await expect(ns.writeZeroes(Number.NaN, 1)).rejects.toThrow(RangeError);
    await expect(ns.read(-1, 1)).rejects.toThrow(RangeError);
    await expect(ns.deallocate([{ slba: 0, nlb: -1 }])).rejects.toThrow(/block count/);
    expect(target.ioCommands).toBe(0);
    expect(target.memory.subarray(0, 4096).every((b) => b === 0x55)).toBe(true);
  });

  it('runs reusable requests through the callback API', async () => {
    const { ctrl, target } = await setup({}, { ioQueues: 2, queueSize: 16 });
    Buffer.alloc(4096, 7).copy(target.memory, 0);
    let done = 0;
    let errors = 0;
    const total = 2000;
    await new Promise<void>((resolve) => {
      const onDone = (r: NvmeRequest) => {
        if (r.error || r.status !== 0 || r.data![0] !== 7) errors++;
        if (++done === total) return resolve();
        if (done + 32 <= total) {
          fillRw(r.reset(), IO.READ, 1, 0, 8).readLength = 4096;
          ctrl.submitIo(r);
        }
      };
      for (let i = 0; i < 32; i++) {
        const r = fillRw(new NvmeRequest(), IO.READ, 1, 0, 8);
        r.readLength = 4096;
        r.onDone = onDone;
        ctrl.submitIo(r);
      }
    });
    expect(errors).toBe(0);
  });
});

// Before: a status without DNR (Namespace Not Ready, a transient transport error, a media
// error) reached the caller at once; Linux sends such a command again, up to 5 times, after
// the delay the status's CRD selects (CRDT, enabled by ACRE in Host Behavior Support).
describe('a status without DNR, on one controller', () => {
  const CRD1 = 1 << 11;
  const fail = (status: number, times: number) => (_op: number, n: number) =>
    n < times ? status : 0;

  it.each([
    ['Namespace Not Ready (0/82)', SC.NS_NOT_READY],
    ['Transient Transport Error (0/22)', SC.TRANSIENT_TR_ERR],
    ['ANA Transition (3/03)', SC.ANA_TRANSITION],
    ['Write Fault (2/80)', SC.WRITE_FAULT],
  ])('sends a command that got %s again on the same controller', async (_, status) => {
    const { target, ns } = await setup({ ioStatus: fail(status, 2) });
    const data = randomBytes(512);
    await ns.write(9, data);
    expect(target.ioCommands).toBe(3);
    expect(target.memory.subarray(9 * 512, 10 * 512).equals(data)).toBe(true);
  });

  it('gives up after 5 retries, and never retries a status with DNR', async () => {
    const { target, ns } = await setup({ ioStatus: fail(SC.NS_NOT_READY, 100) });
    const err = (await ns.read(0, 1).catch((e: unknown) => e)) as NvmeStatusError;
    expect(err).toBeInstanceOf(NvmeStatusError);
    expect(err.statusName).toBe('NS_NOT_READY');
    expect(err.message).toMatch(/sent again 5 times/);
    expect(target.ioCommands).toBe(6);
    target.o.ioStatus = fail(SC.LBA_RANGE | DNR, 1000);
    const dnr = (await ns.read(0, 1).catch((e: unknown) => e)) as NvmeStatusError;
    expect(dnr.statusName).toBe('LBA_RANGE|DNR');
    expect(target.ioCommands).toBe(7);
  });

  it('enables ACRE when the controller has CRDT, and waits the CRD delay before the retry', async () => {
    const { target, ns } = await setup({
      crdt: [3, 0, 0], // CRDT1 300 ms
      ioStatus: fail(SC.NS_NOT_READY | CRD1, 1),
    });
    expect(target.hostBehavior.length).toBe(1);
    expect(target.hostBehavior[0]![0]).toBe(1); // ACRE
    const started = performance.now();
    await ns.write(1, randomBytes(512));
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(target.ioCommands).toBe(2);
  });

  // Before: the delay was a bare timer of the namespace's: close() left the command
  // pending until it ran out (10 s here, up to 109 minutes), and it was waited out
  // however long it was.
  it('ends a command waiting out a retry delay at once when the controller closes', async () => {
    const { target, ns, ctrl } = await setup({
      crdt: [100, 0, 0], // CRDT1 10 s
      ioStatus: fail(SC.WRITE_FAULT | CRD1, 1),
    });
    const write = ns.write(1, randomBytes(512)).catch((e: unknown) => e);
    await waitFor(() => target.ioCommands === 1);
    const started = performance.now();
    await ctrl.close(100);
    const err = await write;
    expect(performance.now() - started).toBeLessThan(1000);
    expect(err).toBeInstanceOf(HostError);
    expect(err).toMatchObject({ kind: 'closed', maybeExecuted: false });
    // Before: without the command's name and how often it was sent.
    expect((err as Error).message).toBe(
      'write slba 1 nlb 1 (sent once): controller closed while the command waited to be ' +
        'sent again (not sent again)',
    );
    expect(target.ioCommands).toBe(1);
  });

  it('refuses a delay longer than what is left of the command timeout, naming it', async () => {
    const { target, ns } = await setup(
      { crdt: [600, 0, 0], ioStatus: fail(SC.WRITE_FAULT | CRD1, 1) }, // 60 s
      { ioTimeoutMs: 2000 },
    );
    const started = performance.now();
    const err = await ns.write(1, randomBytes(512)).catch((e: unknown) => e);
    expect(performance.now() - started).toBeLessThan(500);
    expect(err).toBeInstanceOf(NvmeStatusError);
    expect((err as NvmeStatusError).statusName).toBe('WRITE_FAULT');
    expect((err as Error).message).toBe(
      'write slba 1 nlb 1 (not sent again: the controller asks to wait 60000 ms before ' +
        'sending it again, more than the 2000 ms left of its ioTimeoutMs (2000 ms); raise ' +
        'ioTimeoutMs to have such delays waited out): NVMe status WRITE_FAULT (0xa80)',
    );
    expect(target.ioCommands).toBe(1);
  });

  it('counts the delays waited out toward the command timeout', async () => {
    const { target, ns } = await setup(
      { crdt: [4, 0, 0], ioStatus: fail(SC.NS_NOT_READY | CRD1, 5) }, // 400 ms each time
      { ioTimeoutMs: 1000 },
    );
    const err = await ns.read(0, 1).catch((e: unknown) => e);
    // 400 + 400 ms waited out; a third 400 ms would pass 1000 ms.
    expect((err as Error).message).toBe(
      'read slba 0 nlb 1 (sent again 2 times) (not sent again: the controller asks to wait ' +
        '400 ms before sending it again, more than the 200 ms left of its ioTimeoutMs ' +
        '(1000 ms); raise ioTimeoutMs to have such delays waited out): NVMe status ' +
        'NS_NOT_READY (0x882)',
    );
    expect(target.ioCommands).toBe(3);
  });

  it('does not ask for ACRE from a controller without CRDT', async () => {
    const { target } = await setup();
    expect(target.hostBehavior).toEqual([]);
  });
});

// Before: a read in flight when its connection dropped failed with the transport error,
// though the controller reconnected a moment later; Linux requeues it and sends it again
// once the controller is live (nvme_cancel_request, nvme_decide_disposition). A write is
// still not sent again: its lost copy may land after the reconnect (see the write above).
describe('a command answered with ANA Transition, on one controller', () => {
  // The ANA log read after the status says change, and the association is lost in the
  // same chunk that completes that read (a PDU of no known type after it), with no
  // reconnect: the controller went dead before the command began to wait for its group.
  // Before: it waited out its whole ioTimeoutMs all the same (for good with Infinity),
  // then failed saying the controller was still reconnecting.
  it('fails at once when the controller went dead before the wait began', async () => {
    let lies = 1;
    const junk = Buffer.from([0xff, 0, 8, 0, 8, 0, 0, 0]); // type 0xFF, hlen 8, plen 8
    const { ns, ctrl } = await setup(
      {
        ana: 0x0f, // change
        ioStatus: (op) => (op === IO.WRITE ? SC.ANA_TRANSITION : 0),
        afterAnaLog: () => (lies-- > 0 ? junk : null),
      },
      { ioTimeoutMs: 4000 },
      51120,
    );
    const started = performance.now();
    const err = await ns.write(0, randomBytes(512)).catch((e: unknown) => e);
    expect(ctrl.state).toBe('dead');
    expect(err).toBeInstanceOf(HostError);
    expect(err).toMatchObject({ kind: 'not-connected' });
    expect((err as Error).message).toMatch(
      /^controller is dead: .+; it lost its association while the command waited for its ANA group to leave change, and reconnects no more \(not sent again\): check the connection to the target, reconnect\(\) the controller, then send it again$/,
    );
    // Not its 4 s ioTimeoutMs: nothing was left to wait for.
    expect(performance.now() - started).toBeLessThan(2000);
  });

  // The group back, as the log read after the ANA change event says, and the association
  // lost in the chunk that completes that read: the write goes out again once the
  // controller is live, held meanwhile. Before: held past its timeout, it said it "was
  // not sent", as if no attempt had reached the target (one had, and was answered).
  it('says "not sent again" of a write held for a reconnect after its group came back', async () => {
    let reads = 0;
    const junk = Buffer.from([0xff, 0, 8, 0, 8, 0, 0, 0]);
    const { ns, target } = await setup(
      {
        ana: 0x0f,
        ioStatus: (op, n) => (op === IO.WRITE && n === 0 ? SC.ANA_TRANSITION : 0),
        afterAnaLog: () => (reads++ === 1 ? junk : null), // the read after the event
      },
      { ioTimeoutMs: 1000, reconnect: { delayMs: 10_000, lossTimeoutMs: 60_000 } },
    );
    const write = ns.write(0, randomBytes(512)).catch((e: unknown) => e);
    await waitFor(() => reads === 1); // answered ANA Transition; the log says change
    target.setAna(1);
    const err = await write;
    expect(reads).toBe(2);
    expect(err).toMatchObject({ kind: 'not-connected' });
    expect((err as Error).message).toMatch(
      /^controller is recovering: .+; the command waited for it to reconnect until its timeout \(1000 ms\) ran out and was not sent again: check the connection/,
    );
    expect(target.ioCommands).toBe(1);
  });

  // The same loss with reconnect on: the command waits through the reconnect, and the
  // controller is reset each twice ANATT (2 s) the group stays in change on the new
  // association. Before: the wait's reset timer started while there was no association,
  // on the default ANATT (10 s: 20 s), and the new association did not restart it, so no
  // reset came within the 5 s ioTimeoutMs and the write failed saying to raise it.
  it('times the reset for a group stuck in change from the new association after a loss', async () => {
    let lies = 1;
    const junk = Buffer.from([0xff, 0, 8, 0, 8, 0, 0, 0]);
    const resets: string[] = [];
    const { ns } = await setup(
      {
        ana: 0x0f,
        anatt: 1,
        ioStatus: (op) => (op === IO.WRITE ? SC.ANA_TRANSITION : 0),
        afterAnaLog: () => (lies-- > 0 ? junk : null),
      },
      {
        ioTimeoutMs: 5000,
        reconnect: { delayMs: 50, lossTimeoutMs: 60_000 },
        onStateChange: (next, prev, why) => {
          if (prev === 'live' && next === 'connecting') resets.push(why?.message ?? '');
        },
      },
      51130,
    );
    const err = await ns.write(0, randomBytes(512)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NvmeStatusError);
    expect((err as NvmeStatusError).status).toBe(SC.ANA_TRANSITION);
    expect(resets.length).toBeGreaterThanOrEqual(1);
    expect(resets[0]).toMatch(/in change for over twice ANATT \(2000 ms\)/);
    expect((err as Error).message).toMatch(
      /the controller was reset (once|\d+ times) after twice its ANATT \(2000 ms\)/,
    );
  });
});

describe('a command in flight when the association is lost, on one controller', () => {
  const reconnect = { delayMs: 20, lossTimeoutMs: 5000 };
  const holdReads = (op: number, qid: number) => qid > 0 && op === IO.READ;

  it('sends a read again once the controller has reconnected', async () => {
    const states: ControllerState[] = [];
    let holding = true;
    const { target, ns } = await setup(
      { hold: (op, qid) => holding && holdReads(op, qid) },
      { reconnect, onStateChange: (s) => states.push(s) },
    );
    const data = randomBytes(512);
    data.copy(target.memory, 3 * 512);
    const read = ns.read(3, 1);
    await waitFor(() => target.ioCommands === 1);
    holding = false;
    target.dropAll();
    expect((await read).equals(data)).toBe(true);
    expect(target.ioCommands).toBe(2);
    expect(states).toEqual(['connecting', 'live', 'recovering', 'connecting', 'live']);
  });

  it('gives up after 5 resends, saying the earlier attempts may have run', async () => {
    const { target, ns } = await setup({ hold: holdReads }, { reconnect });
    const read = ns.read(0, 1).catch((e: unknown) => e);
    for (let n = 1; n <= 6; n++) {
      await waitFor(() => target.ioCommands === n);
      target.dropAll();
    }
    const err = await read;
    expect(err).toBeInstanceOf(HostError);
    expect(err).toMatchObject({ kind: 'transport', maybeExecuted: true });
    expect(target.ioCommands).toBe(6);
  });

  it('ends a read waiting for the reconnect at once when the controller closes', async () => {
    const { target, ns, ctrl } = await setup(
      { hold: holdReads },
      { reconnect: { delayMs: 10_000, lossTimeoutMs: 60_000 } },
    );
    const read = ns.read(0, 1).catch((e: unknown) => e);
    await waitFor(() => target.ioCommands === 1);
    target.dropAll();
    await waitFor(() => ctrl.state === 'recovering');
    const started = performance.now();
    await ctrl.close(100);
    const err = await read;
    expect(performance.now() - started).toBeLessThan(1000);
    expect(err).toMatchObject({ kind: 'closed', maybeExecuted: true });
    expect((err as Error).message).toBe(
      'read slba 0 nlb 1 (sent once): controller closed while the command waited to be sent ' +
        'again (not sent again); an earlier attempt may have been executed',
    );
  });

  it('ends a read waiting for the reconnect when the controller gives up', async () => {
    const { target, ns, ctrl } = await setup(
      { hold: holdReads },
      { reconnect: { delayMs: 20, lossTimeoutMs: 200 } },
    );
    const read = ns.read(0, 1).catch((e: unknown) => e);
    await waitFor(() => target.ioCommands === 1);
    await target.stop(); // connections dropped, and no new ones
    const err = await read;
    expect(ctrl.state).toBe('dead');
    expect(err).toMatchObject({ kind: 'not-connected', maybeExecuted: true });
    expect((err as Error).message).toMatch(
      /^read slba 0 nlb 1 \(sent once\): controller is dead: .*; an earlier attempt may have been executed$/,
    );
  });
});

// Before: a write in flight when close() gave up waiting for it failed with only "queue 1
// closed", not saying it may have landed; and one that timed out meanwhile, or that lost
// a controller which reconnects no more, was told to read its blocks back "once the
// controller is live again", which it never is by itself then.
describe('a write that may have landed tells what to do, by where its controller is', () => {
  const holdWrites = (op: number, qid: number) => qid > 0 && op === IO.WRITE;
  const doubt =
    'it may have been executed, and is not sent again: the target may still apply it, even ' +
    'after a newer write to the same blocks (its lost controller lives on there until its ' +
    'keep-alive timeout), so ';
  const after = ' read those blocks back to see what they hold, or write them again';

  it('in flight when close() gives up draining it', async () => {
    const { target, ns, ctrl } = await setup({ hold: holdWrites });
    const write = ns.write(0, Buffer.alloc(512, 1)).catch((e: unknown) => e);
    await waitFor(() => target.ioCommands === 1);
    await ctrl.close(100);
    const err = await write;
    expect(err).toMatchObject({ kind: 'closed', maybeExecuted: true });
    expect((err as Error).message).toBe(
      `write slba 0 nlb 1: queue 1 closed with the command in flight; ${doubt}once connected again (the controller was closed)${after}`,
    );
  });

  // Before: 'queue 1 closed', not saying it was never sent (nor which command it was).
  it('never sent when close() gives up draining the one ahead of it', async () => {
    const { target, ns, ctrl } = await setup({ hold: holdWrites }, { queueSize: 2 }, 53800);
    const first = ns.write(0, Buffer.alloc(512, 1)).catch((e: unknown) => e);
    const second = ns.write(1, Buffer.alloc(512, 2)).catch((e: unknown) => e);
    await waitFor(() => target.ioCommands === 1);
    expect(ctrl.ioQueueLoad).toEqual([{ inFlight: 1, queued: 1 }]);
    await ctrl.close(100);
    const sent = (await first) as HostError;
    expect(sent).toMatchObject({ kind: 'closed', maybeExecuted: true });
    expect(sent.message).toBe(
      `write slba 0 nlb 1: queue 1 closed with the command in flight; ${doubt}once connected again (the controller was closed)${after}`,
    );
    const never = (await second) as HostError;
    expect(never).toMatchObject({ kind: 'closed', maybeExecuted: false });
    expect(never.message).toBe(
      'write slba 1 nlb 1: queue 1 closed before the command was sent (never sent: the target did not get it)',
    );
    expect(target.ioCommands).toBe(1);
  });

  it('timing out while close() drains it', async () => {
    const { target, ns, ctrl } = await setup({ hold: holdWrites }, { ioTimeoutMs: 200 });
    const write = ns.write(0, Buffer.alloc(512, 1)).catch((e: unknown) => e);
    await waitFor(() => target.ioCommands === 1);
    await ctrl.close(5000);
    const err = await write;
    expect(err).toMatchObject({ kind: 'timeout', maybeExecuted: true });
    expect((err as Error).message).toMatch(
      /^write slba 0 nlb 1: queue 1: command 0x[0-9a-f]+, write \(opcode 0x1\), timed out after 200 ms; /,
    );
    expect((err as Error).message).toContain(
      `${doubt}once connected again (the controller was closed)${after}`,
    );
  });

  it('lost with a controller that reconnects no more by itself', async () => {
    const { target, ns, ctrl } = await setup({ hold: holdWrites });
    const write = ns.write(0, Buffer.alloc(512, 1)).catch((e: unknown) => e);
    await waitFor(() => target.ioCommands === 1);
    target.dropAll();
    const err = await write;
    expect(ctrl.state).toBe('dead');
    expect(err).toMatchObject({ kind: 'transport', maybeExecuted: true });
    expect((err as Error).message).toContain(
      `${doubt}once the controller is reconnected (it reconnects no more by itself: reconnect())${after}`,
    );
  });

  it('lost with a controller that reconnects by itself', async () => {
    const { target, ns } = await setup(
      { hold: holdWrites },
      { reconnect: { delayMs: 20, lossTimeoutMs: 5000 } },
    );
    const write = ns.write(0, Buffer.alloc(512, 1)).catch((e: unknown) => e);
    await waitFor(() => target.ioCommands === 1);
    target.dropAll();
    expect(((await write) as Error).message).toContain(
      `${doubt}once the controller is live again${after}`,
    );
  });
});
