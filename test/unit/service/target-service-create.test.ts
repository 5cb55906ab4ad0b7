/**
 * A namespace add that creates its file, cut short by the engine's death (kill -9, a
 * crash, a power cut) between making the file and storing the change: the next start
 * removes the file while it is still as created. Before, it stayed, in no namespace,
 * and the same add tried again was refused with "already exists".
 *
 * The death is played in process: the runtime's add creates the file for real and then
 * never returns, and the service and runtime are then dropped as a dead process's
 * are; a new service and runtime start on the same database, as the engine restarts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { TargetRuntime } from '../../../engine/src/service/target-runtime.js';
import { TargetService } from '../../../engine/src/service/target-service.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';
import { until } from '../../helpers/wait.js';

const NQN = 'nqn.2026-01.com.example:create';
const SIZE = 1 << 20;
const log = createLogger({ sink: { write: () => undefined } });
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A target service as the engine starts one; `dead`: one whose process died (not stopped). */
function start(db: Db, dataDir: string, rt = new TargetRuntime(log), dead = false) {
  const targets = new TargetService(db, rt, log, dataDir);
  cleanups.push(async () => {
    if (!dead) await targets.stop(); // a dead one's change never ends
    await rt.close(0);
  });
  return targets;
}

/** A runtime whose add creates (and opens) the backend, and then the process "dies". */
function dyingRuntime(created: () => void): TargetRuntime {
  const rt = new TargetRuntime(log);
  const add = rt.addNamespace.bind(rt);
  rt.addNamespace = async (nqn, spec) => {
    await add(nqn, spec);
    created();
    return new Promise<never>(() => undefined);
  };
  return rt;
}

/** The engine died during a namespace add that created `file`: its database and file. */
async function diedWhileCreating(file: string): Promise<{ db: Db; dataDir: string }> {
  const dir = tempDir('branchsan-create-');
  const dataDir = path.join(dir, 'data');
  fs.mkdirSync(dataDir);
  const db = openDatabase(path.join(dataDir, 'branchsan.db')).db;
  cleanups.push(() => db.close());
  let made = false;
  const before = start(
    db,
    dataDir,
    dyingRuntime(() => (made = true)),
    true,
  );
  await before.restore();
  await before.createSubsystem({ nqn: NQN, allowAnyHost: true }, 'test');
  void before.addNamespace(
    { nqn: NQN, backend: { kind: 'file', path: file, createSizeBytes: SIZE } },
    'test',
  );
  await until(() => made, 10_000);
  expect(fs.statSync(file).size).toBe(SIZE);
  return { db, dataDir };
}

const eventsOf = (db: Db) =>
  db
    .prepare("SELECT severity, message FROM events WHERE type = 'target.namespace.create-undone'")
    .all() as { severity: string; message: string }[];

describe('a namespace add cut short after creating its file', () => {
  it('the next start removes the file, and the same add works again', async () => {
    const file = path.join(tempDir('branchsan-vols-'), 'vol.img');
    const { db, dataDir } = await diedWhileCreating(file);
    const after = start(db, dataDir);
    await after.restore();
    expect(fs.existsSync(file)).toBe(false);
    expect(eventsOf(db)).toEqual([
      { severity: 'info', message: expect.stringContaining(`${file} for namespace 1 of ${NQN}`) },
    ]);
    const ns = await after.addNamespace(
      { nqn: NQN, backend: { kind: 'file', path: file, createSizeBytes: SIZE } },
      'test',
    );
    expect(ns.sizeBytes).toBe(SIZE);
    expect(after.config().subsystems[0]!.namespaces.map((n) => n.path)).toEqual([file]);
  });

  it('a file written since is left where it is, and an event says what to do with it', async () => {
    const file = path.join(tempDir('branchsan-vols-'), 'vol.img');
    const { db, dataDir } = await diedWhileCreating(file);
    fs.writeFileSync(file, Buffer.alloc(4096, 1), { flag: 'r+' });
    const after = start(db, dataDir);
    await after.restore();
    expect(fs.statSync(file).size).toBe(SIZE);
    expect(eventsOf(db)).toEqual([
      { severity: 'warning', message: expect.stringContaining('was left as it is') },
    ]);
    // the note is gone: a start after that one leaves the file alone, silently
    const again = start(db, dataDir);
    await again.restore();
    expect(eventsOf(db)).toHaveLength(1);
  });
});
