/**
 * The alert pass over a file system that stops answering (a hung NFS server, a stuck
 * FUSE daemon). The fault is real where it can be: a FUSE mount whose server stops
 * replying (helpers/hung-mount.ts), so statfs and stat really block in the thread pool.
 * A backing-file check cannot be hung that way without a served file on the mount, so
 * its slowness is made at the CollectorSources seam (`backing`), which lies outside the
 * collector and the alert engine under test. Everything else is real: InputCollector,
 * the default rules, AlertEngine and SQLite, with a fake clock for the rules.
 */
import fsp from 'node:fs/promises';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Alert } from '../../../contract/events.js';
import { AlertEngine } from '../../../engine/src/events/alert-engine.js';
import { EventStore } from '../../../engine/src/events/event-store.js';
import { InputCollector, type CollectorSources } from '../../../engine/src/events/inputs.js';
import { makedev } from '../../../engine/src/events/mounts.js';
import { DEFAULT_THRESHOLDS, defaultRules } from '../../../engine/src/events/rules.js';
import { openDatabase, type Db } from '../../../engine/src/persistence/db.js';
import { tempDir } from '../../helpers/engine.js';
import { fileVolumesConfig, idleStats } from '../../helpers/file-volumes.js';
import { hungMount, hungMountUnavailable } from '../../helpers/hung-mount.js';
import { until } from '../../helpers/wait.js';

const NQN = 'nqn.2026-01.com.example:vol1';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:0c8f4c36-5ab4-4d2e-9f3c-1b0e1c3d5a71';
const ANSWER_MS = 300;
const unavailable = hungMountUnavailable();
if (unavailable) console.warn(`hung-mount alert tests skipped: ${unavailable}`);

let db: Db;
const cleanups: (() => unknown)[] = [];
beforeEach(() => {
  db = openDatabase(':memory:').db;
});
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

type Backing = Awaited<ReturnType<NonNullable<CollectorSources['backing']>>>;
const ok = (): Promise<Backing> => Promise.resolve({ state: 'ok', fd: 3 });

/** The real statfs and stat, with the calls started and those still out. */
function countingFs() {
  const started: string[] = [];
  const out = new Map<string, number>();
  const counted =
    <T>(name: string, call: (p: string) => Promise<T>) =>
    (p: string) => {
      started.push(`${name} ${p}`);
      out.set(p, (out.get(p) ?? 0) + 1);
      return call(p).finally(() => out.set(p, out.get(p)! - 1));
    };
  return {
    fs: {
      statfs: counted('statfs', (p) => fsp.statfs(p)),
      stat: counted('stat', (p) => fsp.stat(p)),
    },
    started,
    /** How many calls at or below `dir` are out. */
    outUnder: (dir: string) =>
      [...out].filter(([p]) => p === dir || p.startsWith(`${dir}/`)).reduce((a, [, n]) => a + n, 0),
  };
}

/** A directory made for one test and removed after it (a mount on it first). */
function testRoot(): string {
  const root = tempDir();
  cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
  fs.mkdirSync(path.join(root, 'data'));
  return root;
}

/**
 * The collector over file volumes at `paths` (namespaces 1…), all live, one host
 * connected to the subsystem while `connected` holds one; the rules on a fake clock.
 */
function node(
  dataDir: string,
  paths: string[],
  o: {
    backing: (nsid: number) => Promise<Backing>;
    fs?: CollectorSources['fs'];
    mountinfo?: CollectorSources['mountinfo'];
  },
) {
  const cfg = fileVolumesConfig(NQN, paths, [HOST]);

  const connected = [{ kind: 'io' as const, subnqn: NQN, hostnqn: HOST }];
  let now = 1_000_000;
  const collector = new InputCollector({
    dataDir,
    target: {
      listControllers: () => connected,
      namespaceStats: idleStats,
    },
    backing: (_nqn, nsid) => o.backing(nsid),
    config: () => cfg,
    events: new EventStore(db),
    now: () => now,
    answerMs: ANSWER_MS,
    ...(o.fs ? { fs: o.fs } : {}),
    ...(o.mountinfo ? { mountinfo: o.mountinfo } : {}),
  });
  const engine = new AlertEngine(
    db,
    defaultRules(),
    // every file system is over the warning level, so each has a capacity alert
    () => ({ ...DEFAULT_THRESHOLDS, capacityWarningPct: 0, capacityCriticalPct: 99.99 }),
    { raised: () => {}, cleared: () => {}, acknowledged: () => {} },
  );
  return {
    connected,
    /** The configured namespaces: remove one to stop watching its path. */
    namespaces: cfg.subsystems[0]!.namespaces,
    now: () => now,
    /** One alert pass `ms` after the last; how long collecting took (real time). */
    async pass(ms = 5_000) {
      now += ms;
      const t0 = performance.now();
      const inputs = await collector.collect();
      const took = performance.now() - t0;
      return { ...engine.evaluate(inputs, now), took, inputs };
    },
    active: (rule: string): Alert[] => engine.store.active(rule),
  };
}

