/**
 * The alert rules. Each rule looks at one snapshot of the node (AlertInputs) and
 * says which conditions hold now; the AlertEngine turns that into raise and clear.
 * Rules do no I/O and read no clock of their own: the snapshot and `now` are given,
 * so tests drive them with made-up inputs and a fake clock. A rule may keep memory
 * between evaluations (when a host was last seen, the previous error counter); memory
 * that must outlive the process (the hosts watched for disconnection) goes through a
 * store the rule is given.
 */
import type { Alert, Severity } from '../../../contract/events.js';

/** One snapshot of what the rules look at. Every part is optional: a missing part means "unknown", never "all fine". */
export interface AlertInputs {
  /** Subsystems (volumes) that exist, with who may connect. */
  subsystems?: { nqn: string; hosts: string[]; allowAnyHost: boolean }[];
  /** I/O controllers connected now. */
  connections?: { subnqn: string; hostnqn: string }[];
  /** Filesystems to watch: the data directory's and each file-backed namespace's, each once. */
  filesystems?: FilesystemUse[];
  /**
   * Every path watched this round, read or not: one held by none of `filesystems` but
   * listed here could not be read; one listed in neither is no longer watched (its
   * volume was removed or moved). Absent: not known.
   */
  filesystemsWatched?: string[];
  /** Cumulative I/O counters per namespace. */
  volumes?: VolumeIo[];
  /** Configured namespaces the live target lacks: their backend could not be opened. */
  offline?: OfflineVolume[];
  /** engine.unclean-restart events of the recent past. */
  uncleanRestarts?: { eventId: number; ts: number }[];
  /** Failures of namespaces' I/O threads in the recent past (IO_THREADS_FAILED events), oldest first. */
  ioThreadFailures?: { subject: string; ts: number; reason: string }[];
  /** Filled by the mirror once it exists. */
  mirror?: MirrorState[];
  /** Sockets the engine should listen on and cannot (it keeps trying): NVMe/TCP ports, the console. */
  listenersDown?: ListenerDown[];
  /**
   * File system calls of this round that did not answer in time, or whose call of an
   * earlier round is still out: what they were for is left out of `filesystems` and
   * `volumes[].backing`. Absent: not known.
   */
  notAnswering?: NotAnswering[];
  /** Mail and webhook delivery (absent: not known). */
  delivery?: DeliveryState[];
  /** Why the Prometheus endpoint, turned on, serves nothing (none: it works or is off). */
  metricsEndpoint?: MetricsEndpointDown[];
}

/** The Prometheus endpoint is on but refuses every scrape: its token file cannot be used. */
export interface MetricsEndpointDown {
  /** What is wrong with the file and what to run (the secret's UserError, message and hint). */
  problem: string;
  since: number;
}

/** A notification channel with a queue, as the delivery.paused rule sees it. */
export interface DeliveryState {
  channel: 'smtp' | 'webhook';
  /** For people: "Alert e-mail". */
  label: string;
  enabled: boolean;
  /** A delivery has been tried since the engine started. */
  tried: boolean;
  /**
   * The server refused the channel's login, or `cause` (its password file cannot be
   * used): nothing is tried until the settings change.
   */
  paused?: { since: number; reason: string; fix: string; cause?: string };
}

/** A directory or backing file whose file system did not answer (a hung NFS or FUSE mount). */
export interface NotAnswering {
  /** The directory called ("/srv/volumes"), or the volume whose backing-file check hangs. */
  subject: string;
  /** filesystem: statfs and stat of a watched directory; backing-file: a volume's check. */
  kind: 'filesystem' | 'backing-file';
  /** The path called. */
  path: string;
  /** For people, what is there: "the data directory /var/lib/branchsan", "volume vol1 (namespace 1, /mnt/nfs/vol1.img)". */
  holds: string[];
  /** When the call that has not answered started (ms since epoch). */
  since: number;
  /** How long a call may take before it counts as not answering. */
  limitMs: number;
}

export interface ListenerDown {
  /** "nvme-tcp port 1", "console". */
  subject: string;
  kind: 'nvme-tcp' | 'console';
  /** host:port */
  address: string;
  /** What failed and what to do ("Cannot listen … EADDRINUSE. Another program …"). */
  problem: string;
  since: number;
  /** null: not tried again before the engine's next start (the problem says what to fix). */
  retryEverySec: number | null;
}

/** One filesystem holding watched paths. */
export interface FilesystemUse {
  /** A path on it: the first it holds. */
  subject: string;
  /** For people, that path: "the data directory /var/lib/branchsan". */
  label: string;
  usedPct: number;
  availBytes: number;
  /**
   * Every watched path on it, the data directory first when it is there, each with the
   * subject its capacity alert had when alerts were per path (absent: `subject` alone).
   */
  holds?: { subject: string; label: string }[];
  /** Which filesystem it is, while the engine runs (its device number). */
  id?: string;
}

export interface VolumeIo {
  subject: string;
  /** For people: "volume vol1 (namespace 1)". */
  label: string;
  /** The file or device under it, for the hint. */
  path: string;
  errors: number;
  readOps: number;
  readLatencyUs: number;
  writeOps: number;
  writeLatencyUs: number;
  /** p99 latency (µs) over the interval since the previous snapshot, where histograms give it. */
  intervalP99Us?: number;
  /** File volumes: does `path` still name the file being served (FdBackend.backingState)? */
  backing?: 'ok' | 'deleted' | 'moved';
  /** The served file as this process holds it open (/proc/PID/fd/N), for recovery. */
  openFile?: string;
  /** File and block volumes: the I/O threads failed and new ones have not taken over yet. */
  ioThreadsDown?: boolean;
}

