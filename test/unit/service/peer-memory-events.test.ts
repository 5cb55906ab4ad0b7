/**
 * The event log's view of the connection memory bound: a load swinging over and under
 * the cap, or peers disconnected check after check, must not become an event (and a
 * warning mail) every 250 ms. The recorder is driven with a clock of the test's own.
 */
import { describe, expect, it } from 'vitest';
import {
  MEMORY_OVER_CAP,
  MEMORY_UNDER_CAP,
  PEERS_DISCONNECTED,
  PeerMemoryEvents,
} from '../../../engine/src/service/peer-memory-events.js';
import type { ShedPeer } from '../../../engine/src/transport/tcp/peer-memory.js';
import { until } from '../../helpers/wait.js';

const CAP = 256 << 20;
type Recorded = { type: string; message: string; data?: unknown };

function recorder(floors = { overCapMs: 600_000, disconnectMs: 60_000 }) {
  const got: Recorded[] = [];
  let now = 1_000_000;
  const events = new PeerMemoryEvents(
    (ev) => got.push(ev),
    floors,
    () => now,
  );
  return { got, events, advance: (ms: number) => (now += ms) };
}

const peer = (i: number, reason: ShedPeer['reason'] = 'no-progress'): ShedPeer => ({
  peer: `10.0.0.${i}:4000`,
  owner: {
    hostnqn: `nqn.2026-11.test:host-${i}`,
    subnqn: 'nqn.2026-11.test:vol',
    cntlid: i,
    qid: 1,
  },
  heldBytes: 8 << 20,
  stalledMs: 61_000,
  reason,
});

describe('connection memory events', () => {
  it('records one over-cap and its under-cap per floor, however often the load swings', () => {
    const { got, events, advance } = recorder();
    for (let i = 0; i < 120; i++) {
      // a minute of swings, one each 250 ms check pair
      events.on({ kind: 'tight', heldBytes: CAP + 1, capBytes: CAP });
      advance(250);
      events.on({ kind: 'eased', heldBytes: CAP / 2, capBytes: CAP, tightMs: 250 });
      advance(250);
    }
    expect(got.map((e) => e.type)).toEqual([MEMORY_OVER_CAP, MEMORY_UNDER_CAP]);
    advance(600_000);
    events.on({ kind: 'tight', heldBytes: CAP + 1, capBytes: CAP });
    expect(got.map((e) => e.type)).toEqual([MEMORY_OVER_CAP, MEMORY_UNDER_CAP, MEMORY_OVER_CAP]);
    expect(got[2]!.message).toMatch(
      / It went over the cap 119 more times since the last such event\.$/,
    );
    expect(got[2]!.data).toMatchObject({ swingsBefore: 119 });
  });

  it('gathers the disconnections of a floor into one event, named and counted', async () => {
    let now = 0;
    const got: Recorded[] = [];
    const events = new PeerMemoryEvents(
      (ev) => got.push(ev),
      { overCapMs: 600_000, disconnectMs: 100 },
      () => now,
    );
    events.on({ kind: 'shed', peers: [peer(1)], capBytes: CAP });
    expect(got).toHaveLength(1); // the first at once
    expect(got[0]!.message).toMatch(
      /^Disconnected host nqn\.2026-11\.test:host-1 \(10\.0\.0\.1:4000, I\/O queue 1 of nqn\.2026-11\.test:vol, 8\.0 MiB held\): it took none/,
    );
    // checks 250 ms apart on the guard's clock, here within the floor on ours
    for (let i = 2; i < 10; i++) {
      now += 5;
      events.on({
        kind: 'shed',
        peers: [peer(i, i % 2 ? 'over-cap' : 'no-progress')],
        capBytes: CAP,
      });
    }
    expect(got).toHaveLength(1);
    now += 100;
    await until(() => got.length === 2, 2000, 10);
    expect(got[1]!.type).toBe(PEERS_DISCONNECTED);
    expect(got[1]!.message).toMatch(
      /^Disconnected 8 connections: host nqn\.2026-11\.test:host-2 .*; and 3 more: the node's NVMe\/TCP connections held more than their 256\.0 MiB cap, and they took none/,
    );
    expect(got[1]!.data).toMatchObject({ count: 8 });
    // stop() records what still waits
    events.on({ kind: 'shed', peers: [peer(20)], capBytes: CAP });
    expect(got).toHaveLength(2);
    events.stop();
    expect(got).toHaveLength(3);
  });
});