describe.skipIf(unavailable)('a file system that does not answer', () => {
  it('leaves the pass on time, raises its own alert, starts no second call, and clears when it answers', async () => {
    const root = tempDir();
    cleanups.push(() => fs.rmSync(root, { recursive: true, force: true }));
    const dataDir = path.join(root, 'data');
    fs.mkdirSync(dataDir);
    const mnt = path.join(root, 'mnt');
    const m = await hungMount(mnt, 15_000);
    cleanups.unshift(() => m.release());
    m.answer();
    // vol1 beside the data directory; vol2 and vol3 in two directories of the mount
    const paths = [path.join(root, 'vol1.img'), path.join(mnt, 'vol2.img')];
    paths.push(path.join(mnt, 'sub', 'vol3.img'));
    // every file system call the collector starts, and how many are still out
    const started: string[] = [];
    let out = 0;
    const counted =
      <T>(name: string, call: (p: string) => Promise<T>) =>
      (p: string) => {
        started.push(`${name} ${p}`);
        out++;
        return call(p).finally(() => out--);
      };
    const backingCalls: number[] = [];
    const n = node(dataDir, paths, {
      backing: (nsid) => {
        backingCalls.push(nsid);
        return Promise.resolve({ state: 'ok', fd: 3 });
      },
      fs: {
        statfs: counted('statfs', (p) => fsp.statfs(p)),
        stat: counted('stat', (p) => fsp.stat(p)),
      },
    });

    // answering: a capacity alert for the local file system and one for the mount
    await n.pass();
    expect(n.active('capacity').map((a) => a.subject)).toEqual([dataDir, paths[1]]);
    expect(n.active('filesystem.not-answering')).toEqual([]);
    expect(backingCalls.sort()).toEqual([1, 2, 3]);

    // the mount hangs, and the host goes away
    m.hold();
    n.connected.length = 0;
    started.length = 0;
    backingCalls.length = 0;
    const hung = await n.pass();
    expect(hung.took).toBeLessThan(ANSWER_MS + 1_000);
    const [alert] = n.active('filesystem.not-answering');
    expect(alert).toMatchObject({ subject: mnt, severity: 'error' });
    expect(alert!.title).toBe(`File system of ${mnt} does not answer`);
    expect(alert!.message).toContain(
      `The file system holding volume vol1 (namespace 2, ${paths[1]}) and volume vol1 (namespace 3, ${paths[2]}) did not answer within 0.3 s`,
    );
    expect(alert!.message).toContain('check it (`stat -f');
    expect(alert!.message).toContain('clears this alert once it answers');
    // one call went to the mount: the other directory on it and the backing files wait
    const onMount = () => started.filter((c) => c.includes(mnt));
    expect(onMount()).toEqual([`statfs ${mnt}`]);
    expect(out).toBe(1);
    expect(backingCalls).toEqual([1]);
    // what the mount held is kept as last known
    expect(n.active('capacity').map((a) => a.subject)).toEqual([dataDir, paths[1]]);

    // the other alerts still work: the host's grace runs out
    expect(n.active('host.disconnected')).toEqual([]);
    const later = await n.pass(61_000);
    expect(later.took).toBeLessThan(ANSWER_MS + 1_000);
    expect(later.raised.map((a) => a.rule)).toEqual(['host.disconnected']);
    expect(n.active('filesystem.not-answering').map((a) => a.id)).toEqual([alert!.id]);
    // still the one call: none started beside it while it is out
    await n.pass();
    expect(onMount()).toEqual([`statfs ${mnt}`]);
    expect(out).toBe(1);

    // the mount answers: the call returns, the next pass reads it and the alert clears
    m.answer();
    await until(() => out === 0, 5_000);
    const back = await n.pass();
    expect(back.cleared.map((a) => [a.rule, a.subject, a.clearedWhy])).toEqual([
      ['filesystem.not-answering', mnt, 'resolved'],
    ]);
    expect(onMount()).toContain(`statfs ${path.join(mnt, 'sub')}`);
    expect(backingCalls).toContain(2);
    expect(n.active('capacity').map((a) => a.subject)).toEqual([dataDir, paths[1]]);
  }, 20_000);
});

