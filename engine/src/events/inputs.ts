/**
 * Gathers one AlertInputs snapshot from the live node: connected hosts and namespace
 * counters from the core target, fill levels from statfs, recent unclean restarts
 * from the event log. Whatever cannot be read is left out (a rule then keeps its
 * previous view) rather than reported as healthy.
 *
 * Every file system call has a time limit (answerMs): a hung NFS or FUSE mount would
 * otherwise hold the pass for good, and with it every alert of every volume and host.
 * What did not answer is left out the same way and listed in `notAnswering`.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { TargetConfig } from '../../../contract/api.js';
import { LATE } from '../util/within.js';
import { BoundedCalls } from './bounded-calls.js';
import type { EventStore } from './event-store.js';
import type {
  AlertInputs,
  FilesystemUse,
  ListenerDown,
  NotAnswering,
  OfflineVolume,
  VolumeIo,
} from './rules.js';
import { forgetGone, volumeName } from './rules.js';

/**
 * The part of the core target the collector reads, declared here (the core's Target
 * satisfies it) so that this module depends on no engine layer but persistence.
 */
export interface TargetView {
  listControllers(): { kind: 'io' | 'discovery'; subnqn: string; hostnqn: string }[];
  namespaceStats(subnqn: string, nsid: number): IoStatsSnapshot | undefined;
}

/** Cumulative counters of one namespace (core/stats.ts IoStatsSnapshot). */
export interface IoStatsSnapshot {
  readonly errors: number;
  readonly readOps: number;
  readonly readLatencyUs: number;
  readonly writeOps: number;
  readonly writeLatencyUs: number;
}

export interface CollectorSources {
  dataDir: string;
  target: TargetView;
  /** Whether a file namespace's path still names the file it serves, and its fd. */
  backing?(
    subnqn: string,
    nsid: number,
  ): Promise<{ state: 'ok' | 'deleted' | 'moved'; fd: number } | undefined>;
  /** Whether a namespace's I/O threads failed and new ones have not taken over yet. */
  ioThreadsDown?(subnqn: string, nsid: number): boolean | undefined;
  config(): TargetConfig;
  /** Sockets the engine should listen on and cannot now. */
  listenersDown?(): ListenerDown[];
  events: EventStore;
  now(): number;
  /** The capacity check's file system calls (default: node:fs/promises). */
  fs?: {
    statfs(dir: string): Promise<{ blocks: number; bfree: number; bavail: number; bsize: number }>;
    stat(dir: string): Promise<{ dev: number }>;
  };
  /** How long one file system call may take before it counts as not answering (FS_ANSWER_MS). */
  answerMs?: number;
}

/**
 * How long a file system call of the alert pass may take: a local disk answers in
 * microseconds, a merely slow network mount well within this. The statfs of every
 * directory runs first, then the backing-file checks of the volumes whose directory
 * answered, so a pass waits this long on a hung mount once, twice when only a file on
 * it hangs; the next pass starts 5 s after it ends (EventsService.start).
 */
export const FS_ANSWER_MS = 3_000;

const DAY = 24 * 3600_000;
/** How far back failures of a volume's I/O threads count (ioThreadsRule). */
export const IO_THREADS_WINDOW_MS = 3600_000;

/**
 * Event types of a namespace's storage I/O threads, recorded by the target service:
 * they failed, new ones could not start, new ones took over. The data of each carries
 * the namespace's `nqn`, `nsid` and `nguid` (a namespace added later under the same
 * nsid has another); a failure's also its `reason`.
 */
export const IO_THREADS_FAILED = 'target.namespace.io-threads-failed';
export const IO_THREADS_START_FAILED = 'target.namespace.io-threads-start-failed';
export const IO_THREADS_RESTARTED = 'target.namespace.io-threads-restarted';

/** A file volume whose path is checked against the file it serves (`backing`). */
interface BackingCheck {
  v: VolumeIo;
  nqn: string;
  nsid: number;
}

/** One watched directory this round: how full its file system is; LATE: it did not answer. */
type DirReading = { dev: number; usedPct: number; availBytes: number } | typeof LATE | undefined;

