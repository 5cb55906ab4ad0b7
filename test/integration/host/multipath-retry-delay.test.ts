/**
 * Multipath commands waiting out a status's Command Retry Delay (retry rule 4 in
 * multipath.ts) while their path changes under them: the path goes inaccessible, its
 * association is lost, the namespace closes. Two FakeTargets stand in for the nodes:
 * unlike the core Target, they advertise CRDT and answer a chosen command with a status
 * (a write fault with CRD 1: "send it again in CRDT1 × 100 ms").
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import {
  HostError,
  MultipathNamespace,
  NvmeStatusError,
  type MultipathOptions,
  type PathOptions,
  type RetryEvent,
} from '../../../engine/src/host/index.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';
import { DNR, SC } from '../../../engine/src/protocol/status.js';
import { FakeTarget } from './fake-target.js';
import { byName, until } from './multipath-rig.js';

const CRD1 = 1 << 11;
const OPTIMIZED = 1;
const NON_OPTIMIZED = 2;
const INACCESSIBLE = 3;
const BS = 512;

const targets: FakeTarget[] = [];
const namespaces: MultipathNamespace[] = [];
afterEach(async () => {
  for (const mp of namespaces.splice(0)) await mp.close();
  for (const t of targets.splice(0)) await t.stop().catch(() => {});
});

/**
 * A (optimized, CRDT1 `crdtA` × 100 ms) and B (non-optimized). A answers its first
 * `times` I/O commands of opcode `op` with a media error and CRD 1, and runs the rest.
 */
async function startPair(op: number, crdtA = 3, times = 1) {
  let refused = 0;
  const a = await new FakeTarget({
    ana: OPTIMIZED,
    cntlid: 1,
    crdt: [crdtA, 0, 0],
    ioStatus: (o) => {
      if (o !== op || refused >= times) return 0;
      refused++;
      return (op === IO.READ ? SC.READ_ERROR : SC.WRITE_FAULT) | CRD1;
    },
  }).start();
  targets.push(a);
  const b = await new FakeTarget({ ana: NON_OPTIMIZED, cntlid: 2 }).start();
  targets.push(b);
  return { a, b };
}

function pathTo(t: FakeTarget, name: string, extra: Partial<PathOptions> = {}): PathOptions {
  return {
    host: '127.0.0.1',
    port: t.port,
    subnqn: 'nqn.fake',
    name,
    ioQueues: 1,
    kato: 1000, // a 2 s fence
    reconnect: { delayMs: 100, lossTimeoutMs: 60_000 },
    ...extra,
  };
}

async function open(
  a: FakeTarget,
  b: FakeTarget,
  more: Partial<MultipathOptions> = {},
): Promise<{ mp: MultipathNamespace; events: string[] }> {
  const events: string[] = [];
  const mp = await MultipathNamespace.connect({
    nsid: 1,
    paths: [pathTo(a, 'A'), pathTo(b, 'B')],
    onRetry: (ev: RetryEvent) => events.push(`${ev.kind} ${ev.path}`),
    ...more,
  });
  namespaces.push(mp);
  await until('both usable', () => byName(mp, 'A').usable && byName(mp, 'B').usable, 5000);
  return { mp, events };
}

const at = (t: FakeTarget, lba: number) => t.memory.subarray(lba * BS, (lba + 1) * BS);