export interface OfflineVolume {
  subject: string;
  /** For people: "volume vol1 (namespace 1)". */
  label: string;
  /** The file or device that could not be opened. */
  path: string;
  /**
   * Why it is not served when it opened and is not what the volume was added on
   * (another disk at its /dev name, a file cut short), with what to do.
   */
  refused?: string;
  /**
   * Why it is attached and not served: its device went away under it (FdBackend), with
   * what to do. Not retried: nothing is served from it until the engine restarts or the
   * volume is added again.
   */
  gone?: string;
}

export interface MirrorState {
  volume: string;
  state: 'in-sync' | 'degraded' | 'resyncing' | 'outdated';
  resyncPct?: number;
  witness?: 'connected' | 'lost' | 'none';
}

/** One host the host.disconnected rule watches on one volume. */
export interface WatchedHost {
  subnqn: string;
  hostnqn: string;
  /** How the volume admits it, as last known: on its allow list, or as one of any hosts. */
  admitted: 'listed' | 'any';
  /** When it was last seen connected (ms since epoch). */
  lastSeen: number;
}

/** Where the host rule keeps its watch list across restarts (WatchedHostStore: the database). */
export interface WatchedHostMemory {
  /** The list kept by the previous process; read once, before the first evaluation. */
  load(): WatchedHost[];
  /**
   * Keeps `hosts` as the whole list. A write the disk refuses is not thrown (the rule
   * must keep alerting on a full data disk): it is retried with the next call.
   */
  save(hosts: readonly WatchedHost[]): void;
}

export interface AlertThresholds {
  hostDisconnectedSec: number;
  capacityWarningPct: number;
  capacityCriticalPct: number;
  latencyWarningMs: number;
}

export const DEFAULT_THRESHOLDS: AlertThresholds = {
  hostDisconnectedSec: 60,
  capacityWarningPct: 80,
  capacityCriticalPct: 90,
  latencyWarningMs: 50,
};

/** A condition that holds now. */
export interface Condition {
  subject: string;
  severity: Severity;
  title: string;
  message: string;
  data?: Record<string, unknown>;
}

export interface RuleContext {
  now: number;
  thresholds: AlertThresholds;
  /** This rule's active alerts by subject (lets a rule carry a condition across a restart). */
  active: ReadonlyMap<string, Alert>;
}

export interface Rule {
  readonly id: string;
  /**
   * condition: raised while it holds, cleared when it ends.
   * incident: something that happened once; raised once per subject, cleared by acknowledging it.
   */
  readonly kind: 'condition' | 'incident';
  evaluate(inputs: AlertInputs, ctx: RuleContext): Condition[];
  /**
   * Whether acknowledging this active alert also closes it (the rule then stops
   * watching its subject). Incidents always close on acknowledgement.
   */
  closesOnAck?(a: Alert): boolean;
}

// ---------------------------------------------------------------- wording helpers

/** "vol1" from nqn.2026-01.com.example:vol1; the whole NQN when it has no name part. */
export function volumeName(subnqn: string): string {
  const i = subnqn.lastIndexOf(':');
  return i > 0 && !subnqn.includes(':uuid:') ? subnqn.slice(i + 1) : subnqn;
}

/** "Host esx-01 (nqn…)", or "Host nqn…" when the NQN carries no readable name. */
export function hostLabel(hostnqn: string): string {
  const name = volumeName(hostnqn);
  return name === hostnqn ? `Host ${hostnqn}` : `Host ${name} (${hostnqn})`;
}

export function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} seconds`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m} minutes`;
  return `${Math.round(m / 60)} hours`;
}