export class InputCollector {
  private readonly lastHist = new Map<string, Float64Array>();
  private readonly calls: BoundedCalls;
  private readonly fs: NonNullable<CollectorSources['fs']>;
  /** The device of each watched directory as last read: one of a hung device is not called. */
  private readonly devOf = new Map<string, number>();

  constructor(private readonly src: CollectorSources) {
    this.calls = new BoundedCalls(src.answerMs ?? FS_ANSWER_MS, () => src.now());
    this.fs = src.fs ?? fs;
  }

  async collect(): Promise<AlertInputs> {
    const cfg = this.src.config();
    const ns = this.namespaces(cfg);
    const inputs: AlertInputs = {
      subsystems: cfg.subsystems.map((s) => ({
        nqn: s.nqn,
        hosts: s.hosts,
        allowAnyHost: s.allowAnyHost,
      })),
      connections: this.src.target
        .listControllers()
        .filter((c) => c.kind === 'io')
        .map((c) => ({ subnqn: c.subnqn, hostnqn: c.hostnqn })),
      volumes: ns.volumes,
      offline: ns.offline,
      uncleanRestarts: this.src.events
        .ofType('engine.unclean-restart', this.src.now() - DAY)
        .map((e) => ({ eventId: e.id, ts: e.ts })),
      ioThreadFailures: this.ioThreadFailures(cfg),
    };
    if (this.src.listenersDown) inputs.listenersDown = this.src.listenersDown();
    const watched = this.watchedFilesystems(cfg);
    inputs.filesystemsWatched = [...watched.keys()];
    const dirs = await this.readDirs(new Set([...watched.values()].map((w) => w.dir)));
    inputs.filesystems = filesystemsOf(watched, dirs);
    const notAnswering = this.dirsNotAnswering(watched, dirs);
    // a volume whose directory does not answer is not checked: the check would only
    // take another pool thread on the same hung mount
    const checks = ns.backingChecks.filter((c) => dirs.get(path.dirname(c.v.path)) !== LATE);
    notAnswering.push(...(await this.checkBacking(checks)));
    inputs.notAnswering = notAnswering;
    return inputs;
  }

  /** IO_THREADS_FAILED events of the window, of the namespaces configured now. */
  private ioThreadFailures(cfg: TargetConfig): AlertInputs['ioThreadFailures'] {
    const nguids = new Map<string, string>();
    for (const s of cfg.subsystems)
      for (const ns of s.namespaces) nguids.set(`${s.nqn}/${ns.nsid}`, ns.nguid);
    return this.src.events
      .ofType(IO_THREADS_FAILED, this.src.now() - IO_THREADS_WINDOW_MS)
      .flatMap((e) => {
        const d = e.data as { nqn?: unknown; nsid?: unknown; nguid?: unknown; reason?: unknown };
        if (typeof d?.nqn !== 'string' || typeof d.nsid !== 'number') return [];
        const subject = `${d.nqn}/${d.nsid}`;
        if (nguids.get(subject) !== d.nguid) return []; // removed, or another namespace now
        const reason = typeof d.reason === 'string' ? d.reason : 'unknown';
        return [{ subject, ts: e.ts, reason }];
      });
  }

  /**
   * One pass over the configured namespaces: the live ones with their counters, the
   * ones the live target lacks (they could not be opened), and the live file volumes
   * whose path is to be checked against the file they serve (checkBacking).
   */
  private namespaces(cfg: TargetConfig): {
    volumes: VolumeIo[];
    offline: OfflineVolume[];
    backingChecks: BackingCheck[];
  } {
    const volumes: VolumeIo[] = [];
    const offline: OfflineVolume[] = [];
    const backingChecks: BackingCheck[] = [];
    for (const s of cfg.subsystems) {
      for (const ns of s.namespaces) {
        const subject = `${s.nqn}/${ns.nsid}`;
        const label = `volume ${volumeName(s.nqn)} (namespace ${ns.nsid})`;
        const st = this.src.target.namespaceStats(s.nqn, ns.nsid);
        if (!st) {
          offline.push({ subject, label, path: ns.path });
          continue;
        }
        const v: VolumeIo = {
          subject,
          label,
          path: ns.path,
          errors: st.errors,
          readOps: st.readOps,
          readLatencyUs: st.readLatencyUs,
          writeOps: st.writeOps,
          writeLatencyUs: st.writeLatencyUs,
        };
        const p99 = this.intervalP99(subject, st);
        if (p99 !== undefined) v.intervalP99Us = p99;
        const down = this.src.ioThreadsDown?.(s.nqn, ns.nsid);
        if (down !== undefined) v.ioThreadsDown = down;
        volumes.push(v);
        if (this.src.backing && ns.backendKind === 'file')
          backingChecks.push({ v, nqn: s.nqn, nsid: ns.nsid });
      }
    }
    // the interval histograms of namespaces that are gone (or offline) go with them
    forgetGone(this.lastHist, volumes);
    return { volumes, offline, backingChecks };
  }

