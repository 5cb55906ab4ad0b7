/**
 * A target configuration of one subsystem whose namespaces 1… are file volumes at the
 * given paths, and the counters of a namespace that did no I/O: what the alert input
 * collector's tests give it.
 */
import type { TargetConfig } from '../../contract/api.js';

export function fileVolumesConfig(
  nqn: string,
  paths: string[],
  hosts: string[] = [],
): TargetConfig {
  return {
    ports: [],
    subsystems: [
      {
        nqn,
        serial: 's',
        model: 'm',
        allowAnyHost: false,
        hosts,
        namespaces: paths.map((p, i) => ({
          nsid: i + 1,
          backendKind: 'file' as const,
          path: p,
          sizeBytes: 1 << 20,
          blockSize: 512 as const,
          nguid: String(i + 1).padStart(32, '0'),
          uuid: String(i + 1),
          anaGroup: 1,
          io: {},
        })),
      },
    ],
  };
}

export const idleStats = () => ({
  errors: 0,
  readOps: 0,
  readLatencyUs: 0,
  writeOps: 0,
  writeLatencyUs: 0,
});