describe('multipath: a path that stops being usable while a command waits out its retry delay', () => {
  it('sends a read to another path', async () => {
    const { a, b } = await startPair(IO.READ);
    const { mp, events } = await open(a, b);
    const data = randomBytes(BS);
    at(b, 5).set(data);
    const read = mp.read(5, 1);
    await until('the read waits', () => events.includes('again A'), 2000);
    a.setAna(INACCESSIBLE);
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible', 2000);
    expect((await read).equals(data)).toBe(true);
    expect(byName(mp, 'A').io.submitted).toBe(1);
    expect(byName(mp, 'B').io.completed).toBe(1);
  });

  it('fails a write with its status when the path is live but not usable', async () => {
    const { a, b } = await startPair(IO.WRITE);
    const { mp, events } = await open(a, b);
    const write = mp.write(5, randomBytes(BS)).catch((e: unknown) => e);
    await until('the write waits', () => events.includes('again A'), 2000);
    a.setAna(INACCESSIBLE);
    const err = await write;
    expect(err).toBeInstanceOf(NvmeStatusError);
    expect((err as NvmeStatusError).statusName).toBe('WRITE_FAULT');
    expect((err as Error).message).toBe(
      'write slba 5 nlb 1 on A (not sent again: the path stopped being usable, ANA ' +
        "inaccessible, during the status's retry delay, and a write moves to another path " +
        'only on a path status; write it again to send it to a usable path): NVMe status ' +
        'WRITE_FAULT (0xa80)',
    );
    // Never on B: A's controller lives, and the write is not moved off it.
    expect(byName(mp, 'B').io.submitted).toBe(0);
    expect(byName(mp, 'A').io.submitted).toBe(1);
  });

  it('holds a write whose association was lost, and sends it elsewhere only once fenced', async () => {
    const { a, b } = await startPair(IO.WRITE, 5);
    const { mp, events } = await open(a, b);
    const data = randomBytes(BS);
    const write = mp.write(5, data);
    await until('the write waits', () => events.includes('again A'), 2000);
    // A's node goes away for good: its association is lost, and it does not come back.
    const lostAt = performance.now();
    await a.stop();
    await write;
    const landed = performance.now();
    expect(events).toEqual(['again A', 'hold A', 'release A']);
    expect(at(b, 5).equals(data)).toBe(true);
    // The 2 s fence (KATO 1 s rounded up, plus 1 s) ran from the loss.
    expect(landed - lostAt).toBeGreaterThanOrEqual(2000);
  });

  it('fails a waiting command at once when the namespace closes', async () => {
    const { a, b } = await startPair(IO.WRITE, 100); // 10 s
    const { mp, events } = await open(a, b);
    const write = mp.write(5, randomBytes(BS)).catch((e: unknown) => e);
    await until('the write waits', () => events.includes('again A'), 2000);
    const started = performance.now();
    await mp.close();
    const err = await write;
    expect(performance.now() - started).toBeLessThan(2000);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).kind).toBe('closed');
    expect((err as Error).message).toMatch(/closed while it waited to be sent again on A/);
  });
});

// Before: a command waiting out a retry delay counted toward no bound: not maxWaiting, and
// not noPathTimeoutMs, so a controller asking for CRDT 65535 (109 minutes) held a write
// that long, five times over.
describe('multipath: the bounds on waiting out a retry delay', () => {
  it('refuses a delay longer than what is left of noPathTimeoutMs, naming it', async () => {
    const { a, b } = await startPair(IO.WRITE, 600, 2); // 60 s
    const { mp } = await open(a, b, { noPathTimeoutMs: 1000 });
    const started = performance.now();
    const err = await mp.write(5, randomBytes(BS)).catch((e: unknown) => e);
    expect(performance.now() - started).toBeLessThan(500);
    expect(err).toBeInstanceOf(NvmeStatusError);
    expect((err as NvmeStatusError).statusName).toBe('WRITE_FAULT');
    expect((err as Error).message).toMatch(
      /^write slba 5 nlb 1 on A \(not sent again: A asks to wait 60000 ms before sending it again, more than the 1000 ms left of its noPathTimeoutMs \(1000 ms\); raise noPathTimeoutMs/,
    );
    expect(byName(mp, 'A').io.submitted).toBe(1);
    expect(byName(mp, 'B').io.submitted).toBe(0);
  });

  it('counts the delays waited out toward noPathTimeoutMs', async () => {
    const { a, b } = await startPair(IO.WRITE, 4, 5); // 400 ms each time
    const { mp, events } = await open(a, b, { noPathTimeoutMs: 1000 });
    const err = await mp.write(5, randomBytes(BS)).catch((e: unknown) => e);
    // 400 + 400 ms waited out; a third 400 ms would pass 1000 ms. What is left is what the
    // timers took, rounded: 200 when both fired within half a millisecond of their time.
    expect(events).toEqual(['again A', 'again A']);
    expect((err as Error).message).toMatch(
      /^write slba 5 nlb 1 \(sent again 2 times\) on A \(not sent again: A asks to wait 400 ms before sending it again, more than the (1\d\d|200) ms left/,
    );
    expect(byName(mp, 'A').io.submitted).toBe(3);
  });

  it('counts commands waiting out a delay toward maxWaiting', async () => {
    const { a, b } = await startPair(IO.WRITE, 3, 2);
    const { mp } = await open(a, b, { maxWaiting: 1 });
    const first = mp.write(5, randomBytes(BS));
    const second = mp.write(6, randomBytes(BS)).catch((e: unknown) => e);
    const err = await second;
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).kind).toBe('busy');
    expect((err as Error).message).toBe(
      'namespace 1 write slba 6 nlb 1: completed with WRITE_FAULT on A, which asks to wait ' +
        '300 ms before sending it again, and 1 commands already wait (maxWaiting): not sent again',
    );
    expect((err as HostError).cause).toBeInstanceOf(NvmeStatusError);
    await first;
  });
});