function bytes(n: number): string {
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB', 'PB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

// ---------------------------------------------------------------- rules

/**
 * At most this many hosts that only a volume allowing any host admits are watched: each
 * one gone raises an alert that only an acknowledgement closes, so past that many the
 * operator has an unread pile of them; further such hosts are not watched until some are
 * acknowledged. Allow-listed hosts are bounded by the allow lists and always watched.
 */
export const MAX_WATCHED_ANY = 256;

/**
 * A host NQN that had a controller on a volume and has had none for hostDisconnectedSec.
 *
 * A host on the volume's allow list is watched from its first connection until it
 * reconnects or is taken off the list. A volume that allows any host has no list to
 * say which hosts matter: a host only it admits is watched once it has stayed
 * connected for establishedMs (a probe, a scan or a one-off `nvme connect` never is),
 * and its alert closes when acknowledged, the host then forgotten until it connects
 * and stays again. So the rule's memory is bounded by the allow lists and, for the
 * hosts that stay on volumes that allow any, by MAX_WATCHED_ANY, not by every host NQN
 * that ever connected.
 *
 * With `memory` (the database), the watch list outlives the process: a host that was
 * connected when the engine crashed, lost power or was upgraded, and never comes back,
 * is alerted on after hostDisconnectedSec counted from the engine's start, not from when
 * it was last seen. Hosts reconnect by themselves once the target listens again (and
 * after a power cut they may be booting too), so counting from the old time would mail
 * an alert for every host at once, each resolved seconds later; counting from the start
 * gives each the usual grace, and the alert says since when it has been away.
 */
export function hostDisconnectedRule(
  establishedMs = 10 * 60_000,
  memory?: WatchedHostMemory,
): Rule {
  const watched = new Map<string, { admitted: 'listed' | 'any'; lastSeen: number }>();
  const goneSince = new Map<string, number>(); // watched key → first evaluation without a controller
  const connectedSince = new Map<string, number>(); // connected, not on a list, not watched yet
  const fromBefore = new Set<string>(); // watched before this start and not connected since
  let loaded = memory === undefined;
  const load = () => {
    for (const h of memory!.load()) {
      const k = key(h.subnqn, h.hostnqn);
      watched.set(k, { admitted: h.admitted, lastSeen: h.lastSeen });
      fromBefore.add(k);
    }
    loaded = true;
  };
  const save = () =>
    memory?.save(
      [...watched].map(([k, w]) => {
        const [subnqn, hostnqn] = split(k);
        return { subnqn, hostnqn, ...w };
      }),
    );
  const forget = (k: string) => {
    watched.delete(k);
    goneSince.delete(k);
    fromBefore.delete(k);
  };
  const watchedAny = () => [...watched.values()].filter((w) => w.admitted === 'any').length;
  return {
    id: 'host.disconnected',
    kind: 'condition',
    closesOnAck(a) {
      if (watched.get(a.subject)?.admitted !== 'any') return false;
      forget(a.subject);
      save(); // or the next start would watch it again
      return true;
    },
    evaluate(inputs, { now, thresholds, active }) {
      if (!loaded) load();
      if (!inputs.connections) return [...active.values()].map(keep);
      const connected = new Set(inputs.connections.map((c) => key(c.subnqn, c.hostnqn)));
      for (const k of connected) {
        goneSince.delete(k);
        fromBefore.delete(k);
        const w = watched.get(k);
        if (w) {
          w.lastSeen = now;
          continue;
        }
        const admitted = admits(inputs, ...split(k));
        if (admitted === 'listed') {
          watched.set(k, { admitted, lastSeen: now });
          continue;
        }
        if (admitted === undefined) {
          connectedSince.delete(k); // connected, yet no longer admitted: not watched
          continue;
        }
        const since = connectedSince.get(k) ?? now;
        connectedSince.set(k, since);
        if (admitted === 'any' && now - since >= establishedMs && watchedAny() < MAX_WATCHED_ANY) {
          connectedSince.delete(k);
          watched.set(k, { admitted, lastSeen: now });
        }
      }
      for (const k of connectedSince.keys()) if (!connected.has(k)) connectedSince.delete(k);
      const graceMs = thresholds.hostDisconnectedSec * 1000;
      // an alert raised before a restart (by a version that did not store the watch list)
      for (const [k, a] of active) {
        if (!watched.has(k)) watched.set(k, { admitted: 'listed', lastSeen: a.raisedAt - graceMs });
      }
      const out: Condition[] = [];
      for (const [k, w] of [...watched]) {
        const [subnqn, hostnqn] = split(k);
        const admitted = admits(inputs, subnqn, hostnqn);
        if (!admitted) {
          forget(k); // taken off the allow list, or its volume was removed
          continue;
        }
        if (admitted !== 'unknown') w.admitted = admitted; // volumes unknown: as last known
        if (connected.has(k)) continue;
        const was = active.get(k);
        if (w.admitted === 'any' && was?.ackedAt != null) {
          // acknowledged before this rule could close it (just after a restart, or by a
          // version that kept it open): closed now
          forget(k);
          continue;
        }
        // an alert still active has held since before it was raised
        const since = goneSince.get(k) ?? (was ? was.raisedAt - graceMs : now);
        goneSince.set(k, since);
        if (now - since < graceMs) continue;
        out.push(disconnected(subnqn, hostnqn, w, now, since, fromBefore.has(k)));
      }
      save();
      return out;
    },
  };
}

function disconnected(
  subnqn: string,
  hostnqn: string,
  w: { admitted: 'listed' | 'any'; lastSeen: number },
  now: number,
  since: number,
  fromBefore: boolean,
): Condition {
  const vol = volumeName(subnqn);
  const what = fromBefore
    ? `${hostLabel(hostnqn)} has not reconnected to volume ${vol} in the ${duration(now - since)} since the engine started; it was last connected at ${new Date(w.lastSeen).toISOString()}, before the engine stopped. `
    : `${hostLabel(hostnqn)} has been disconnected from volume ${vol} for ${duration(now - since)}. `;
  return {
    subject: key(subnqn, hostnqn),
    severity: 'warning',
    title: `${hostLabel(hostnqn).replace(/ \(.*\)$/, '')} disconnected from ${vol}`,
    message:
      what +
      (w.admitted === 'any'
        ? `Check the host's network link and its NVMe/TCP adapter. Volume ${vol} allows any host, so the engine cannot tell a retired host from a lost one: if this host was retired, acknowledge this alert to close it.`
        : "Check the host's network link and its NVMe/TCP adapter; if the host was retired, remove it from the volume's allowed hosts."),
    data: { subnqn, hostnqn, since, ...(fromBefore ? { lastSeen: w.lastSeen } : {}) },
  };
}

/** An active alert carried into this round unchanged (its input could not be read). */
function keep(a: Alert): Condition {
  return { subject: a.subject, severity: a.severity, title: a.title, message: a.message };
}

const key = (subnqn: string, hostnqn: string) => `${hostnqn} on ${subnqn}`;
const split = (k: string): [string, string] => {
  const i = k.indexOf(' on ');
  return [k.slice(i + 4), k.slice(0, i)];
};

/**
 * How the volume admits the host: on its allow list, as one of any hosts, or not
 * (the volume is gone or the host was taken off); 'unknown' when the volumes are.
 */
function admits(
  inputs: AlertInputs,
  subnqn: string,
  hostnqn: string,
): 'listed' | 'any' | 'unknown' | undefined {
  if (!inputs.subsystems) return 'unknown';
  const s = inputs.subsystems.find((x) => x.nqn === subnqn);
  if (!s) return undefined;
  if (s.hosts.includes(hostnqn)) return 'listed';
  return s.allowAnyHost ? 'any' : undefined;
}

/**
 * A watched filesystem at or above the warning / critical fill level (2 points of
 * hysteresis): one alert per filesystem, naming every watched path on it (the data
 * directory, file volumes), so a full disk is one mail, not one per volume on it.
 *
 * Its subject is a path on it, as when alerts were per path: the one of an alert already
 * active for the filesystem (raised per path by an older version, or for a path since
 * removed), else the first it holds (the data directory when it is there). So an alert
 * carries over an upgrade and a removed volume unchanged; other per-path alerts of the
 * same filesystem left from an older version stand, without a second mail, until the
 * filesystem has room again and they resolve together.
 */
export function capacityRule(): Rule {
  const HYSTERESIS = 2;
  const subjectOf = new Map<string, string>(); // filesystem id → subject of its active alert
  return {
    id: 'capacity',
    kind: 'condition',
    evaluate(inputs, { thresholds, active }) {
      const out: Condition[] = [];
      const done = new Set<string>(); // subjects settled this round
      for (const fs of inputs.filesystems ?? []) {
        const holds = fs.holds ?? [{ subject: fs.subject, label: fs.label }];
        const kept = fs.id === undefined ? undefined : subjectOf.get(fs.id);
        const candidates = new Set([
          ...(kept === undefined ? [] : [kept]),
          ...holds.map((h) => h.subject),
        ]);
        const mine = [...candidates]
          .filter((x) => active.has(x) && !done.has(x))
          .map((x) => active.get(x)!);
        const was = mine[0];
        const subject = was?.subject ?? fs.subject;
        for (const a of mine) done.add(a.subject);
        done.add(subject);
        const crit =
          thresholds.capacityCriticalPct - (was?.severity === 'critical' ? HYSTERESIS : 0);
        const warn = thresholds.capacityWarningPct - (was ? HYSTERESIS : 0);
        const severity: Severity | null =
          fs.usedPct >= crit ? 'critical' : fs.usedPct >= warn ? 'warning' : null;
        if (fs.id !== undefined) {
          if (severity) subjectOf.set(fs.id, subject);
          else subjectOf.delete(fs.id);
        }
        if (!severity) continue; // every alert of this filesystem resolves
        out.push(fillCondition(subject, severity, fs, holds));
        for (const a of mine.slice(1)) out.push(keep(a)); // no second mail
      }
      // A filesystem missing from this snapshot keeps its alert while it is still watched
      // (statfs failed) or nobody said what is watched; one no longer watched (its volume
      // was removed or moved elsewhere) is resolved.
      const watched = inputs.filesystemsWatched && new Set(inputs.filesystemsWatched);
      for (const [subject, a] of active) {
        if (done.has(subject)) continue;
        if (!watched || watched.has(subject)) out.push(keep(a));
      }
      // memory bounded by the filesystems with an alert (or one raised now)
      for (const [id, subject] of subjectOf)
        if (!active.has(subject) && !out.some((c) => c.subject === subject)) subjectOf.delete(id);
      return out;
    },
  };
}

/** At most this many paths are named in one capacity alert; the rest are counted. */
const NAMED_PATHS = 10;

function fillCondition(
  subject: string,
  severity: Severity,
  fs: FilesystemUse,
  holds: { subject: string; label: string }[],
): Condition {
  const pct = Math.floor(fs.usedPct);
  const volumes = (n: number) => `${n} volume${n === 1 ? '' : 's'}`;
  const first = holds[0]!.label;
  const n = holds.length - 1;
  // the data directory comes first when it is there: the rest are volumes
  const title = n
    ? `${first} and ${first.startsWith('volume ') ? `${n} other` : n} volume${n === 1 ? '' : 's'}`
    : first;
  const named = holds.slice(0, NAMED_PATHS).map((h) => h.label);
  const more = holds.length - named.length;
  const list = more > 0 ? `${named.join(', ')} and ${volumes(more)} more` : listed(named);
  return {
    subject,
    severity,
    title: `Filesystem of ${title} ${pct} % full`,
    message:
      `The filesystem holding ${list} is ${pct} % full (${bytes(fs.availBytes)} free). ` +
      'Free space on it or grow it: when it is full, writes to volumes fail and the engine cannot record events.',
    data: {
      usedPct: fs.usedPct,
      availBytes: fs.availBytes,
      paths: holds.slice(0, 100).map((h) => h.subject),
    },
  };
}

/** "a", "a and b", "a, b and c". */
function listed(items: string[]): string {
  return items.length < 2
    ? (items[0] ?? '')
    : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

/** Drops what is remembered of namespaces no longer among `volumes` (rules, inputs). */
export function forgetGone(
  memory: Map<string, unknown>,
  volumes: readonly { subject: string }[],
): void {
  const present = new Set(volumes.map((v) => v.subject));
  for (const subject of memory.keys()) if (!present.has(subject)) memory.delete(subject);
}

/**
 * New I/O errors on a namespace; clears after clearAfterMs without new ones.
 *
 * The rule remembers each namespace's last counter only while the namespace is in the
 * snapshot: one that is gone (removed, or offline: its backend could not be opened)
 * is forgotten, and its alert resolves, as every volume rule's does when its subject
 * vanishes. So the memory is bounded by the namespaces that exist, and a namespace
 * created again under the same NQN and NSID starts from a clean baseline instead of
 * counting its own errors against the old one's counter.
 */
export function ioErrorsRule(clearAfterMs = 5 * 60_000): Rule {
  const last = new Map<string, { errors: number; lastErrorAt?: number; count: number }>();
  return {
    id: 'io.errors',
    kind: 'condition',
    evaluate(inputs, { now, active }) {
      // counters unknown this round: nothing is known to be gone, so nothing is forgotten
      if (!inputs.volumes) return [...active.values()].map(keep);
      forgetGone(last, inputs.volumes);
      const out: Condition[] = [];
      for (const v of inputs.volumes) {
        let prev = last.get(v.subject);
        const was = active.get(v.subject);
        if (!prev || v.errors < prev.errors) {
          // First sight, or counters restarted (namespace re-added): a new baseline. An
          // alert still active (raised before an engine restart, or before the reset)
          // stands until clearAfterMs without new errors, counted from now when the
          // time of the last error was lost with the restart.
          prev = was
            ? { errors: v.errors, count: prev?.count ?? 0, lastErrorAt: prev?.lastErrorAt ?? now }
            : { errors: v.errors, count: 0 };
          last.set(v.subject, prev);
          if (!was) continue;
        }
        if (v.errors > prev.errors) {
          prev.count =
            prev.lastErrorAt === undefined
              ? v.errors - prev.errors
              : prev.count + v.errors - prev.errors;
          prev.lastErrorAt = now;
          prev.errors = v.errors;
        }
        if (prev.lastErrorAt === undefined) continue;
        if (now - prev.lastErrorAt >= clearAfterMs) {
          prev.lastErrorAt = undefined;
          prev.count = 0;
          continue;
        }
        if (was && prev.count === 0) {
          out.push(keep(was)); // carried over a restart, no new errors since
          continue;
        }
        out.push({
          subject: v.subject,
          severity: 'error',
          title: `I/O errors on ${v.label}`,
          message:
            `${cap(v.label)} failed ${prev.count} I/O command${prev.count === 1 ? '' : 's'} sent by hosts. ` +
            `Check the disk or file under it (${v.path || 'memory'}): the kernel log (dmesg) and the disk's SMART status.`,
          data: { errors: v.errors },
        });
      }
      return out;
    },
  };
}

/**
 * Read or write latency above latencyWarningMs for sustainMs. Uses the interval's p99
 * when the inputs carry one, else the mean (latency sum / ops) of the interval.
 *
 * An interval with fewer than minOps commands is too small a sample to tell slow from
 * fast, so it says nothing either way: it neither starts nor ends the sustain time, and
 * an active alert stands. Except when the commands it did complete took far longer than
 * the threshold (together farFactor times it on average): a failing disk completes few
 * commands precisely because each takes seconds, and that is the disk to alert on. An
 * idle interval says nothing either, so a disk that stops completing anything keeps its
 * alert. A new alert is raised by a slow interval only, once slow intervals have held
 * for sustainMs with no stretch longer than sustainMs between two of them: one slow
 * command before an idle hour and one after it (a disk waking from spin-down) are not
 * sustained slow I/O. An active alert ends after sustainMs of fast intervals of minOps
 * commands or more; a volume that stays this quiet keeps it until it is busy again.
 */
export function ioLatencyRule(sustainMs = 30_000, minOps = 20, farFactor = 10): Rule {
  const state = new Map<
    string,
    LatencyCounters & { overSince?: number; underSince?: number; slowAt?: number }
  >(); // slowAt: the end of the last slow interval
  return {
    id: 'io.latency',
    kind: 'condition',
    evaluate(inputs, { now, thresholds, active }) {
      if (!inputs.volumes) return [...active.values()].map(keep);
      forgetGone(state, inputs.volumes); // as io.errors does
      const out: Condition[] = [];
      for (const v of inputs.volumes) {
        const prev = state.get(v.subject);
        const cur = {
          readOps: v.readOps,
          readUs: v.readLatencyUs,
          writeOps: v.writeOps,
          writeUs: v.writeLatencyUs,
          at: now,
        };
        const s = {
          ...cur,
          overSince: prev?.overSince,
          underSince: prev?.underSince,
          slowAt: prev?.slowAt,
        };
        state.set(v.subject, s);
        const was = active.get(v.subject);
        if (!prev || cur.readOps < prev.readOps || cur.writeOps < prev.writeOps) {
          // No interval to measure yet: first sight or counters restarted (an engine
          // restart, a namespace re-added). An alert still active stands, and ends like
          // any other: after sustainMs below the threshold.
          if (was) {
            s.overSince ??= was.raisedAt;
            out.push(keep(was));
          }
          continue;
        }
        const m = measureLatency(prev, cur, v.intervalP99Us, {
          thresholdMs: thresholds.latencyWarningMs,
          minOps,
          farFactor,
        });
        const isActive = was !== undefined;
        if (m?.slow) {
          // a gap without slow intervals longer than the sustain time starts the count again
          if (!isActive && s.slowAt !== undefined && prev.at - s.slowAt > sustainMs)
            s.overSince = undefined;
          s.overSince ??= now;
          s.underSince = undefined;
          s.slowAt = now;
        } else if (m) {
          // fast: the condition ends after the same sustain time
          s.underSince ??= now;
          if (now - s.underSince >= sustainMs || !isActive) s.overSince = undefined;
        } // else too few commands to tell: nothing changes
        if (s.overSince === undefined) continue;
        if (!isActive) {
          if (!m?.slow || now - s.overSince < sustainMs) continue;
        } else if (!m?.slow) {
          out.push(keep(was));
          continue;
        }
        out.push(slowIo(v, m, thresholds.latencyWarningMs));
      }
      return out;
    },
  };
}

/** A namespace's cumulative latency counters, and when they were read. */
interface LatencyCounters {
  readOps: number;
  readUs: number;
  writeOps: number;
  writeUs: number;
  at: number;
}

/** The latency of the interval from `prev` to `cur`; undefined: too few commands to tell. */
function measureLatency(
  prev: LatencyCounters,
  cur: LatencyCounters,
  p99Us: number | undefined,
  o: { thresholdMs: number; minOps: number; farFactor: number },
): LatencyMeasure | undefined {
  const reads = cur.readOps - prev.readOps;
  const writes = cur.writeOps - prev.writeOps;
  const ops = reads + writes;
  const mean = (us: number, n: number) => (n > 0 ? us / n / 1000 : 0);
  if (ops >= o.minOps) {
    const ms =
      p99Us !== undefined
        ? p99Us / 1000
        : Math.max(mean(cur.readUs - prev.readUs, reads), mean(cur.writeUs - prev.writeUs, writes));
    return { ms, how: p99Us !== undefined ? 'p99' : 'mean', slow: ms > o.thresholdMs };
  }
  // few commands: reads and writes together, so that one slow command among a few fast
  // ones of the other kind does not count as the failing disk
  const ms = mean(cur.readUs - prev.readUs + (cur.writeUs - prev.writeUs), ops);
  if (ops === 0 || ms <= o.farFactor * o.thresholdMs) return undefined;
  return { ms, how: 'few', ops, overMs: cur.at - prev.at, slow: true };
}

interface LatencyMeasure {
  ms: number;
  /** p99 or mean of an interval of minOps commands or more; mean of the few completed. */
  how: 'p99' | 'mean' | 'few';
  slow: boolean;
  /** 'few': how many commands completed, over how long. */
  ops?: number;
  overMs?: number;
}

function slowIo(v: VolumeIo, m: LatencyMeasure, thresholdMs: number): Condition {
  const above = `above the ${thresholdMs} ms threshold`;
  const what =
    m.how === 'few'
      ? `${cap(v.label)} answers hosts very slowly: it completed only ${m.ops} command${m.ops === 1 ? '' : 's'} in the last ${duration(m.overMs!)}, taking ${m.ms.toFixed(1)} ms on average, far ${above}. `
      : `${cap(v.label)} answers hosts slowly: ${m.ms.toFixed(1)} ms ${m.how === 'p99' ? '(99th percentile)' : 'on average'}, ${above}. `;
  return {
    subject: v.subject,
    severity: 'warning',
    title: `Slow I/O on ${v.label}`,
    message:
      what +
      `Check the disk under it (${v.path || 'memory'}) for wear or a failing device, and whether another workload saturates it.`,
    data: { latencyMs: m.ms, ...(m.how === 'few' ? { ops: m.ops } : {}) },
  };
}

/**
 * A file volume whose backing file was deleted, renamed or replaced while served. The
 * engine keeps serving the file it has open, but the next start opens the path: a
 * deleted file is then gone for good, a replaced one is another disk under the same
 * identity. Clears once the path names the served file again.
 */
export function backingFileRule(): Rule {
  return {
    id: 'volume.backing-file',
    kind: 'condition',
    evaluate(inputs, { active }) {
      const out: Condition[] = [];
      for (const v of inputs.volumes ?? []) {
        const was = active.get(v.subject);
        if (v.backing === undefined && was) {
          out.push(keep(was)); // not checked this round: the alert stands
        } else if (v.backing === 'deleted') {
          out.push({
            subject: v.subject,
            severity: 'critical',
            title: `The backing file of ${v.label} was deleted`,
            message:
              `${cap(v.label)} is served from ${v.path}, which was deleted while the engine has it open. ` +
              'Its data exists only as long as the engine keeps running: do not stop or restart it yet. ' +
              `Stop the hosts' I/O to this volume, copy the data back as root (cp --sparse=always ${v.openFile ?? '/proc/<engine pid>/fd/<fd>'} '${v.path}'), then restart the engine so it serves the copy.`,
            data: { path: v.path, openFile: v.openFile },
          });
        } else if (v.backing === 'moved') {
          out.push({
            subject: v.subject,
            severity: 'critical',
            title: `The backing file of ${v.label} was moved or replaced`,
            message:
              `${v.path} no longer names the file the engine serves for ${v.label}: it was renamed, or replaced by another file. ` +
              'The engine keeps serving the file it has open, but its next start would open whatever is at that path. ' +
              `Move the file back to ${v.path}; if it was replaced on purpose, remove the namespace and add it again.`,
            data: { path: v.path, openFile: v.openFile },
          });
        }
      }
      return out;
    },
  };
}

/** A configured namespace the engine could not open: hosts cannot reach it. */
export function volumeOfflineRule(): Rule {
  return {
    id: 'volume.offline',
    kind: 'condition',
    evaluate(inputs, { active }) {
      if (!inputs.offline) return [...active.values()].map(keep);
      return inputs.offline.map((v) => ({
        subject: v.subject,
        severity: 'critical' as const,
        title: `${cap(v.label)} is offline`,
        message: v.gone
          ? `${cap(v.label)} is no longer served, so hosts cannot reach it on this node: ${v.gone}.`
          : v.refused
            ? `${cap(v.label)} is not served, so hosts cannot reach it: ${v.refused} The engine checks again every 10 seconds.`
            : `${cap(v.label)} could not be opened (${v.path || 'no backing store'}), so hosts cannot reach it. ` +
              'The engine tries again every 10 seconds; the event log says why it failed. Check that the file or disk exists, is mounted and is not used by another program.',
        data: { path: v.path },
      }));
    },
  };
}

/**
 * A socket the engine should listen on and cannot: an NVMe/TCP port (hosts cannot
 * connect through it: an error) or the web console (storage keeps serving: a warning).
 * The engine keeps trying; the alert clears when it listens. A console not served this
 * run (a secret file of its cannot be used) is an error: only a restart, once the file
 * is fixed, brings it back.
 */
export function listenerDownRule(): Rule {
  return {
    id: 'listener.down',
    kind: 'condition',
    evaluate(inputs, { active }) {
      if (!inputs.listenersDown) return [...active.values()].map(keep);
      return inputs.listenersDown.map((l) => {
        const retry =
          l.retryEverySec === null
            ? 'The engine tries again at its next start.'
            : `The engine tries again every ${l.retryEverySec} seconds.`;
        // the message is written once, when the alert is raised (often the moment the
        // listen fails): a time stays true while it stands, a duration would not
        const since = `since ${new Date(l.since).toISOString()}`;
        const data = { address: l.address, since: l.since };
        return l.kind === 'nvme-tcp'
          ? {
              subject: l.subject,
              severity: 'error' as const,
              title: `NVMe/TCP port ${l.address} is not listening`,
              message: `Hosts cannot connect through NVMe/TCP port ${l.address}: it has not been listening ${since}. ${l.problem} ${retry}`,
              data,
            }
          : {
              subject: l.subject,
              // not served before a restart, once its files are fixed: someone must act
              severity: l.retryEverySec === null ? ('error' as const) : ('warning' as const),
              title: `Web console is not listening on ${l.address}`,
              message:
                `The web console has not been listening ${since}. ${l.problem} ` +
                `Storage keeps serving, and the desktop app and the branchsan command still reach the engine through its API socket. ${retry}`,
              data,
            };
      });
    },
  };
}

/**
 * A volume's storage I/O threads failed (a bug, or threads that cannot start): the
 * I/O they held failed, hosts retried it, and new threads took over. Critical while no
 * threads serve the volume (its I/O fails), an error for an hour after the last failure
 * (the inputs hold the failures of IO_THREADS_WINDOW_MS), so a failure is one alert,
 * re-raised with its new severity when the threads go down or come back.
 */
export function ioThreadsRule(): Rule {
  return {
    id: 'volume.io-threads',
    kind: 'condition',
    evaluate(inputs, { active }) {
      if (!inputs.volumes || !inputs.ioThreadFailures) return [...active.values()].map(keep);
      const out: Condition[] = [];
      for (const v of inputs.volumes) {
        const failures = inputs.ioThreadFailures.filter((f) => f.subject === v.subject);
        const last = failures[failures.length - 1];
        const down = v.ioThreadsDown === true;
        if (!last && !down) continue;
        const times = failures.length === 1 ? 'once' : `${failures.length} times`;
        const what = last
          ? `failed ${times} in the last hour (last at ${new Date(last.ts).toISOString()}: ${last.reason}). `
          : 'failed. ';
        out.push({
          subject: v.subject,
          severity: down ? 'critical' : 'error',
          title: down
            ? `${cap(v.label)} is down: its storage threads failed`
            : `Storage threads of ${v.label} failed`,
          message:
            `The storage I/O threads of ${v.label} ${what}` +
            (down
              ? 'No new threads serve it yet, so its I/O fails and hosts keep retrying; the engine keeps starting new ones. '
              : 'The I/O they held failed and hosts retried it; new threads serve the volume again. ') +
            'If this repeats, restart the engine service and send a diagnostics bundle (branchsan diagnostics).',
          data: { failures: failures.length, down },
        });
      }
      return out;
    },
  };
}

/**
 * A file system call of the alert pass that did not answer within its limit (a hung NFS
 * or FUSE mount). The pass went on without it, so every other alert still works; the
 * capacity and backing-file alerts of what is there keep their last view, and this one
 * says why. The engine starts no second call there while the first is out (each would
 * hold a thread of the pool every file system call of the engine shares); the alert
 * clears once a call answers in time.
 */
export function notAnsweringRule(): Rule {
  return {
    id: 'filesystem.not-answering',
    kind: 'condition',
    evaluate(inputs, { active }) {
      if (!inputs.notAnswering) return [...active.values()].map(keep);
      return inputs.notAnswering.map((n) => {
        const secs = `${n.limitMs / 1000} s`;
        const what =
          n.kind === 'filesystem'
            ? `The file system holding ${listed(n.holds)} did not answer within ${secs} (statfs and stat of ${n.path}). `
            : `The file system of ${n.path}, the backing file of ${n.holds[0]}, did not answer a check of the file within ${secs}. `;
        return {
          subject: n.subject,
          severity: 'error' as const,
          title:
            n.kind === 'filesystem'
              ? `File system of ${n.path} does not answer`
              : `Backing file of ${n.holds[0]} does not answer`,
          message:
            what +
            `Its mount is probably hung: check it (\`stat -f ${n.path}\`), for NFS the server and the network to it, for FUSE its daemon. ` +
            "Hosts' I/O to volumes on it may hang as well. " +
            'Until it answers, its capacity and backing-file alerts show what was last known; the engine keeps checking, one call at a time, and clears this alert once it answers.',
          data: { path: n.path, since: n.since, holds: n.holds.slice(0, 100) },
        };
      });
    },
  };
}

/**
 * Mail or the webhook paused because its server refused who we are (a wrong password, a
 * webhook token refused): retrying every waiting message would only fail the same way,
 * and a relay behind fail2ban bans an address that keeps failing to log in. It clears
 * when a delivery gets through, or the channel is switched off. After a restart the
 * alert stays until the channel has tried again (its first message then).
 */
export function deliveryPausedRule(): Rule {
  return {
    id: 'delivery.paused',
    kind: 'condition',
    evaluate(inputs, { active }) {
      if (!inputs.delivery) return [...active.values()].map(keep);
      const out: Condition[] = [];
      for (const c of inputs.delivery) {
        const was = active.get(c.channel);
        if (!c.paused) {
          if (was && c.enabled && !c.tried) out.push(keep(was));
          continue;
        }
        out.push({
          subject: c.channel,
          severity: 'error',
          title: `${c.label} is paused: ${c.paused.cause ?? "its server refused this server's login"}`,
          message:
            `${c.label} is paused since ${new Date(c.paused.since).toISOString()}: ${c.paused.reason}. ` +
            (c.paused.cause
              ? 'BranchSAN does not try again until its settings change; '
              : 'BranchSAN does not try again until its settings change, so a server that locks out an address after failed logins (fail2ban) does not ban this one; ') +
            `new alerts wait and are sent once it works. To resume: ${c.paused.fix}. A test message (Settings > Notifications) tries again too.`,
          data: { channel: c.channel, since: c.paused.since },
        });
      }
      return out;
    },
  };
}

/**
 * The Prometheus endpoint is on, but its scrape token file could not be used at the
 * start, so it refuses every scrape (storage is not affected). It clears once a token
 * is in force again (metrics.settings.set) or the endpoint is turned off.
 */
export function metricsEndpointRule(): Rule {
  return {
    id: 'metrics.endpoint',
    kind: 'condition',
    evaluate(inputs, { active }) {
      if (!inputs.metricsEndpoint) return [...active.values()].map(keep);
      return inputs.metricsEndpoint.map((m) => ({
        subject: 'prometheus',
        severity: 'error' as const,
        title: 'Prometheus endpoint refuses every scrape: its token file cannot be used',
        message:
          `The Prometheus endpoint /metrics is on, but refuses every scrape since ${new Date(m.since).toISOString()}: ${m.problem} ` +
          METRICS_TOKEN_AGAIN,
        data: { since: m.since },
      }));
    },
  };
}

/** What brings the endpoint back once its token file is repaired, for the alert and the log. */
export const METRICS_TOKEN_AGAIN =
  'After a chmod or chown, call metrics.settings.set with prometheusEnabled: true to have the file read again. Storage keeps serving meanwhile.';

/** The engine started after an unexpected stop (crash, kill, power loss). */
export function uncleanRestartRule(windowMs = 24 * 3600_000): Rule {
  return {
    id: 'engine.unclean-restart',
    kind: 'incident',
    evaluate(inputs, { now }) {
      return (inputs.uncleanRestarts ?? [])
        .filter((r) => now - r.ts < windowMs)
        .map((r) => ({
          subject: `event ${r.eventId}`,
          severity: 'warning' as const,
          title: 'Engine restarted after an unexpected stop',
          message:
            `The storage engine restarted at ${new Date(r.ts).toISOString()} after an unexpected stop (crash, kill or power loss). ` +
            'Hosts reconnect by themselves; if this repeats, collect a diagnostics bundle and check the server’s power and memory.',
          data: { eventId: r.eventId },
        }));
    },
  };
}

/** Mirror rules: fed by the mirror once it reports state; quiet until then. */
export function mirrorRules(): Rule[] {
  return [
    {
      id: 'mirror.degraded',
      kind: 'condition',
      evaluate: (inputs) =>
        (inputs.mirror ?? [])
          .filter((m) => m.state === 'degraded' || m.state === 'outdated')
          .map((m) => ({
            subject: m.volume,
            severity: 'error' as const,
            title: `Volume ${m.volume} is not mirrored`,
            message:
              m.state === 'degraded'
                ? `Volume ${m.volume} runs on this node only: the peer node is unreachable or its copy failed. Data is not protected against a second failure; bring the peer node back or check the sync link.`
                : `This node's copy of volume ${m.volume} is outdated and does not serve I/O until it has resynchronised. Check the sync link to the peer node.`,
          })),
    },
    {
      id: 'mirror.resync',
      kind: 'condition',
      evaluate: (inputs) =>
        (inputs.mirror ?? [])
          .filter((m) => m.state === 'resyncing')
          .map((m) => ({
            subject: m.volume,
            severity: 'warning' as const,
            title: `Volume ${m.volume} is resynchronising`,
            message: `Volume ${m.volume} is copying changed regions to the other node${m.resyncPct === undefined ? '' : ` (${Math.floor(m.resyncPct)} % done)`}. It is fully protected again when this completes; keep both nodes running.`,
          })),
    },
    {
      id: 'mirror.witness-lost',
      kind: 'condition',
      evaluate: (inputs) =>
        (inputs.mirror ?? [])
          .filter((m) => m.witness === 'lost')
          .map((m) => ({
            subject: m.volume,
            severity: 'warning' as const,
            title: `Witness unreachable for ${m.volume}`,
            message: `The witness for volume ${m.volume} is unreachable. The volume keeps serving, but if the peer node is lost too, this node stops serving to stay safe. Check the network path to the witness.`,
          })),
    },
  ];
}

/** `watchedHosts`: where the host rule keeps its watch list (absent: in memory only). */
export function defaultRules(opts: { watchedHosts?: WatchedHostMemory } = {}): Rule[] {
  return [
    hostDisconnectedRule(undefined, opts.watchedHosts),
    capacityRule(),
    ioErrorsRule(),
    ioLatencyRule(),
    backingFileRule(),
    volumeOfflineRule(),
    listenerDownRule(),
    ioThreadsRule(),
    notAnsweringRule(),
    deliveryPausedRule(),
    metricsEndpointRule(),
    uncleanRestartRule(),
    ...mirrorRules(),
  ];
}

const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);