describe.skipIf(unavailable)('a mount that hangs, grouped by the mount table', () => {
  it('blames only the mount made on a directory after the engine read it', async () => {
    const root = testRoot();
    const dataDir = path.join(root, 'data');
    const x = path.join(root, 'vols');
    fs.mkdirSync(x);
    const vol = path.join(x, 'vol1.img');
    const c = countingFs();
    const n = node(dataDir, [vol], { backing: ok, fs: c.fs });
    await n.pass();
    expect(n.active('capacity').map((a) => a.subject)).toEqual([dataDir]);

    // an NFS or FUSE mount appears on the volume's directory, and hangs
    const m = await hungMount(x, 15_000);
    cleanups.unshift(() => m.release());
    // the second pass is where the data directory, last seen on the same device, was blamed
    for (let i = 0; i < 2; i++) {
      c.started.length = 0;
      const p = await n.pass();
      expect(p.took).toBeLessThan(ANSWER_MS + 1_000);
      const alerts = n.active('filesystem.not-answering');
      expect(alerts.map((a) => a.subject)).toEqual([x]);
      expect(alerts[0]!.message).toContain(
        `holding volume vol1 (namespace 1, ${vol}) did not answer`,
      );
      expect(alerts[0]!.message).not.toContain(dataDir);
      // the data directory's file system is still read
      expect(c.started).toContain(`statfs ${dataDir}`);
      expect(n.active('capacity').map((a) => a.subject)).toEqual([dataDir]);
    }
    expect(c.outUnder(x)).toBe(1);
  }, 20_000);

  it('makes one call to a mount that hangs before the first pass, and names all on it', async () => {
    const root = testRoot();
    const dataDir = path.join(root, 'data');
    const mnt = path.join(root, 'mnt');
    const m = await hungMount(mnt, 15_000);
    cleanups.unshift(() => m.release());
    const dirs = ['a', 'b', 'c', 'd'].map((d) => path.join(mnt, d));
    const paths = dirs.map((d) => path.join(d, 'vol.img'));
    const c = countingFs();
    const backingCalls: number[] = [];
    const n = node(dataDir, paths, {
      backing: (nsid) => {
        backingCalls.push(nsid);
        return ok();
      },
      fs: c.fs,
    });

    for (let i = 0; i < 2; i++) {
      const p = await n.pass();
      expect(p.took).toBeLessThan(ANSWER_MS + 1_000);
      // four calls there would take every thread of the pool
      expect(c.outUnder(mnt)).toBe(1);
      expect(c.started.filter((s) => s.includes(mnt))).toEqual([`statfs ${dirs[0]}`]);
      const alerts = n.active('filesystem.not-answering');
      expect(alerts.map((a) => a.subject)).toEqual([dirs[0]]);
      for (const [j, p] of paths.entries())
        expect(alerts[0]!.message).toContain(`volume vol1 (namespace ${j + 1}, ${p})`);
      expect(backingCalls).toEqual([]);
      expect(n.active('capacity').map((a) => a.subject)).toEqual([dataDir]);
    }
  }, 20_000);

  it('says since when the mount has not answered, pass after pass', async () => {
    const root = testRoot();
    const dataDir = path.join(root, 'data');
    const mnt = path.join(root, 'mnt');
    const m = await hungMount(mnt, 15_000);
    cleanups.unshift(() => m.release());
    m.answer();
    const dirs = ['a', 'b'].map((d) => path.join(mnt, d));
    const c = countingFs();
    const n = node(
      dataDir,
      dirs.map((d) => path.join(d, 'vol.img')),
      { backing: ok, fs: c.fs },
    );
    await n.pass();
    m.hold();
    // the filesystem.not-answering alert's data.since, of each one
    const since = async () =>
      (await n.pass()).inputs.notAnswering!.map((a) => [a.subject, a.since]);
    expect(await since()).toEqual([[dirs[0], n.now()]]);
    const stopped = n.now(); // that pass's call of the first directory started then
    expect(await since()).toEqual([[dirs[0], stopped]]);

    // the volume whose call is out goes: the other still waits on that call
    n.namespaces.splice(0, 1);
    expect(await since()).toEqual([[dirs[1], stopped]]);
    expect(await since()).toEqual([[dirs[1], stopped]]);
    expect(c.outUnder(mnt)).toBe(1);
  }, 20_000);
});

