/**
 * One ANA group per volume: a group has one state for all its namespaces, so a volume
 * whose storage is out (its group in 'change') must not hold another volume's I/O.
 * New volumes get the lowest free group of the node (across subsystems); volumes stored
 * sharing one (every volume was added in group 1 before) get their own at the next start,
 * before any host connects. Real service, runtime and SQLite, memory volumes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { TargetRuntime } from '../../../engine/src/service/target-runtime.js';
import { TargetService } from '../../../engine/src/service/target-service.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';

const A = 'nqn.2026-01.com.example:ana-a';
const B = 'nqn.2026-01.com.example:ana-b';
const log = createLogger({ sink: { write: () => undefined } });
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function database(): { db: Db; dataDir: string } {
  const dataDir = path.join(tempDir('branchsan-ana-groups-'), 'data');
  fs.mkdirSync(dataDir);
  const db = openDatabase(path.join(dataDir, 'branchsan.db')).db;
  cleanups.push(() => db.close());
  return { db, dataDir };
}

/** A target service started as the engine starts one (restore), on `db`. */
async function start(db: Db, dataDir: string, rt = new TargetRuntime(log)) {
  const targets = new TargetService(db, rt, log, dataDir);
  cleanups.push(async () => {
    await targets.stop();
    await rt.close(0);
  });
  await targets.restore();
  return { targets, rt };
}

const memory = (nqn: string) => ({ nqn, backend: { kind: 'memory' as const, sizeBytes: 1 << 20 } });

/** Each namespace's ANA group, stored and live, as `nqn#nsid`. */
function groups(targets: TargetService, rt: TargetRuntime) {
  const stored: Record<string, number> = {};
  for (const s of targets.config().subsystems)
    for (const n of s.namespaces) stored[`${s.nqn}#${n.nsid}`] = n.anaGroup;
  const live: Record<string, number> = {};
  for (const s of rt.target.subsystemList())
    for (const n of s.namespaces.values()) live[`${s.nqn}#${n.nsid}`] = n.anagrpid;
  return { stored, live };
}

describe('ANA groups of volumes', () => {
  // Before: every namespace was added in group 1.
  it('gives each new volume a group of its own, across subsystems', async () => {
    const { db, dataDir } = database();
    const { targets, rt } = await start(db, dataDir);
    for (const nqn of [A, B]) await targets.createSubsystem({ nqn, allowAnyHost: true }, 'test');
    await targets.addNamespace(memory(A), 'test');
    await targets.addNamespace(memory(B), 'test');
    await targets.addNamespace(memory(A), 'test');
    const want = { [`${A}#1`]: 1, [`${B}#1`]: 2, [`${A}#2`]: 3 };
    expect(groups(targets, rt)).toEqual({ stored: want, live: want });
    // a group freed by a removed volume is taken again
    await targets.removeNamespace(B, 1, 'test');
    await targets.addNamespace(memory(B), 'test');
    expect(groups(targets, rt).stored[`${B}#1`]).toBe(2);
  });

  it('refuses a volume when every group the node reports is in use, saying what to do', async () => {
    const { db, dataDir } = database();
    const { targets } = await start(db, dataDir, new TargetRuntime(log, { maxAnaGroups: 2 }));
    await targets.createSubsystem({ nqn: A, allowAnyHost: true }, 'test');
    await targets.addNamespace(memory(A), 'test');
    await targets.addNamespace(memory(A), 'test');
    await expect(targets.addNamespace(memory(A), 'test')).rejects.toMatchObject({
      message: expect.stringContaining('all 2 ANA groups this node reports are in use'),
      hint: 'Remove a volume that is no longer used, then add this one again.',
    });
    expect(targets.config().subsystems[0]!.namespaces).toHaveLength(2);
  });

  it('gives stored volumes that share a group their own at the next start, and says so', async () => {
    const { db, dataDir } = database();
    const first = await start(db, dataDir);
    for (const nqn of [A, B])
      await first.targets.createSubsystem({ nqn, allowAnyHost: true }, 'test');
    await first.targets.addNamespace(memory(A), 'test');
    await first.targets.addNamespace(memory(A), 'test');
    await first.targets.addNamespace(memory(B), 'test');
    // as an engine from before stored them: all in group 1
    db.prepare('UPDATE namespaces SET ana_group = 1').run();
    await first.targets.stop();
    await first.rt.close(0);

    const { targets, rt } = await start(db, dataDir);
    const want = { [`${A}#1`]: 1, [`${A}#2`]: 2, [`${B}#1`]: 3 };
    expect(groups(targets, rt)).toEqual({ stored: want, live: want });
    const said = db
      .prepare("SELECT message FROM events WHERE type = 'target.namespace.ana-group' ORDER BY id")
      .all() as { message: string }[];
    expect(said.map((e) => e.message)).toEqual([
      `Namespace 2 of ${A} has ANA group 2 of its own from this start on (it shared group 1), so that an outage of another volume's storage cannot hold its I/O. Hosts see the new group when they connect; nothing to do.`,
      `Namespace 1 of ${B} has ANA group 3 of its own from this start on (it shared group 1), so that an outage of another volume's storage cannot hold its I/O. Hosts see the new group when they connect; nothing to do.`,
    ]);
  });
});
