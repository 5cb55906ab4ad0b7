/**
 * Every refusal of a namespace's disk or file (backing-check.ts) is recorded once as a
 * target.namespace.wrong-backing event, also one that starts on a retry after another
 * failure (the file missing at start, then put back cut short). Before, the retry
 * rounds recorded nothing: only the volume.offline alert showed the refusal, and the
 * event log, which outlives the alert, never had it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { TargetRuntime } from '../../../engine/src/service/target-runtime.js';
import { RETRY_OFFLINE_MS, TargetService } from '../../../engine/src/service/target-service.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';

const NQN = 'nqn.2026-01.com.example:refusals';
const MiB = 1 << 20;
const log = createLogger({ sink: { write: () => undefined } });
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  vi.useRealTimers();
  for (const c of cleanups.splice(0).reverse()) await c();
});

function eventsOf(db: Db, type: string): string[] {
  const rows = db.prepare('SELECT message FROM events WHERE type = ? ORDER BY id').all(type);
  return (rows as { message: string }[]).map((r) => r.message);
}

function service(db: Db, dataDir: string): TargetService {
  const rt = new TargetRuntime(log);
  const targets = new TargetService(db, rt, log, dataDir);
  cleanups.push(async () => (await targets.stop(), await rt.close(0)));
  return targets;
}

/** Once the retry round running has ended: changes wait for it (this one is refused, changing nothing). */
async function roundEnded(targets: TargetService): Promise<void> {
  await expect(targets.createSubsystem({ nqn: NQN }, 'test')).rejects.toThrow('already exists');
}

describe('a refusal of a namespace’s file', () => {
  it('that starts on a retry is recorded as an event, once', async () => {
    const dir = tempDir('branchsan-refusals-');
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const dataDir = path.join(dir, 'data');
    fs.mkdirSync(dataDir);
    const db = openDatabase(path.join(dataDir, 'branchsan.db')).db;
    cleanups.push(() => db.close());
    const file = path.join(dir, 'vol.img');

    const first = service(db, dataDir);
    await first.restore();
    await first.createSubsystem({ nqn: NQN, allowAnyHost: true }, 'test');
    await first.addNamespace(
      { nqn: NQN, nsid: 1, backend: { kind: 'file', path: file, createSizeBytes: 8 * MiB } },
      'test',
    );
    await cleanups.pop()!();

    // missing at the next start: offline for another reason than a wrong file
    fs.renameSync(file, `${file}.bak`);
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const second = service(db, dataDir);
    await second.restore();
    expect(eventsOf(db, 'target.namespace.unavailable')).toHaveLength(1);
    expect(eventsOf(db, 'target.namespace.wrong-backing')).toEqual([]);

    // then put back cut short (a wrong backup): refused by the next rounds
    fs.writeFileSync(file, '');
    fs.truncateSync(file, 4 * MiB);
    for (let round = 0; round < 3; round++) {
      await vi.advanceTimersByTimeAsync(RETRY_OFFLINE_MS);
      await roundEnded(second);
    }
    const refusals = eventsOf(db, 'target.namespace.wrong-backing');
    expect(refusals).toHaveLength(1);
    expect(refusals[0]).toContain(
      `Namespace 1 of ${NQN} is offline: ${file} is ${4 * MiB} bytes, smaller than the ${8 * MiB} bytes namespace 1 of ${NQN} has`,
    );
    expect(second.refusedBacking(NQN, 1)).toContain(`${file} is ${4 * MiB} bytes`);
  });
});
