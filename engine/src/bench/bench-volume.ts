/**
 * The benchmark's volume as the engine's target serves it: one subsystem, namespace 1
 * over the benchmark file. One place for the peer (peer.ts) and the tests that drive
 * the legs against a target of their own.
 */
import type { TargetRuntime } from '../service/target-runtime.js';
import type { IoOptions } from '../storage/file.js';
import { BENCH_NQN } from './peer-protocol.js';

export async function serveBenchFile(rt: TargetRuntime, file: string, io?: IoOptions) {
  rt.addSubsystem({
    nqn: BENCH_NQN,
    serial: 'BSANBENCH',
    model: 'BranchSAN bench',
    allowAnyHost: true,
    hosts: [],
  });
  await rt.addNamespace(BENCH_NQN, {
    nsid: 1,
    // The benchmark holds this file open three times on purpose (local leg, target,
    // floor): no exclusive lock (storage/file.ts).
    backend: { kind: 'file', path: file, exclusive: false, ...(io ? { io } : {}) },
    nguid: '42' + '0'.repeat(29) + '1',
    uuid: '42000000-0000-4000-8000-000000000001',
    anaGroup: 1,
  });
}
