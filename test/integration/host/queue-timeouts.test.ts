/**
 * A command's own timeout (NvmeRequest.timeoutMs), shorter than its queue's: the queue's
 * one timeout scan runs every quarter of the queue's timeout (at most 1 s), and a
 * command due earlier pulls it in, so the command ends close to its own deadline. The
 * in-process FakeTarget on any free port, never answering writes.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { NvmeController, type ControllerOptions } from '../../../engine/src/host/index.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';
import { FakeTarget, type FakeTargetOptions } from './fake-target.js';
import { submitOne } from './proxied-fake.js';

let target: FakeTarget | null = null;
let ctrl: NvmeController | null = null;

afterEach(async () => {
  target?.dropAll();
  await ctrl?.close(0);
  await target?.stop();
  ctrl = target = null;
});

const holdWrites = (op: number, qid: number) => qid > 0 && op === IO.WRITE;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(t: FakeTargetOptions = {}, c: Partial<ControllerOptions> = {}) {
  target = await new FakeTarget(t).start();
  ctrl = await NvmeController.connect({
    host: '127.0.0.1',
    port: target.port,
    subnqn: 'nqn.fake',
    ...c,
  });
  return { target, ctrl };
}

describe('a command with a timeout of its own shorter than its queue scan period', () => {
  // Before: the queue (ioTimeoutMs 30 s) scanned every 1 s, so a 100 ms write timed out
  // at the next scan: about 1 s after it was submitted here.
  it('times out near its own timeout, not at the queue scan period', async () => {
    const { ctrl } = await setup({ hold: holdWrites });
    expect(ctrl.ioTimeoutMs).toBe(30_000);
    const { req, ms } = await submitOne(ctrl, IO.WRITE, 0, 100);
    expect(req.error).toMatchObject({ kind: 'timeout', maybeExecuted: true });
    expect(req.error!.message).toMatch(/write \(opcode 0x1\), timed out after 100 ms/);
    expect(ms).toBeGreaterThanOrEqual(99);
    // Its deadline plus its slack (max(20 ms, 100 / 4)), and the event loop's lateness.
    expect(ms).toBeLessThan(250);
  });

  it('pulls in the scan again after a scan found nothing late', async () => {
    const { ctrl } = await setup({ hold: holdWrites });
    // Answered at once: the scan it pulled in finds nothing, and the next is 1 s away.
    const read = await submitOne(ctrl, IO.READ, 0, 100);
    expect(read.req.error).toBeNull();
    await sleep(200);
    const { req, ms } = await submitOne(ctrl, IO.WRITE, 0, 150);
    expect(req.error).toMatchObject({ kind: 'timeout', maybeExecuted: true });
    expect(ms).toBeGreaterThanOrEqual(149);
    expect(ms).toBeLessThan(300);
  });

  // Before: about 1 s here too (the scan's period), for a 200 ms timeout.
  it('times out near its own timeout while it waits for a free slot, never sent', async () => {
    const { ctrl, target } = await setup({ hold: holdWrites }, { queueSize: 2 });
    expect(ctrl.ioQueueDepth).toBe(1);
    const first = submitOne(ctrl, IO.WRITE, 0, 20_000); // in flight, never answered
    const { req, ms } = await submitOne(ctrl, IO.WRITE, 1, 200);
    expect(req.error).toMatchObject({ kind: 'timeout', maybeExecuted: false });
    expect(req.error!.message).toMatch(/timed out after 200 ms waiting for a free slot/);
    expect(ms).toBeGreaterThanOrEqual(199);
    expect(ms).toBeLessThan(350);
    expect(target.ioCommands).toBe(1);
    expect(ctrl.state).toBe('live');
    target.dropAll();
    expect((await first).req.error).toMatchObject({ maybeExecuted: true });
  });
});