  /**
   * p99 of reads and writes together over the interval since the last snapshot, from
   * the core's log2 histograms when this build has them (linear within a bucket).
   */
  private intervalP99(subject: string, st: IoStatsSnapshot): number | undefined {
    const h = st as unknown as {
      readLatencyHist?: ArrayLike<number>;
      writeLatencyHist?: ArrayLike<number>;
    };
    if (!h.readLatencyHist || !h.writeLatencyHist) return undefined;
    const cur = Float64Array.from(h.readLatencyHist, (n, i) => n + (h.writeLatencyHist![i] ?? 0));
    const prev = this.lastHist.get(subject);
    this.lastHist.set(subject, cur);
    if (!prev || prev.length !== cur.length) return undefined;
    const diff = cur.map((n, i) => n - prev[i]!);
    const total = diff.reduce((a, b) => a + b, 0);
    if (total <= 0 || diff.some((n) => n < 0)) return undefined;
    let rank = total * 0.99;
    for (let b = 0; b < diff.length; b++) {
      if (rank <= diff[b]!) {
        const lo = b === 0 ? 0 : 2 ** (b - 1);
        const hi = b === 0 ? 1 : 2 ** b;
        return lo + (hi - lo) * (rank / diff[b]!);
      }
      rank -= diff[b]!;
    }
    return undefined;
  }

  /** The data directory's filesystem and every file namespace's (block devices have none). */
  private watchedFilesystems(cfg: TargetConfig): Map<string, { label: string; dir: string }> {
    const watch = new Map<string, { label: string; dir: string }>();
    watch.set(this.src.dataDir, {
      label: `the data directory ${this.src.dataDir}`,
      dir: this.src.dataDir,
    });
    for (const s of cfg.subsystems) {
      for (const ns of s.namespaces) {
        if (ns.backendKind !== 'file') continue;
        watch.set(ns.path, {
          label: `volume ${volumeName(s.nqn)} (namespace ${ns.nsid}, ${ns.path})`,
          dir: path.dirname(ns.path),
        });
      }
    }
    return watch;
  }

  /**
   * Sets `backing` of each volume whose check answered in time; returns those whose
   * check did not (or whose earlier check is still out).
   */
  private async checkBacking(checks: BackingCheck[]): Promise<NotAnswering[]> {
    const check = this.src.backing!;
    const late = await Promise.all(
      checks.map(async ({ v, nqn, nsid }) => {
        const key = `backing ${v.subject}`;
        const b = await this.calls.run(key, () => check(nqn, nsid)).catch(() => undefined);
        if (b !== LATE) {
          if (b) {
            v.backing = b.state;
            v.openFile = `/proc/${process.pid}/fd/${b.fd}`;
          }
          return [];
        }
        const since = this.calls.outSince(key) ?? this.src.now();
        const holds = [v.label];
        const limitMs = this.calls.limitMs;
        return [
          {
            subject: v.subject,
            kind: 'backing-file' as const,
            path: v.path,
            holds,
            since,
            limitMs,
          },
        ];
      }),
    );
    return late.flat();
  }

