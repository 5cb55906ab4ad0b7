/**
 * Command timeouts counted from submission: a command held while its controller
 * reconnects, or waiting for a free slot on its queue, keeps the deadline it got when it
 * was submitted. FakeTarget (never answering writes when told) behind a PausableProxy
 * (resume() drops the connections, pause() refuses new ones), on this file's ports
 * 53500..53599.
 */
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { HostError, type ControllerOptions } from '../../../engine/src/host/index.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';
import { portsInTurn, waitFor } from './helpers.js';
import type { FakeTargetOptions } from './fake-target.js';
import { runCleanup } from './multipath-rig.js';
import { outcome, proxiedFake, submitOne } from './proxied-fake.js';

const onNextPort = portsInTurn(53500, 53599);

afterEach(runCleanup);

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const holdWrites = (op: number, qid: number) => qid > 0 && op === IO.WRITE;

/** proxiedFake on this file's ports. */
const rig = (t: FakeTargetOptions = {}, c: Partial<ControllerOptions> = {}) =>
  proxiedFake(t, c, onNextPort);

describe('a command held while its controller reconnects', () => {
  // Before: its timeout started again when it was finally sent, so a write held 1.2 s
  // with ioTimeoutMs 2000 timed out about 3.3 s after it was submitted.
  it('times out by its deadline counted from submission, not from when it was sent', async () => {
    const ioTimeoutMs = 2000;
    const { proxy, ctrl, ns } = await rig(
      { hold: holdWrites },
      { ioTimeoutMs, reconnect: { delayMs: 20, lossTimeoutMs: 60_000 } },
    );
    proxy.resume();
    proxy.pause();
    await waitFor(() => ctrl.state === 'recovering');
    const started = performance.now();
    const write = outcome(ns.write(0, Buffer.alloc(512, 7)), started);
    await sleep(1200);
    expect(ctrl.reconnecting).toBe(true);
    proxy.resume(); // it reconnects; the write is sent, and the target never answers it
    const r = await write;
    expect(r.error).toBeInstanceOf(HostError);
    expect(r.error).toMatchObject({ kind: 'timeout', maybeExecuted: true });
    expect(r.ms).toBeGreaterThan(ioTimeoutMs - 50);
    // Its deadline, plus the queue's timeout scan (ioTimeoutMs / 4) and slack.
    expect(r.ms).toBeLessThan(ioTimeoutMs * 1.5);
  });
});

describe('a command waiting for a free slot on its queue', () => {
  // Before: it waited, with no deadline, until the command ahead of it ended (here, its
  // 20 s timeout tearing the queue down).
  it('fails as a timeout, never sent, once its deadline passes; the queue stays up', async () => {
    const { ctrl, target } = await rig({ hold: holdWrites }, { queueSize: 2 });
    expect(ctrl.ioQueueDepth).toBe(1);
    const write = (slba: number, timeoutMs: number) =>
      submitOne(ctrl, IO.WRITE, slba, timeoutMs).then((d) => d.req);
    const first = write(0, 20_000); // in flight, never answered
    const started = performance.now();
    const second = write(1, 500); // waits for the one slot
    expect(ctrl.ioQueueLoad).toEqual([{ inFlight: 1, queued: 1 }]);
    const ended = await Promise.race([second, sleep(5000).then(() => null)]);
    expect(ended).not.toBeNull();
    const ms = performance.now() - started;
    expect(ended!.error).toMatchObject({ kind: 'timeout', maybeExecuted: false });
    expect(ended!.error!.message).toMatch(
      /queue 1: write \(opcode 0x1\) timed out after 500 ms waiting for a free slot \(all 1 in flight\), never sent: the target did not get it/,
    );
    expect(ms).toBeGreaterThan(450);
    expect(target.ioCommands).toBe(1);
    expect(ctrl.state).toBe('live');
    expect(ctrl.ioQueueLoad).toEqual([{ inFlight: 1, queued: 0 }]);
    target.dropAll();
    expect((await first).error).toMatchObject({ maybeExecuted: true });
  });
});

describe('a command that fails after being sent again', () => {
  const holdReads = (op: number, qid: number) => qid > 0 && op === IO.READ;

  // Before: 'queue 1: command 0x2000 (opcode 0x2) timed out' alone (the last attempt's
  // error, kept as it was since it says it may have been executed): neither which command
  // nor that it had been sent 6 times; after lost connections, the same.
  it('names the command and how many times it was sent, after timeouts', async () => {
    const { ns, target } = await rig(
      { hold: holdReads },
      { ioTimeoutMs: 300, reconnect: { delayMs: 10, lossTimeoutMs: 60_000 } },
    );
    const r = await outcome(ns.read(0, 1), performance.now());
    expect(r.error).toMatchObject({ kind: 'timeout', maybeExecuted: true });
    expect(r.error!.message).toMatch(
      /^read slba 0 nlb 1 \(sent 6 times\): queue 1: command 0x[0-9a-f]+, read \(opcode 0x2\), timed out after 300 ms; .*an earlier attempt may have been executed$/,
    );
    expect(target.ioCommands).toBe(6);
  });

  it('names the command and how many times it was sent, after lost connections', async () => {
    const { ns, target, ctrl } = await rig(
      { hold: holdReads },
      { reconnect: { delayMs: 10, lossTimeoutMs: 60_000 } },
    );
    const read = outcome(ns.read(0, 1), performance.now());
    for (let sent = 1; sent <= 6; sent++) {
      await waitFor(() => target.ioCommands === sent && ctrl.state === 'live', 5000);
      target.dropAll();
    }
    const r = await read;
    expect(r.error).toMatchObject({ kind: 'transport', maybeExecuted: true });
    expect(r.error!.message).toMatch(
      /^read slba 0 nlb 1 \(sent 6 times\): .*queue 1: connection closed by the controller; an earlier attempt may have been executed$/,
    );
  });
});
