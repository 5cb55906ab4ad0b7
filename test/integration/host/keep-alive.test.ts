/**
 * Keep Alive gets through whatever else the admin queue holds: slow admin commands
 * filling every other slot (FakeTarget holding them unanswered).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { NvmeController } from '../../../engine/src/host/index.js';
import { ADMIN, LID } from '../../../engine/src/protocol/opcodes.js';
import { waitFor } from './helpers.js';
import { FakeTarget } from './fake-target.js';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const f of cleanups.splice(0).reverse()) await f().catch(() => {});
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('keep-alive', () => {
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
