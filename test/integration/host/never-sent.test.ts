/**
 * Commands still waiting for a free slot on a queue when it fails were never sent: they
 * say so, naming themselves and the failure, as those close() ends say it, and a
 * controller that holds one for its reconnect says it was not sent (never sent at all),
 * not "not sent again". The in-process FakeTarget (never answering writes) on any free
 * port, behind a PausableProxy (resume() drops the connections, pause() refuses new ones).
 */
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import {
  HostError,
  NvmeController,
  type ControllerOptions,
} from '../../../engine/src/host/index.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';
import { waitFor } from './helpers.js';
import type { FakeTargetOptions } from './fake-target.js';
import { runCleanup } from './multipath-rig.js';
import { outcome, proxiedFake, submitOne } from './proxied-fake.js';

afterEach(runCleanup);

const holdWrites = (op: number, qid: number) => qid > 0 && op === IO.WRITE;
const holdReads = (op: number, qid: number) => qid > 0 && op === IO.READ;
const NEVER_SENT = '(never sent: the target did not get it)';

/** proxiedFake, with `cut`: the connections drop, and new ones are refused until proxy.resume(). */
async function rig(t: FakeTargetOptions, c: Partial<ControllerOptions> = {}) {
  const r = await proxiedFake(t, c);
  const cut = () => {
    r.proxy.resume();
    r.proxy.pause();
  };
  return { ...r, cut };
}

/** A one-block write submitted with the callback API; resolves once it ended. */
const write = (ctrl: NvmeController, slba: number, timeoutMs = -1) =>
  submitOne(ctrl, IO.WRITE, slba, timeoutMs).then((d) => d.req);

// Before: it ended with the queue's failure alone ('127.0.0.1:port queue 1: connection
// closed by the controller', maybeExecuted false), saying neither that it was never sent
// nor which command it was; only close() said so.
describe('a command waiting for a free slot when its queue fails', () => {
  it('says it was never sent, naming itself and the lost connection', async () => {
    const { target, ctrl, cut } = await rig({ hold: holdWrites }, { queueSize: 2 });
    expect(ctrl.ioQueueDepth).toBe(1);
    const first = write(ctrl, 0);
    const second = write(ctrl, 1);
    await waitFor(() => target.ioCommands === 1);
    expect(ctrl.ioQueueLoad).toEqual([{ inFlight: 1, queued: 1 }]);
    cut();
    const sent = (await first).error!;
    expect(sent).toMatchObject({ kind: 'transport', maybeExecuted: true });
    expect(sent.message).toMatch(/^127\.0\.0\.1:\d+ queue 1: connection closed by the controller$/);
    const never = (await second).error!;
    expect(never).toBeInstanceOf(HostError);
    expect(never).toMatchObject({ kind: 'transport', maybeExecuted: false });
    expect(never.message).toMatch(
      /^queue 1 failed before write \(opcode 0x1\) was sent \(never sent: the target did not get it\): 127\.0\.0\.1:\d+ queue 1: connection closed by the controller$/,
    );
    expect(target.ioCommands).toBe(1);
    expect(ctrl.state).toBe('dead');
  });

  it('says it was never sent, naming itself and the command whose timeout failed the queue', async () => {
    const { target, ctrl } = await rig({ hold: holdWrites }, { queueSize: 2 });
    const first = write(ctrl, 0, 100);
    const second = write(ctrl, 1, 20_000);
    const sent = (await first).error!;
    expect(sent).toMatchObject({ kind: 'timeout', maybeExecuted: true });
    const never = (await second).error!;
    expect(never).toMatchObject({ kind: 'transport', maybeExecuted: false });
    expect(never.message).toBe(
      `queue 1 failed before write (opcode 0x1) was sent ${NEVER_SENT}: ${sent.message}; queue torn down`,
    );
    expect(target.ioCommands).toBe(1);
  });

  it('through a namespace, says so too when its controller does not reconnect', async () => {
    const { target, ns, cut } = await rig({ hold: holdWrites }, { queueSize: 2 });
    const first = outcome(ns.write(0, Buffer.alloc(512, 1)), 0);
    const second = outcome(ns.write(1, Buffer.alloc(512, 2)), 0);
    await waitFor(() => target.ioCommands === 1);
    cut();
    expect((await first).error).toMatchObject({ kind: 'transport', maybeExecuted: true });
    const never = (await second).error!;
    expect(never).toMatchObject({ kind: 'transport', maybeExecuted: false });
    expect(never.message).toMatch(
      /^queue 1 failed before write \(opcode 0x1\) was sent \(never sent: the target did not get it\): /,
    );
  });
});

// Before: held for the reconnect as a command sent before, since it comes back like one
// from the namespace, it said it 'was not sent again' (or, on close(), that it 'waited to
// be sent again (not sent again)'), though it was never sent at all.
describe('a write that waited for a free slot when its queue failed, held for the reconnect', () => {
  const reconnect = { delayMs: 50, lossTimeoutMs: 60_000 };

  it('says it was not sent when its timeout runs out first', async () => {
    const { target, ctrl, ns, cut } = await rig(
      { hold: holdWrites },
      { queueSize: 2, ioTimeoutMs: 600, reconnect },
    );
    const started = performance.now();
    const first = outcome(ns.write(0, Buffer.alloc(512, 1)), started);
    const second = outcome(ns.write(1, Buffer.alloc(512, 2)), started);
    await waitFor(() => target.ioCommands === 1);
    cut();
    expect((await first).error).toMatchObject({ kind: 'transport', maybeExecuted: true });
    const r = await second;
    expect(ctrl.reconnecting).toBe(true);
    expect(r.error).toMatchObject({ kind: 'not-connected', maybeExecuted: false });
    expect(r.error!.message).toMatch(
      /; the command waited for it to reconnect until its timeout \(600 ms\) ran out and was not sent: check the connection to the target, then send it again$/,
    );
    // Its deadline counted from its submission, as for one never sent.
    expect(r.ms).toBeGreaterThan(550);
    expect(r.ms).toBeLessThan(1000);
    expect(target.ioCommands).toBe(1);
  });

  it('says it was never sent when the controller closes', async () => {
    const { target, ctrl, ns, cut } = await rig({ hold: holdWrites }, { queueSize: 2, reconnect });
    const first = outcome(ns.write(0, Buffer.alloc(512, 1)), 0);
    const second = outcome(ns.write(1, Buffer.alloc(512, 2)), 0);
    await waitFor(() => target.ioCommands === 1);
    cut();
    await first;
    await waitFor(() => ctrl.state === 'recovering');
    await ctrl.close(0);
    const r = await second;
    expect(r.error).toMatchObject({ kind: 'closed', maybeExecuted: false });
    expect(r.error!.message).toBe(
      'write slba 1 nlb 1: controller closed while the command waited for it to reconnect (never sent)',
    );
  });

  // Unchanged: a read sent once, lost with its connection, held again.
  it('while a read sent before says it was not sent again', async () => {
    const { target, ns, cut } = await rig({ hold: holdReads }, { ioTimeoutMs: 600, reconnect });
    const read = outcome(ns.read(0, 1), 0);
    await waitFor(() => target.ioCommands === 1);
    cut();
    const r = await read;
    expect(r.error).toMatchObject({ kind: 'not-connected', maybeExecuted: true });
    expect(r.error!.message).toMatch(
      /^read slba 0 nlb 1 \(sent once\): .*ran out and was not sent again: .*; an earlier attempt may have been executed$/,
    );
  });
});