describe('a file system call grouped by a given mount table', () => {
  const hangs = new Promise<never>(() => {});
  const use = { blocks: 100, bfree: 50, bavail: 50, bsize: 4096 };

  it('puts a directory reached through a symlink with the mount it answered from', async () => {
    // /srv/vols is a symlink to /nfs/vols: by its path it is on /, by its answer on /nfs
    const mountinfo = () =>
      Promise.resolve(
        '20 1 8:1 / / rw - ext4 /dev/sda1 rw\n50 20 0:50 / /nfs rw - nfs4 srv:/x rw\n',
      );
    let hung = false;
    const calls: string[] = [];
    const n = node('/var/lib/branchsan', ['/srv/vols/vol1.img'], {
      backing: ok,
      mountinfo,
      fs: {
        statfs: (p) => {
          calls.push(p);
          return hung && p === '/srv/vols' ? hangs : Promise.resolve(use);
        },
        stat: (p) => Promise.resolve({ dev: p === '/srv/vols' ? makedev(0, 50) : makedev(8, 1) }),
      },
    });
    await n.pass();
    hung = true;
    await n.pass();
    calls.length = 0;
    await n.pass();
    expect(calls).toEqual(['/var/lib/branchsan']);
    expect(n.active('filesystem.not-answering').map((a) => a.subject)).toEqual(['/srv/vols']);
  });

  it('without a mount table, reads one directory at a time and none while one is out', async () => {
    const calls: string[] = [];
    const n = node('/data', ['/a/vol1.img', '/b/vol2.img'], {
      backing: ok,
      mountinfo: () => Promise.reject(new Error('ENOENT: no /proc')),
      fs: {
        statfs: (p) => {
          calls.push(p);
          return p === '/a' ? hangs : Promise.resolve(use);
        },
        stat: () => Promise.resolve({ dev: 1 }),
      },
    });
    await n.pass();
    expect(calls).toEqual(['/data', '/a']);
    await n.pass();
    expect(calls).toEqual(['/data', '/a']);
    // only the directory called is named: nothing says /b or /data is on its file system
    const alerts = n.active('filesystem.not-answering');
    expect(alerts.map((a) => [a.subject, a.message.includes('/b/')])).toEqual([['/a', false]]);
  });
});

describe('a backing-file check that does not answer', () => {
  it('keeps the backing-file alert, raises its own, starts no second check, and clears', async () => {
    const dataDir = tempDir();
    cleanups.push(() => fs.rmSync(dataDir, { recursive: true, force: true }));
    const vol = path.join(dataDir, '..', 'vol1.img');
    let answer: Promise<Backing> = Promise.resolve({ state: 'moved', fd: 3 });
    let calls = 0;
    const n = node(dataDir, [vol], {
      backing: () => {
        calls++;
        return answer;
      },
    });
    await n.pass();
    expect(n.active('volume.backing-file').map((a) => a.subject)).toEqual([`${NQN}/1`]);

    // its file system stops answering a check of the file
    let done!: (b: Backing) => void;
    answer = new Promise((resolve) => (done = resolve));
    const hung = await n.pass();
    expect(hung.took).toBeLessThan(ANSWER_MS + 1_000);
    expect(hung.cleared).toEqual([]); // the backing-file alert stands
    const [alert] = n.active('filesystem.not-answering');
    expect(alert).toMatchObject({ subject: `${NQN}/1`, severity: 'error' });
    expect(alert!.title).toBe('Backing file of volume vol1 (namespace 1) does not answer');
    expect(alert!.message).toContain(
      `The file system of ${vol}, the backing file of volume vol1 (namespace 1), did not answer`,
    );
    expect(calls).toBe(2);
    const again = await n.pass();
    expect(again.took).toBeLessThan(ANSWER_MS);
    expect(calls).toBe(2); // no second check while the first is out
    expect(n.active('volume.backing-file')).toHaveLength(1);

    // it answers: the next check runs, and both alerts clear
    answer = Promise.resolve({ state: 'ok', fd: 3 });
    done({ state: 'ok', fd: 3 });
    await new Promise((r) => setImmediate(r));
    const back = await n.pass();
    expect(calls).toBe(3);
    expect(back.cleared.map((a) => a.rule).sort()).toEqual([
      'filesystem.not-answering',
      'volume.backing-file',
    ]);
  });
});
