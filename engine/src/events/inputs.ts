/**
 * Gathers one AlertInputs snapshot from the live node: connected hosts and namespace
 * counters from the core target, fill levels from statfs, recent unclean restarts
 * from the event log. Whatever cannot be read is left out (a rule then keeps its
 * previous view) rather than reported as healthy.
 *
 * Every file system call has a time limit (answerMs): a hung NFS or FUSE mount would
 * otherwise hold the pass for good, and with it every alert of every volume and host.
 * What did not answer is left out the same way and listed in `notAnswering`. The calls
 * are grouped by the mount they touch (MountCalls), so a hung mount costs one pool thread
 * and blames only what is on it.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { TargetConfig } from '../../../contract/api.js';
import { BoundedCalls } from '../util/within.js';
import { MountCalls, type MountAnswer } from './bounded-calls.js';
import type { EventStore } from './event-store.js';
import type {
  AlertInputs,
  FilesystemUse,
  ListenerDown,
  MetricsEndpointDown,
  NotAnswering,
  OfflineVolume,
  VolumeIo,
} from './rules.js';
import { MountTable } from './mounts.js';
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
  /** Why the Prometheus endpoint, turned on, serves nothing. */
  metricsEndpointDown?(): MetricsEndpointDown[];
  /** Why an attached namespace is not served: its device went away (see OfflineVolume.gone). */
  storageGone?(nqn: string, nsid: number): string | undefined;
  /** Why a configured namespace that opened is not served (see OfflineVolume.refused). */
  refusedBacking?(nqn: string, nsid: number): string | undefined;
  events: EventStore;
  now(): number;
  /** The capacity check's file system calls (default: node:fs/promises). */
  fs?: {
    statfs(dir: string): Promise<{ blocks: number; bfree: number; bavail: number; bsize: number }>;
    stat(dir: string): Promise<{ dev: number }>;
  };
  /** How long one file system call may take before it counts as not answering (FS_ANSWER_MS). */
  answerMs?: number;
  /** The mount table, read once a pass (default: /proc/self/mountinfo; procfs, it does not hang). */
  mountinfo?(): Promise<string>;
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

/** How full a watched directory's file system is; undefined when it cannot be read. */
type DirUse = { dev: number; usedPct: number; availBytes: number } | undefined;

/** One watched directory this round: how it answered, or since when its file system has not. */
type DirReading = MountAnswer<DirUse> | undefined;

/**
 * The file system a watched directory is on (MountCalls' fsKey, undefined: not known),
 * and the mount its path leads to as written.
 */
interface DirFs {
  fsKey: string | undefined;
  mount?: string;
}

const isLate = (r: DirReading): r is { lateSince: number } => r !== undefined && 'lateSince' in r;

export class InputCollector {
  private readonly lastHist = new Map<string, Float64Array>();
  private readonly calls: BoundedCalls;
  /**
   * Apart, so that a file system where statfs answers and only file operations hang (a
   * FUSE daemon) still has its capacity read: it costs a pool thread for each kind.
   */
  private readonly dirCalls: MountCalls;
  private readonly backingCalls: MountCalls;
  private readonly fs: NonNullable<CollectorSources['fs']>;
  /**
   * Each watched directory's device as its last answer gave it, and the mount its path
   * was on then: when they differ, a symlink leads off that mount (see fileSystems).
   */
  private readonly seenOn = new Map<string, { mount: string; dev: number }>();

