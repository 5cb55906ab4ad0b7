/**
 * What run.ts and the benchmark peer (peer.ts) say to each other over the fork() IPC
 * channel. Apart from peer.ts so that importing these never runs the peer's message
 * handler in the parent process.
 */
import type { IoOptions } from '../storage/file.js';
import type { BenchVolume } from './bench-volume.js';

export const BENCH_NQN = 'nqn.2026-01.io.branchsan:bench';

export type PeerRequest =
  { cmd: 'start'; volume: BenchVolume; io?: IoOptions } | { cmd: 'cpu' } | { cmd: 'stop' };
export type PeerReply =
  | { ok: true; nvmePort: number; floorPort: number }
  | { ok: true; cpuUs: number }
  | { ok: false; error: string };
