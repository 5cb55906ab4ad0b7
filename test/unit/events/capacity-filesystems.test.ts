/**
 * Capacity alerts per filesystem, not per watched path: the real InputCollector stats
 * real directories (the data directory, file volumes beside it, one on another
 * filesystem), and the real AlertEngine stores the alerts in SQLite with a fake clock.
 * Also how alerts raised per path by an older version carry over.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Alert } from '../../../contract/events.js';
import { AlertEngine } from '../../../engine/src/events/alert-engine.js';
import { EventStore } from '../../../engine/src/events/event-store.js';
import { InputCollector } from '../../../engine/src/events/inputs.js';
import {
  DEFAULT_THRESHOLDS,
  capacityRule,
  type AlertInputs,
  type FilesystemUse,
} from '../../../engine/src/events/rules.js';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { tempDir } from '../../helpers/engine.js';
import { fileVolumesConfig, idleStats } from '../../helpers/file-volumes.js';

const NQN = 'nqn.2026-01.com.example:vol1';

let db: Db;
let pushed: { kind: string; alert: Alert }[];
const cleanups: string[] = [];

beforeEach(() => {
  db = openDatabase(':memory:').db;
  pushed = [];
});
afterEach(() => {
  for (const d of cleanups.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** Every filesystem this test touches is over the warning level (0 %). */
const engine = (warnPct = 0) =>
  new AlertEngine(
    db,
    [capacityRule()],
    () => ({ ...DEFAULT_THRESHOLDS, capacityWarningPct: warnPct, capacityCriticalPct: 99.99 }),
    {
      raised: (alert) => pushed.push({ kind: 'raised', alert }),
      cleared: (alert) => pushed.push({ kind: 'cleared', alert }),
      acknowledged: (alert) => pushed.push({ kind: 'acked', alert }),
    },
  );

function collector(dataDir: string, volumePaths: string[]): InputCollector {
  const cfg = fileVolumesConfig(NQN, volumePaths);

  return new InputCollector({
    dataDir,
    target: {
      listControllers: () => [],
      namespaceStats: idleStats,
    },
    config: () => cfg,
    events: new EventStore(db),
    now: () => 0,
  });
}

/** A directory on another filesystem than the temporary directory's, if this machine has one. */
function elsewhere(): string | undefined {
  const base = fs.existsSync('/dev/shm') ? '/dev/shm' : undefined;
  if (!base || fs.statSync(base).dev === fs.statSync(tempDir()).dev) return undefined;
  const d = fs.mkdtempSync(path.join(base, 'branchsan-test-'));
  cleanups.push(d);
  return d;
}

describe('capacity alerts per filesystem', () => {
  // Before the fix: one alert (and mail, and webhook) per path, four here.
  it('the data directory and the volumes beside it are one alert naming each', async () => {
    const dataDir = tempDir();
    const vols = [1, 2, 3].map((n) => path.join(dataDir, '..', `vol${n}.img`));
    const other = elsewhere();
    const paths = other ? [...vols, path.join(other, 'far.img')] : vols;
    const e = engine();
    const inputs = await collector(dataDir, paths).collect();
    const { raised } = e.evaluate(inputs, 1_000);
    expect(raised.map((a) => a.subject)).toEqual(other ? [dataDir, paths[3]] : [dataDir]);
    const [a] = raised;
    expect(a!.title).toMatch(
      new RegExp(`^Filesystem of the data directory ${dataDir} and 3 volumes \\d+ % full$`),
    );
    const label = (i: number) => `volume vol1 (namespace ${i + 1}, ${vols[i]})`;
    expect(a!.message).toContain(
      `The filesystem holding the data directory ${dataDir}, ${label(0)}, ${label(1)} and ${label(2)} is `,
    );
    if (other)
      expect(raised[1]!.title).toMatch(
        /^Filesystem of volume vol1 \(namespace 4, .*\) \d+ % full$/,
      );
    // the next rounds: nothing new
    expect(e.evaluate(await collector(dataDir, paths).collect(), 6_000)).toEqual({
      raised: [],
      cleared: [],
    });
  });
});

describe('capacity alerts raised per path by an older version', () => {
  const one = (subject: string, usedPct: number): FilesystemUse => ({
    subject,
    label: subject === '/data' ? 'the data directory /data' : `volume ${subject}`,
    usedPct,
    availBytes: 1e9,
  });
  /** What an older version saw: each path alone. */
  const perPath = (usedPct: number): AlertInputs => ({
    filesystems: ['/data', '/srv/a.img', '/srv/b.img'].map((s) => one(s, usedPct)),
  });
  /** This version: one filesystem holding them all. */
  const grouped = (
    usedPct: number,
    holds = ['/data', '/srv/a.img', '/srv/b.img'],
  ): AlertInputs => ({
    filesystems: [
      {
        ...one(holds[0]!, usedPct),
        holds: holds.map((s) => ({ subject: s, label: one(s, 0).label })),
        id: 'dev 2049',
      },
    ],
    filesystemsWatched: holds,
  });

  it('carry over without a mail, escalate once, and resolve together', () => {
    const before = engine(80);
    expect(before.evaluate(perPath(85), 0).raised).toHaveLength(3);
    pushed = [];
    const after = engine(80); // upgraded: new rule memory, same database
    for (let t = 1; t < 5; t++)
      expect(after.evaluate(grouped(85), t)).toEqual({ raised: [], cleared: [] });
    const up = after.evaluate(grouped(99.995), 5);
    expect(up.cleared.map((a) => a.subject)).toEqual(['/data']);
    expect(up.raised.map((a) => [a.subject, a.severity])).toEqual([['/data', 'critical']]);
    expect(up.raised[0]!.message).toContain(
      'The filesystem holding the data directory /data, volume /srv/a.img and volume /srv/b.img is 99 % full',
    );
    const down = after.evaluate(grouped(50), 6);
    expect(down.cleared.map((a) => a.subject).sort()).toEqual([
      '/data',
      '/srv/a.img',
      '/srv/b.img',
    ]);
    expect(after.store.active()).toEqual([]);
  });

  it("a volume removed from a filesystem still over the limit keeps that filesystem's alert", () => {
    const e = engine(80);
    const [a] = e.evaluate(grouped(85, ['/srv/a.img', '/srv/b.img']), 0).raised;
    expect(a!.title).toBe('Filesystem of volume /srv/a.img and 1 other volume 85 % full');
    // Before: resolved (its path no longer watched) and raised again for /srv/b.img.
    expect(e.evaluate(grouped(85, ['/srv/b.img']), 5)).toEqual({ raised: [], cleared: [] });
    expect(e.evaluate(grouped(50, ['/srv/b.img']), 10).cleared.map((x) => x.id)).toEqual([a!.id]);
  });

  it('names at most ten paths', () => {
    const many = ['/data', ...Array.from({ length: 14 }, (_, i) => `/srv/v${i}.img`)];
    const [a] = engine(80).evaluate(grouped(85, many), 0).raised;
    expect(a!.title).toBe('Filesystem of the data directory /data and 14 volumes 85 % full');
    expect(a!.message).toContain('volume /srv/v8.img and 5 volumes more is 85 % full');
  });
});