  /**
   * statfs then stat of each directory, the directories last seen on one device one
   * after another: on a hung mount the first call stays out and holds one pool thread,
   * and the other directories on it count as not answering without a call of their own.
   * A device with a call still out from an earlier round is not called at all.
   */
  private async readDirs(dirs: Set<string>): Promise<Map<string, DirReading>> {
    const hungDevs = new Set<number>();
    for (const [dir, dev] of this.devOf) {
      if (this.calls.outSince(`dir ${dir}`) !== undefined) hungDevs.add(dev);
      else if (!dirs.has(dir)) this.devOf.delete(dir); // no longer watched
    }
    const byDev = new Map<number | string, string[]>(); // a directory not read yet alone
    for (const dir of dirs) {
      const k = this.devOf.get(dir) ?? dir;
      byDev.set(k, [...(byDev.get(k) ?? []), dir]);
    }
    const readings = new Map<string, DirReading>();
    const readAll = async ([dev, on]: [number | string, string[]]) => {
      let late = typeof dev === 'number' && hungDevs.has(dev);
      for (const dir of on) {
        const r = late ? LATE : await this.readDir(dir);
        late ||= r === LATE;
        readings.set(dir, r);
      }
    };
    await Promise.all([...byDev].map(readAll));
    return readings;
  }

  /** How full one directory's file system is; undefined when it cannot be read now. */
  private async readDir(dir: string): Promise<DirReading> {
    const got = await this.calls
      .run(`dir ${dir}`, async () => {
        const st = await this.fs.statfs(dir);
        return { st, dev: (await this.fs.stat(dir)).dev };
      })
      .catch(() => undefined);
    if (got === LATE || got === undefined) return got;
    this.devOf.set(dir, got.dev);
    const { blocks, bfree, bavail, bsize } = got.st;
    if (blocks * bsize <= 0) return undefined;
    // used as df shows it: blocks reserved for root count as unavailable
    const used = (blocks - bfree) * bsize;
    const avail = bavail * bsize;
    return { dev: got.dev, usedPct: (100 * used) / (used + avail || 1), availBytes: avail };
  }

  /**
   * The watched directories that did not answer, one entry per device as last seen (a
   * hung mount is one alert, naming every watched path on it), the first directory its
   * subject.
   */
  private dirsNotAnswering(
    watch: Map<string, { label: string; dir: string }>,
    dirs: Map<string, DirReading>,
  ): NotAnswering[] {
    const out = new Map<number | string, NotAnswering>();
    for (const w of watch.values()) {
      if (dirs.get(w.dir) !== LATE) continue;
      const k = this.devOf.get(w.dir) ?? w.dir;
      const since = this.calls.outSince(`dir ${w.dir}`) ?? this.src.now();
      const n = out.get(k);
      if (n) {
        n.holds.push(w.label);
        n.since = Math.min(n.since, since);
        continue;
      }
      const limitMs = this.calls.limitMs;
      const holds = [w.label];
      out.set(k, { subject: w.dir, kind: 'filesystem', path: w.dir, holds, since, limitMs });
    }
    return [...out.values()];
  }
}

/**
 * How full each watched filesystem is, the watched paths grouped by the device their
 * directory is on: the data directory and the volumes beside it are one filesystem,
 * one alert. A path whose directory could not be read now, or did not answer, is left
 * out: the capacity rule keeps what it last knew.
 */
function filesystemsOf(
  watch: Map<string, { label: string; dir: string }>,
  dirs: Map<string, DirReading>,
): FilesystemUse[] {
  type Read = { subject: string; label: string; dev: number; usedPct: number; availBytes: number };
  const byDev = new Map<number, Read[]>();
  for (const [subject, w] of watch) {
    const r = dirs.get(w.dir);
    if (!r || r === LATE) continue;
    byDev.set(r.dev, [...(byDev.get(r.dev) ?? []), { subject, label: w.label, ...r }]);
  }
  // in the order watched: the data directory first
  return [...byDev].map(([dev, on]) => ({
    subject: on[0]!.subject,
    label: on[0]!.label,
    usedPct: on[0]!.usedPct,
    availBytes: on[0]!.availBytes,
    holds: on.map((r) => ({ subject: r.subject, label: r.label })),
    id: `dev ${dev}`,
  }));
}
