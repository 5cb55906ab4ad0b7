/**
 * A pattern's connections to the benchmark peer: the remote leg's NVMe/TCP controller and
 * the floor's bare TCP connections (without and with backend I/O) where they are measured.
 */
import { connectFloor } from './floor.js';
import type { Pattern, Submit } from './patterns.js';
import { BENCH_NQN } from './peer-protocol.js';
import { connectRemote } from './remote.js';

export interface Legs {
  remote: Submit;
  /** null: not measured for this pattern. */
  floor: Submit | null;
  floorIo: Submit | null;
}

/**
 * Opens the connections `want` names, runs `use` on them, and closes every one that was
 * opened, whichever step fails: one that cannot connect closes those opened before it.
 * (Before, a floor that failed to connect left the NVMe/TCP controller connected, its
 * keep-alive going and its sockets holding the process, until the peer was stopped.)
 */
export async function withLegs<T>(
  ports: { nvmePort: number; floorPort: number },
  p: Pattern,
  want: { floor: boolean; floorIo: boolean },
  use: (legs: Legs) => Promise<T>,
): Promise<T> {
  const opened: { close(): unknown }[] = [];
  try {
    const remote = await connectRemote(ports.nvmePort, BENCH_NQN, p.queues);
    opened.push(remote);
    const floor = want.floor ? await connectFloor(ports.floorPort, p.queues) : null;
    if (floor) opened.push(floor);
    const floorIo = want.floorIo ? await connectFloor(ports.floorPort, p.queues, true) : null;
    if (floorIo) opened.push(floorIo);
    return await use({
      remote: remote.submit,
      floor: floor?.submit ?? null,
      floorIo: floorIo?.submit ?? null,
    });
  } finally {
    for (const c of opened) await c.close();
  }
}
