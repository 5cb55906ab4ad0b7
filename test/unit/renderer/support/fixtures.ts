import type { SystemStatus } from '../../../../contract/api.js';

export function systemStatus(overrides: Partial<SystemStatus> = {}): SystemStatus {
  return {
    version: '0.1.0',
    apiVersion: 1,
    nodeId: 'node-7f3a9c',
    hostname: 'branch-sto-a',
    pid: 4242,
    startedAt: Date.UTC(2025, 0, 2, 8, 0, 0),
    uptimeSec: 7385,
    dataDir: '/var/lib/branchsan',
    dbSchemaVersion: 3,
    cpuLatency: { mode: 'when-busy', held: false, unavailable: null },
    ...overrides,
  };
}
