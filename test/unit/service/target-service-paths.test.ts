/**
 * A namespace's path is stored as the absolute path it names, without `..`, `.` or
 * doubled slashes: what target.config shows and what later checks and messages compare
 * is then the path people see in `ls` and `lsblk`; a `..` as the kernel resolves it.
 * Before, /v/x/../a.img was stored as given.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../../../engine/src/persistence/db.js';
import { TargetRuntime } from '../../../engine/src/service/target-runtime.js';
import { TargetService } from '../../../engine/src/service/target-service.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';

const NQN = 'nqn.2026-01.com.example:paths';
const log = createLogger({ sink: { write: () => undefined } });
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe('a namespace path', () => {
  it('is stored normalised', async () => {
    const dir = tempDir('branchsan-paths-');
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    fs.mkdirSync(path.join(dir, 'data'));
    fs.mkdirSync(path.join(dir, 'x'));
    const db = openDatabase(path.join(dir, 'data', 'branchsan.db')).db;
    cleanups.push(() => db.close());
    const rt = new TargetRuntime(log);
    const targets = new TargetService(db, rt, log, path.join(dir, 'data'));
    cleanups.push(async () => (await targets.stop(), await rt.close(0)));
    await targets.restore();
    await targets.createSubsystem({ nqn: NQN, allowAnyHost: true }, 'test');
    const given = `${dir}//x/../a.img`;
    const ns = await targets.addNamespace(
      { nqn: NQN, backend: { kind: 'file', path: given, createSizeBytes: 1 << 20 } },
      'test',
    );
    const want = path.join(dir, 'a.img');
    expect(ns.path).toBe(want);
    expect(targets.config().subsystems[0]!.namespaces[0]!.path).toBe(want);
    expect(fs.statSync(want).size).toBe(1 << 20);

    // `..` after a symbolic link goes up from where the link points, as the kernel opens
    // it: stored as that, not as the shorter path lexically (another file)
    fs.mkdirSync(path.join(dir, 'x', 'y'));
    fs.symlinkSync(path.join(dir, 'x', 'y'), path.join(dir, 'link'));
    const viaLink = await targets.addNamespace(
      {
        nqn: NQN,
        backend: { kind: 'file', path: `${dir}/link/../b.img`, createSizeBytes: 1 << 20 },
      },
      'test',
    );
    const real = path.join(fs.realpathSync(dir), 'x', 'b.img');
    expect(viaLink.path).toBe(real);
    expect(fs.statSync(real).size).toBe(1 << 20);
    expect(fs.existsSync(path.join(dir, 'b.img'))).toBe(false);
  });
});
