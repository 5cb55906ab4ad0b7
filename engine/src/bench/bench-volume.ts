/**
 * The benchmark's volume as the engine's target serves it: one subsystem, namespace 1
 * over the benchmark file or the --device. One place for the peer (peer.ts), the local
 * leg (run.ts) and the tests that drive the legs against a target of their own.
 */
import type { TargetRuntime } from '../service/target-runtime.js';
import type { IoOptions } from '../storage/file.js';
import type { BackendSpec } from '../storage/open.js';
import { BENCH_NQN } from './peer-protocol.js';

/** What a run measures: its own file, or a block device (read-only unless its writes run). */
export type BenchVolume =
  { kind: 'file'; path: string } | { kind: 'block'; path: string; readOnly: boolean };

/**
 * The backend spec every opener of the volume uses. The benchmark holds the volume open
 * three times on purpose (local leg, target, floor): no exclusive lock on a file and no
 * O_EXCL claim on a device (storage/file.ts, block.ts); a device whose writes run is
 * claimed once for the whole run instead (run.ts, claimDevice).
 */
export function benchBackend(v: BenchVolume, io?: IoOptions): BackendSpec {
  const common = { path: v.path, exclusive: false, ...(io ? { io } : {}) };
  return v.kind === 'block'
    ? { kind: 'block', ...common, readOnly: v.readOnly }
    : { kind: 'file', ...common };
}

export async function serveBenchFile(
  rt: TargetRuntime,
  volume: string | BenchVolume,
  io?: IoOptions,
) {
  rt.addSubsystem({
    nqn: BENCH_NQN,
    serial: 'BSANBENCH',
    model: 'BranchSAN bench',
    allowAnyHost: true,
    hosts: [],
  });
  await rt.addNamespace(BENCH_NQN, {
    nsid: 1,
    backend: benchBackend(typeof volume === 'string' ? { kind: 'file', path: volume } : volume, io),
    nguid: '42' + '0'.repeat(29) + '1',
    uuid: '42000000-0000-4000-8000-000000000001',
    anaGroup: 1,
  });
}
