/**
 * Gathers one AlertInputs snapshot from the live node: connected hosts and namespace
 * counters from the core target, fill levels from statfs, recent unclean restarts
 * from the event log. Whatever cannot be read is left out (a rule then keeps its
 * previous view) rather than reported as healthy.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type { TargetConfig } from '../../../contract/api.js';
import type { EventStore } from './event-store.js';
import type { AlertInputs, FilesystemUse, ListenerDown, OfflineVolume, VolumeIo } from './rules.js';
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
}

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

export class InputCollector {
  private readonly lastHist = new Map<string, Float64Array>();

  constructor(private readonly src: CollectorSources) {}

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
    inputs.filesystems = await this.filesystems(watched);
    await Promise.all(ns.backingChecks);
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
   * ones the live target lacks (they could not be opened), and for each live file
   * volume a check of whether its path still names the served file (sets `backing`).
   */
  private namespaces(cfg: TargetConfig): {
    volumes: VolumeIo[];
    offline: OfflineVolume[];
    backingChecks: Promise<void>[];
  } {
    const volumes: VolumeIo[] = [];
    const offline: OfflineVolume[] = [];
    const backingChecks: Promise<void>[] = [];
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
        const check = this.src.backing;
        if (check && ns.backendKind === 'file') {
          backingChecks.push(
            check(s.nqn, ns.nsid).then((b) => {
              if (!b) return;
              v.backing = b.state;
              v.openFile = `/proc/${process.pid}/fd/${b.fd}`;
            }),
          );
        }
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
   * How full each watched filesystem is, the watched paths grouped by the device their
   * directory is on: the data directory and the volumes beside it are one filesystem,
   * one alert. A path whose directory cannot be read now is left out. Both calls run in
   * the thread pool, one of each per path and round: a hung mount holds this round (the
   * next one waits for it), never the event loop.
   */
  private async filesystems(
    watch: Map<string, { label: string; dir: string }>,
  ): Promise<FilesystemUse[]> {
    const read = await Promise.all(
      [...watch].map(async ([subject, w]) => {
        try {
          const [st, dir] = await Promise.all([fs.statfs(w.dir), fs.stat(w.dir)]);
          const total = st.blocks * st.bsize;
          if (total <= 0) return undefined;
          // used as df shows it: blocks reserved for root count as unavailable
          const used = (st.blocks - st.bfree) * st.bsize;
          const avail = st.bavail * st.bsize;
          const usedPct = (100 * used) / (used + avail || 1);
          return { subject, label: w.label, dev: dir.dev, usedPct, availBytes: avail };
        } catch {
          return undefined; // unreadable now: the capacity rule keeps what it last knew
        }
      }),
    );
    const byDev = new Map<number, NonNullable<(typeof read)[number]>[]>();
    for (const r of read) if (r) byDev.set(r.dev, [...(byDev.get(r.dev) ?? []), r]);
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
}
