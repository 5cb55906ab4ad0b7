import type { Alert, SystemStatus } from '../../../../contract/api.js';

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
    cpuLatency: { mode: 'when-busy', held: false, unavailable: null, noEffect: null },
    ...overrides,
  };
}

/** An active alert of the engine (an unclean restart unless overridden). */
export function alert(overrides: Partial<Alert> = {}): Alert {
  return {
    id: 7,
    rule: 'engine.unclean-restart',
    subject: 'event 41',
    severity: 'warning',
    title: 'Engine restarted after an unexpected stop',
    message: 'The storage engine restarted after an unexpected stop.',
    raisedAt: Date.UTC(2026, 10, 27, 3, 0, 0),
    clearedAt: null,
    ackedAt: null,
    ackedBy: null,
    ...overrides,
  };
}

/** A volume whose storage threads failed and are not replaced yet (critical). */
export function threadsDownAlert(overrides: Partial<Alert> = {}): Alert {
  return alert({
    id: 9,
    rule: 'volume.io-threads',
    subject: 'nqn.2026-01.com.example:vol1/1',
    severity: 'critical',
    title: 'Volume vol1 (namespace 1) is down: its storage threads failed',
    message: 'No new threads serve it yet, so its I/O fails and hosts keep retrying.',
    ...overrides,
  });
}