// Before: the caller got the bare status of the attempt on B (maybeExecuted not there at
// all), as if the write had had no effect, though its first attempt, on A, may have run.
describe('multipath: a write released from doubt that the other path answers with a status', () => {
  it.each([
    [
      'a status with DNR',
      SC.WRITE_FAULT | DNR,
      {},
      /^write slba 5 nlb 1: NVMe status WRITE_FAULT\|DNR \(0x4280\); an earlier attempt may have been executed$/,
    ],
    [
      'a retry delay it does not wait out',
      SC.WRITE_FAULT | CRD1,
      { noPathTimeoutMs: 1000 },
      /^write slba 5 nlb 1 on B \(not sent again: B asks to wait 60000 ms .*\): NVMe status WRITE_FAULT \(0xa80\); an earlier attempt may have been executed$/,
    ],
  ])('still says it may have been executed: %s', async (_, status, more, message) => {
    // A takes the write and never answers it; B refuses every write with `status`.
    const a = await new FakeTarget({
      ana: OPTIMIZED,
      cntlid: 1,
      hold: (op, qid) => qid > 0 && op === IO.WRITE,
    }).start();
    targets.push(a);
    const b = await new FakeTarget({
      ana: NON_OPTIMIZED,
      cntlid: 2,
      crdt: [600, 0, 0], // 60 s
      ioStatus: (op) => (op === IO.WRITE ? status : 0),
    }).start();
    targets.push(b);
    const events: string[] = [];
    const mp = await MultipathNamespace.connect({
      nsid: 1,
      paths: [pathTo(a, 'A', { ioTimeoutMs: 300 }), pathTo(b, 'B')],
      onRetry: (ev: RetryEvent) => events.push(`${ev.kind} ${ev.path}`),
      ...more,
    });
    namespaces.push(mp);
    await until('both usable', () => byName(mp, 'A').usable && byName(mp, 'B').usable, 5000);
    const write = mp.write(5, randomBytes(BS)).catch((e: unknown) => e);
    await until('the write held', () => events.includes('hold A'), 2000);
    a.o.ana = INACCESSIBLE; // A's next association: the write goes to B once fenced
    const err = await write;
    expect(events).toEqual(['hold A', 'release A']);
    expect(err).toBeInstanceOf(NvmeStatusError);
    expect((err as NvmeStatusError).maybeExecuted).toBe(true);
    expect((err as Error).message).toMatch(message);
    expect(byName(mp, 'B').io.submitted).toBe(1);
  });
});
