/**
 * The target's ANA log and events as a host reads them over NVMe/TCP: the log's change
 * count (CHGCNT) across namespaces joining and leaving groups, read in pieces the way
 * libnvme reads it (LPO, RAE set, then the header again with RAE clear).
 *
 * Real in-process Targets on 127.0.0.1 with memory backends, driven by the host library.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Target } from '../../engine/src/core/index.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { decodeAnaLog } from '../../engine/src/protocol/logpages.js';
import { LID, NSID_ALL } from '../../engine/src/protocol/opcodes.js';
import { MemoryBackend } from '../../engine/src/storage/memory.js';
import { serveOnLoopback } from '../helpers/target.js';
import { until } from '../helpers/wait.js';

const NQN = 'nqn.2026-01.io.branchsan.test:target-ana';
const NS_CHANGED = 0x00040002;
const ANA_CHANGE = 0x000c0302;

const cleanup: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function addNs(target: Target, nsid: number, anagrpid: number): void {
  target.addNamespace(NQN, {
    nsid,
    backend: new MemoryBackend({ sizeBytes: 1 << 20 }),
    nguid: nsid.toString(16).padStart(32, 'c'),
    anagrpid,
  });
}

/** A target with namespace 1 in group 1 and 2 in group 2, and a host connected to it. */
async function connected() {
  const target = new Target({});
  target.addSubsystem({ nqn: NQN, serial: 'ANA1', model: 'BranchSAN', allowAnyHost: true });
  addNs(target, 1, 1);
  addNs(target, 2, 2);
  const { transport, port } = await serveOnLoopback(target);
  cleanup.push(async () => {
    target.close();
    await transport.close();
  });
  const events: number[] = [];
  const ctrl = await NvmeController.connect({
    host: '127.0.0.1',
    port,
    subnqn: NQN,
    onAsyncEvent: (e) => events.push(e.dw0),
  });
  cleanup.push(() => ctrl.close());
  const read = (lpo: number, length: number, rae: boolean) =>
    ctrl.getLogPage({ lid: LID.ANA, nsid: NSID_ALL, lpo, length, rae });
  return { target, ctrl, events, read };
}

describe('ANA log change count', () => {
  // Before: CHGCNT stayed put while namespace 3 joined group 1, so the header read again
  // after the pieces matched the first one, and the pieces (from two logs, group 1's
  // NSID list grown between them) parsed as 'group 3, state 0, NSIDs 0 and 2'.
  it('moves when a namespace joins or leaves a group, so a log read in pieces across it is read again', async () => {
    const { target, events, read } = await connected();
    const first = await read(0, 48, true); // header, group 1 and its one NSID
    addNs(target, 3, 1);
    await read(48, 4096 - 48, true);
    const head = await read(0, 16, false);
    expect(head.readBigUInt64LE(0)).not.toBe(first.readBigUInt64LE(0));

    const joined = decodeAnaLog(await read(0, 4096, false));
    expect(joined.chgcnt).toBe(Number(head.readBigUInt64LE(0)));
    expect(joined.groups.map((g) => [g.grpid, g.chgcnt, g.nsids])).toEqual([
      [1, joined.chgcnt, [1, 3]],
      [2, expect.any(Number), [2]],
    ]);

    target.removeNamespace(NQN, 2);
    const left = decodeAnaLog(await read(0, 4096, false));
    expect(left.chgcnt).toBeGreaterThan(joined.chgcnt);
    expect(left.groups.map((g) => [g.grpid, g.chgcnt, g.nsids])).toEqual([
      [1, joined.chgcnt, [1, 3]],
      [2, left.chgcnt, []],
    ]);

    // The hosts hear of it as namespace changes (their rescan reads the ANA log again),
    // once per change read; no group changed state, so no ANA change event.
    await until(() => events.length === 2, 3000);
    await new Promise((r) => setTimeout(r, 100));
    expect(events).toEqual([NS_CHANGED, NS_CHANGED]);
    expect(events).not.toContain(ANA_CHANGE);
  });
});