  constructor(private readonly src: CollectorSources) {
    this.calls = new BoundedCalls(src.answerMs ?? FS_ANSWER_MS, () => src.now());
    this.dirCalls = new MountCalls(this.calls);
    this.backingCalls = new MountCalls(this.calls);
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
    if (this.src.metricsEndpointDown) inputs.metricsEndpoint = this.src.metricsEndpointDown();
    const watched = this.watchedFilesystems(cfg);
    inputs.filesystemsWatched = [...watched.keys()];
    const fsOf = await this.fileSystems(new Set([...watched.values()].map((w) => w.dir)));
    const dirs = await this.readDirs(fsOf);
    inputs.filesystems = filesystemsOf(watched, dirs);
    const notAnswering = this.dirsNotAnswering(watched, dirs, fsOf);
    // only a volume whose directory answered is checked: on a hung mount the check would
    // take another pool thread
    const checks = ns.backingChecks.filter((c) => {
      const r = dirs.get(path.dirname(c.v.path));
      return r !== undefined && 'answer' in r;
    });
    notAnswering.push(...(await this.checkBacking(checks, fsOf)));
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
          const refused = this.src.refusedBacking?.(s.nqn, ns.nsid);
          offline.push({ subject, label, path: ns.path, ...(refused ? { refused } : {}) });
          continue;
        }
        const gone = this.src.storageGone?.(s.nqn, ns.nsid);
        if (gone) {
          offline.push({ subject, label, path: ns.path, gone });
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
   * check did not, or was not made because one is still out on the same file system
   * (MountCalls: a FUSE mount whose file operations hang holds one pool thread).
   */
  private async checkBacking(
    checks: BackingCheck[],
    fsOf: Map<string, DirFs>,
  ): Promise<NotAnswering[]> {
    const check = this.src.backing!;
    const answers = await this.backingCalls.run(
      checks.map(({ v, nqn, nsid }) => ({
        key: `backing ${v.subject}`,
        fsKey: fsOf.get(path.dirname(v.path))?.fsKey,
        call: () => check(nqn, nsid),
      })),
    );
    const late: NotAnswering[] = [];
    for (const { v } of checks) {
      const a = answers.get(`backing ${v.subject}`);
      if (a && 'answer' in a && a.answer) {
        v.backing = a.answer.state;
        v.openFile = `/proc/${process.pid}/fd/${a.answer.fd}`;
      } else if (a && 'lateSince' in a) {
        const limitMs = this.calls.limitMs;
        const holds = [v.label];
        const since = a.lateSince;
        late.push({
          subject: v.subject,
          kind: 'backing-file',
          path: v.path,
          holds,
          since,
          limitMs,
        });
      }
    }
    return late;
  }

  /**
   * The file system each directory is on, from the mount table and not from the
   * directory (a hung mount would not answer): the device of the mount its path leads to
   * as written. A symlink in the path is not followed, since that too would touch the
   * file system; once the directory has answered, its own device counts instead while
   * that mount stays, so a directory reached through a symlink onto another mount is
   * grouped with that mount after its first answer (before it, and after the symlink is
   * pointed elsewhere, until it answers again, it is grouped by its path). Without a
   * mount table (not Linux) every file system is unknown (MountCalls: one call at a time).
   */
  private async fileSystems(dirs: Set<string>): Promise<Map<string, DirFs>> {
    const text = await (
      this.src.mountinfo?.() ?? fs.readFile('/proc/self/mountinfo', 'utf8')
    ).catch(() => undefined);
    const table = text === undefined ? undefined : MountTable.parse(text);
    for (const dir of this.seenOn.keys()) if (!dirs.has(dir)) this.seenOn.delete(dir);
    const fsOf = new Map<string, DirFs>();
    for (const dir of dirs) {
      const m = table?.of(dir);
      const seen = this.seenOn.get(dir);
      if (!m) fsOf.set(dir, { fsKey: undefined });
      else
        fsOf.set(dir, { fsKey: `dev ${seen?.mount === m.key ? seen.dev : m.dev}`, mount: m.key });
    }
    return fsOf;
  }

  /** statfs then stat of each directory, grouped by file system (MountCalls). */
  private async readDirs(fsOf: Map<string, DirFs>): Promise<Map<string, DirReading>> {
    const todo = [...fsOf].map(([dir, { fsKey }]) => ({
      key: `dir ${dir}`,
      fsKey,
      call: () => this.readDir(dir),
    }));
    const answers = await this.dirCalls.run(todo);
    const readings = new Map<string, DirReading>();
    for (const [dir, { mount }] of fsOf) {
      const r = answers.get(`dir ${dir}`);
      readings.set(dir, r);
      if (r && 'answer' in r && r.answer && mount)
        this.seenOn.set(dir, { mount, dev: r.answer.dev });
    }
    return readings;
  }

  /** How full one directory's file system is; undefined when it cannot be read now. */
  private async readDir(dir: string): Promise<DirUse> {
    const st = await this.fs.statfs(dir);
    const { dev } = await this.fs.stat(dir);
    const { blocks, bfree, bavail, bsize } = st;
    if (blocks * bsize <= 0) return undefined;
    // used as df shows it: blocks reserved for root count as unavailable
    const used = (blocks - bfree) * bsize;
    const avail = bavail * bsize;
    return { dev, usedPct: (100 * used) / (used + avail || 1), availBytes: avail };
  }

  /**
   * The watched directories that did not answer, one entry per file system (a hung
   * mount is one alert, naming every watched path on it), the first directory its
   * subject, since when the call that is still out there started.
   */
  private dirsNotAnswering(
    watch: Map<string, { label: string; dir: string }>,
    dirs: Map<string, DirReading>,
    fsOf: Map<string, DirFs>,
  ): NotAnswering[] {
    const out = new Map<string, NotAnswering>();
    for (const w of watch.values()) {
      const r = dirs.get(w.dir);
      if (!isLate(r)) continue;
      const k = fsOf.get(w.dir)?.fsKey ?? w.dir;
      const n = out.get(k);
      if (n) {
        n.holds.push(w.label);
        n.since = Math.min(n.since, r.lateSince);
        continue;
      }
      const limitMs = this.calls.limitMs;
      const holds = [w.label];
      const since = r.lateSince;
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
    if (!r || !('answer' in r) || !r.answer) continue;
    const use = r.answer;
    byDev.set(use.dev, [...(byDev.get(use.dev) ?? []), { subject, label: w.label, ...use }]);
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
