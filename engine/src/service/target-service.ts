/**
 * Target configuration as the API changes it: validate, apply to the live target,
 * then persist (with an audit row) in one transaction. If persisting fails, the live
 * change is undone, so the database and the live target never disagree. At start the
 * live target is rebuilt from the database.
 */
import fs from 'node:fs';
import path from 'node:path';
import type {
  IoTuning,
  NamespaceConfig,
  PortConfig,
  SubsystemConfig,
  TargetConfig,
} from '../../../contract/api.js';
import {
  IO_THREADS_FAILED,
  IO_THREADS_RESTARTED,
  IO_THREADS_START_FAILED,
} from '../events/inputs.js';
import type { ListenerDown } from '../events/rules.js';
import type { Db } from '../persistence/db.js';
import { getSetting, recordEvent, setSetting } from '../persistence/db.js';
import { TargetStore, type NamespaceRow, type SubsystemRow } from '../persistence/target-store.js';
import type { BlockBackend } from '../storage/backend.js';
import type { BackendSpec } from '../storage/open.js';
import { storedDevice, verifyBacking, WrongBacking } from './backing-check.js';
import {
  MEMORY_EVENT_FLOORS,
  PeerMemoryEvents,
  type MemoryEventFloors,
} from './peer-memory-events.js';
import { FdBackend, fileGoneCause, statIdentity, type OpenedBacking } from '../storage/file.js';
import { storageProblem, UserError, whereStorageAllows } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { joinHostPort } from '../util/host-port.js';
import { VOLUME_DIR, insideDir } from '../util/paths.js';
import { BoundedCalls, LATE } from '../util/within.js';
import {
  newNguid,
  newUuid,
  type NamespaceIoThreadsEvent,
  type NamespaceStorageGone,
  type TargetRuntime,
} from './target-runtime.js';

/** Event type: the device or file system under a served namespace went away. */
export const STORAGE_GONE = 'target.namespace.storage-gone';

/** How often what could not be brought up at start is tried again. */
export const RETRY_OFFLINE_MS = 10_000;
/**
 * How long the checks of a new backing path wait for its file system: a local disk
 * answers in milliseconds, one spinning up in seconds; a hung mount never does. Well
 * under the API clients' 15 s, so that they hear why.
 */
export const PATH_CHECK_MS = 10_000;

export interface NamespaceAddRequest {
  nqn: string;
  nsid?: number;
  backend:
    | { kind: 'file'; path: string; createSizeBytes?: number; io?: IoTuning }
    | { kind: 'block'; path: string; io?: IoTuning }
    | { kind: 'memory'; sizeBytes: number };
  blockSize?: 512 | 4096;
}

export class TargetService {
  private readonly store: TargetStore;
  /** Changes run one at a time: each one's checks see every earlier change applied. */
  private queue: Promise<unknown> = Promise.resolve();
  private retryTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  /** The checks of new backing paths, one key for all: one call at most left waiting. */
  private readonly pathChecks: BoundedCalls;
  private readonly memoryEvents: PeerMemoryEvents;
  /** Configured ports that could not listen: why, and since when (for the alert). */
  private readonly portsDown = new Map<
    number,
    { address: string; problem: string; since: number }
  >();
  /** Namespaces whose disk or file is not the configured one, by `nqn#nsid`: why, and what to do. */
  private readonly refused = new Map<string, string>();

  /**
   * Told, once a change is stored, of the hosts that lost access to a subsystem (taken
   * off its allow list, or the subsystem deleted): their secrets go (HostSecretStore).
   */
  onAccessLost: ((hostNqns: string[]) => void) | null = null;

  constructor(
    private readonly db: Db,
    private readonly rt: TargetRuntime,
    private readonly log: Logger,
    /** The engine's data directory: no volume may live in it (see addNamespaceNow). */
    private readonly dataDir: string,
    /** How long the checks of a new backing path wait for its file system. */
    pathCheckMs = PATH_CHECK_MS,
    /** How often the connection memory bound's events may be recorded (PeerMemoryEvents). */
    memoryEventFloors: MemoryEventFloors = MEMORY_EVENT_FLOORS,
  ) {
    this.pathChecks = new BoundedCalls(pathCheckMs);
    this.store = new TargetStore(db);
    rt.onIoThreads = (e) => this.recordIoThreads(e);
    rt.onStorageGone = (e) => this.recordStorageGone(e);
    this.memoryEvents = new PeerMemoryEvents((ev) => this.record(ev), memoryEventFloors);
    rt.onPeerMemory = (e) => this.memoryEvents.on(e);
  }

  /**
   * Records a failure of a namespace's I/O threads (its alert rule reads these), new
   * threads that could not start (only the first time in a row: they are retried ever
   * more slowly, and the log has every one) and their replacement.
   */
  private recordIoThreads(e: NamespaceIoThreadsEvent): void {
    const ns = `Namespace ${e.nsid} of ${e.nqn}`;
    const data = { nqn: e.nqn, nsid: e.nsid, nguid: e.nguid, path: e.location };
    const after = (ms: number) => (ms === 0 ? '' : ` and ${Math.round(ms / 1000)} s more`);
    const report =
      'If this repeats, restart the engine service and send a diagnostics bundle (branchsan diagnostics).';
    switch (e.kind) {
      case 'failed':
        this.record({
          type: IO_THREADS_FAILED,
          severity: 'error',
          message:
            `${ns}: its storage I/O threads failed (${e.reason}). The I/O they held fails once they have all stopped, and hosts retry it; ` +
            `new threads take over then${after(e.retryInMs)}. ${report}`,
          data: { ...data, reason: e.reason },
        });
        break;
      case 'start-failed':
        if (e.attempt !== 1) break;
        this.record({
          type: IO_THREADS_START_FAILED,
          severity: 'error',
          message:
            `${ns}: new storage I/O threads could not start (${e.reason}), so its I/O fails. ` +
            `They are tried again in ${Math.round(e.retryInMs / 1000)} s, then ever more slowly. Restart the engine service; if that does not help, send a diagnostics bundle (branchsan diagnostics).`,
          data: { ...data, reason: e.reason },
        });
        break;
      case 'restarted':
        this.record({
          type: IO_THREADS_RESTARTED,
          severity: 'info',
          message: `${ns}: new storage I/O threads serve it again, after ${(e.downMs / 1000).toFixed(1)} s without.`,
          data,
        });
        break;
    }
  }

  /** Records that the device or file system under a namespace went away (an error event). */
  private recordStorageGone(e: NamespaceStorageGone): void {
    const block = e.kind === 'block';
    const what = block ? `block device ${e.location}` : `backing file ${e.location}`;
    this.record({
      type: STORAGE_GONE,
      severity: 'error',
      message:
        `Namespace ${e.nsid} of ${e.nqn}: its ${what} is gone (${e.code} on a ${e.what} at offset ${e.offset}: ` +
        `${block ? 'the disk was unplugged, detached or removed, or went offline' : fileGoneCause(e.code)}). ` +
        'This node no longer serves the volume: hosts see its path inaccessible and use another path or wait, and nothing is read from it. ' +
        `${block ? 'Reconnect the device (dmesg and lsblk say what happened to it)' : `Bring back the disk or mount the file is on (dmesg and findmnt -T '${e.location}' say what happened to it)`}, then restart the engine service; or remove the volume.`,
      data: { nqn: e.nqn, nsid: e.nsid, nguid: e.nguid, path: e.location, errno: e.code },
    });
  }

  /**
   * Rebuilds the live target from the database; what cannot be applied is reported, not
   * fatal, and retried every RETRY_OFFLINE_MS until it comes up or is removed: a disk
   * mounted after the engine started, a file another process let go, a port the kernel
   * target freed.
   */
  async restore(): Promise<void> {
    const cfg = this.store.load();
    await this.undoUnfinishedCreate(cfg);
    this.separateAnaGroups(cfg);
    for (const s of cfg.subsystems) this.rt.addSubsystem(s);
    const offline = await this.bringUp(
      (ns, nqn, err) =>
        // a refusal is recorded by bringUp, at start and on a retry alike
        err instanceof WrongBacking
          ? undefined
          : this.problem(
              'target.namespace.unavailable',
              `Namespace ${ns.nsid} of ${nqn} is offline: ${sentence(err.message)} It is retried every ${RETRY_OFFLINE_MS / 1000} s.`,
              err,
            ),
      (p, err) =>
        this.problem(
          'target.port.unavailable',
          `NVMe/TCP port ${joinHostPort(p.host, p.port)} is not listening: ${sentence(err.message)} It is retried every ${RETRY_OFFLINE_MS / 1000} s.`,
          err,
        ),
    );
    this.retryLater(offline);
  }

  /**
   * The file of a namespace add that the engine did not live to finish or undo (kill -9,
   * a crash, a power cut between creating the file and storing the change): the add
   * was never reported done and the file is in no namespace, so the same add tried
   * again would be refused ("already exists"). Removed when it is still as created (a
   * regular file of that size with no block written); otherwise left, with an event
   * that says so. A file system that does not answer keeps the note for the next start.
   */
  private async undoUnfinishedCreate(cfg: TargetConfig): Promise<void> {
    const note = readCreateNote(this.db);
    if (note === undefined) return;
    const configured = cfg.subsystems.some((s) =>
      s.namespaces.some((n) => n.backendKind === 'file' && n.path === note?.path),
    );
    if (note !== null && !configured) {
      const st = await this.pathChecks.run(
        PATH_CHECK,
        () => fs.promises.lstat(note.path).catch(() => null),
        { what: note.path },
      );
      if (st === LATE) {
        this.log.warn('the file of an unfinished namespace add could not be checked', { ...note });
        return;
      }
      const ns = `namespace ${note.nsid} of ${note.nqn}`;
      if (st?.isFile() && st.size === note.sizeBytes && st.blocks === 0) {
        try {
          await fs.promises.unlink(note.path);
          this.notice(
            'target.namespace.create-undone',
            `The engine stopped while it created ${note.path} for ${ns} (a crash, kill or power loss), before the change was stored: the empty file was removed. Add the namespace again if it is still wanted.`,
          );
        } catch (err) {
          this.log.warn('the file of an unfinished namespace add could not be removed', {
            ...note,
            err,
          });
        }
      } else if (st) {
        this.record({
          type: 'target.namespace.create-undone',
          severity: 'warning',
          message: `The engine stopped while it created ${note.path} for ${ns} (a crash, kill or power loss), before the change was stored. The file is in no namespace and was left as it is, since it is no longer as created: delete it, or add it as a namespace without a size to serve it.`,
        });
      }
    }
    clearCreateNote(this.db, this.log);
  }

  /**
   * One ANA group per volume (a group has one state for all its namespaces, and a
   * volume whose storage is out puts its group in 'change', holding the hosts' I/O to
   * it): namespaces stored sharing a group (every one was added in group 1 before) get
   * groups of their own here, the first of each group keeping it. Only at the start,
   * before any host is connected: hosts see the new group when they connect again, as
   * after any restart, and a connected host's group never moves under it. One that
   * cannot be stored (a full data disk) keeps its group this run and is tried again at
   * the next start.
   */
  private separateAnaGroups(cfg: TargetConfig): void {
    const seen = new Set<number>();
    for (const s of cfg.subsystems) {
      for (const ns of s.namespaces) {
        if (!seen.has(ns.anaGroup)) {
          seen.add(ns.anaGroup);
          continue;
        }
        const was = ns.anaGroup;
        let group: number;
        try {
          group = this.freeAnaGroup(cfg, s.nqn, ns.nsid);
        } catch (err) {
          this.log.warn('a namespace keeps sharing its ANA group', {
            nqn: s.nqn,
            nsid: ns.nsid,
            err,
          });
          continue;
        }
        const where = { nqn: s.nqn, nsid: ns.nsid, anaGroup: group };
        const setGroup = () => this.store.setAnaGroup(s.nqn, ns.nsid, group);
        if (!whereStorageAllows(this.log, 'give a namespace its own ANA group', setGroup, where))
          continue;
        ns.anaGroup = group;
        seen.add(group);
        this.notice(
          'target.namespace.ana-group',
          `Namespace ${ns.nsid} of ${s.nqn} has ANA group ${group} of its own from this start on (it shared group ${was}), so that an outage of another volume's storage cannot hold its I/O. Hosts see the new group when they connect; nothing to do.`,
        );
      }
    }
  }

  /**
   * The lowest ANA group id no namespace of `cfg` is in, for namespace `nsid` of `nqn`
   * (one group per volume, across subsystems: group ids are the node's); a UserError
   * when every id the target reports (ANAGRPMAX) is taken.
   */
  private freeAnaGroup(cfg: TargetConfig, nqn: string, nsid: number): number {
    const used = new Set(cfg.subsystems.flatMap((s) => s.namespaces.map((n) => n.anaGroup)));
    const group = firstFree(used);
    const max = this.rt.target.options.maxAnaGroups;
    if (group <= max) return group;
    throw new UserError(
      `Namespace ${nsid} of ${nqn} cannot have an ANA group of its own: all ${max} ANA groups this node reports are in use, one per volume.`,
      'Remove a volume that is no longer used, then add this one again.',
      'conflict',
      'nsid',
    );
  }

  /**
   * Stops retrying what is offline (engine shutdown); settles once a round or change
   * already running has ended, so none opens a port or a backend after the target closed.
   */
  stop(): Promise<void> {
    this.stopped = true;
    this.memoryEvents.stop();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    return this.queue.then(() => undefined);
  }

  /** While `offline` things remain, tries them again every RETRY_OFFLINE_MS. */
  private retryLater(offline: number): void {
    if (this.stopped || offline === 0) return;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      void this.serialized(() =>
        this.stopped
          ? Promise.resolve(0)
          : this.bringUp(
              () => undefined, // still offline: said at start, not again every round (a refusal: see noteRefused)
              () => undefined,
              (ns, nqn) =>
                this.notice(
                  'target.namespace.online',
                  `Namespace ${ns.nsid} of ${nqn} is online again (${ns.path || ns.backendKind}).`,
                ),
              (p) =>
                this.notice(
                  'target.port.online',
                  `NVMe/TCP port ${joinHostPort(p.host, p.port)} is listening again.`,
                ),
            ),
      )
        // a database that is closing or full: try again next round, never crash the engine
        .catch((err: unknown) => {
          this.log.warn('retrying offline namespaces failed', { err });
          return offline;
        })
        .then((left) => this.retryLater(left));
    }, RETRY_OFFLINE_MS);
    this.retryTimer.unref();
  }

  /**
   * Adds every namespace and port of the database that the live target lacks; resolves
   * with how many of them still could not be added.
   */
  private async bringUp(
    nsFailed: (ns: NamespaceRow, nqn: string, err: Error) => void,
    portFailed: (p: PortConfig, err: Error) => void,
    nsUp: (ns: NamespaceRow, nqn: string) => void = () => undefined,
    portUp: (p: PortConfig) => void = () => undefined,
  ): Promise<number> {
    let failed = 0;
    const fail = () => failed++;
    const cfg = this.store.load();
    for (const s of cfg.subsystems) {
      for (const ns of s.namespaces) {
        if (this.rt.hasNamespace(s.nqn, ns.nsid)) continue;
        const key = `${s.nqn}#${ns.nsid}`;
        await this.rt.addNamespace(s.nqn, { ...ns, backend: checkedSpec(s.nqn, ns) }).then(
          (backend) => {
            this.refused.delete(key);
            this.noteOpened(s.nqn, ns, backend);
            nsUp(ns, s.nqn);
          },
          (err: Error) => {
            fail();
            if (err instanceof WrongBacking) this.noteRefused(key, ns, s.nqn, err);
            else this.refused.delete(key);
            nsFailed(ns, s.nqn, err);
          },
        );
      }
    }
    const live = new Set(this.rt.ports().map((p) => p.portId));
    for (const p of cfg.ports) {
      if (live.has(p.portId)) continue;
      await this.rt.addPort(p).then(
        () => {
          this.portsDown.delete(p.portId);
          portUp(p);
        },
        (err: Error) => {
          fail();
          const hint = err instanceof UserError && err.hint ? ` ${err.hint}` : '';
          const since = this.portsDown.get(p.portId)?.since ?? Date.now();
          const address = joinHostPort(p.host, p.port);
          this.portsDown.set(p.portId, { address, problem: sentence(err.message) + hint, since });
          portFailed(p, err);
        },
      );
    }
    return failed;
  }

  /**
   * Keeps why namespace `key` was refused (refusedBacking) and records it as an event
   * once: when it starts, at start or on a retry after another failure (a file missing
   * at start, then put back cut short), and again only when it changes.
   */
  private noteRefused(key: string, ns: NamespaceRow, nqn: string, err: WrongBacking): void {
    const why = `${err.message} ${err.hint}`;
    if (this.refused.get(key) === why) return;
    this.refused.set(key, why);
    this.problem(
      'target.namespace.wrong-backing',
      `Namespace ${ns.nsid} of ${nqn} is offline: ${sentence(err.message)} ${err.hint} Until then it is tried again every ${RETRY_OFFLINE_MS / 1000} s.`,
      err,
    );
  }

  /**
   * What an open of a stored namespace found that the row lacks: the identity of a
   * block device added before identities were kept (recorded now, so that from now on
   * a disk that takes its name is refused), and a size that grew (a resized volume or
   * disk: hosts see the new size once they rescan). Never throws: a database that cannot
   * store it only means it is noted at the next open.
   */
  private noteOpened(nqn: string, ns: NamespaceRow, backend: BlockBackend): void {
    if (ns.ioProblem)
      this.log.warn(
        'the io tuning stored for a namespace is not one (was the database edited by hand?): it is served with the default tuning',
        { nqn, nsid: ns.nsid, problem: ns.ioProblem },
      );
    const device = deviceOf(backend);
    const had = storedDevice(ns);
    // none recorded (added before identities were kept), or none the disk showed then
    // and one it shows now (a newer kernel or driver): recorded, and checked from now on
    const upgraded = had?.weak === true && device !== null && !storedDevice({ device })!.weak;
    const record = ns.backendKind === 'block' && device !== null && (had === null || upgraded);
    // the same disk (it passed the check) under a key that changed: a loop device's file
    // renamed, a dm-crypt volume under another name, a key of an older engine. Kept
    // current without a word, so that the check compares with what the disk is now.
    const refresh =
      ns.backendKind === 'block' && !record && had !== null && !had.weak && device !== null
        ? storedDevice({ device })!.key !== had.key
        : false;
    const grown = ns.backendKind !== 'memory' && backend.sizeBytes > ns.sizeBytes;
    if (!record && !refresh && !grown) return;
    let stored: boolean;
    try {
      stored = whereStorageAllows(this.log, 'record what a namespace opened', () =>
        this.store.setBacking(nqn, ns.nsid, {
          path: ns.path,
          sizeBytes: backend.sizeBytes,
          device: record || refresh ? device : (ns.device ?? null),
        }),
      );
    } catch (err) {
      // the namespace is served either way; the next open tries again
      this.log.warn('could not record what a namespace opened', { nqn, nsid: ns.nsid, err });
      return;
    }
    if (!stored) return;
    if (refresh)
      this.log.info('the identity of a namespace device changed', {
        nqn,
        nsid: ns.nsid,
        was: had?.key,
        now: device,
      });
    const which = `Namespace ${ns.nsid} of ${nqn}`;
    if (record) {
      const about = storedDevice({ device })!;
      this.notice(
        'target.namespace.device-recorded',
        `${which}: ${ns.path} is ${about.about}. Recorded now, since ${upgraded ? 'the disk showed no identity when the namespace was added (its size matched, the only check there was)' : 'the engine that added it did not keep which disk it was'}: ` +
          `from now on it is served only while ${ns.path} is that disk${about.weak ? ' (by its size only, as it has no identity: a weaker check)' : ''}. ` +
          'Make sure it is the right disk now; if it is not, remove the namespace at once.',
      );
    }
    if (grown) {
      this.notice(
        'target.namespace.grown',
        `${which}: ${ns.path} grew from ${ns.sizeBytes} to ${backend.sizeBytes} bytes, and is served at its new size; hosts see it once they rescan.`,
      );
    }
  }

  config(): TargetConfig {
    return this.store.load();
  }

  /** Why a configured namespace is offline though it opened: not its disk or file (backing-check.ts). */
  refusedBacking(nqn: string, nsid: number): string | undefined {
    return this.rt.hasNamespace(nqn, nsid) ? undefined : this.refused.get(`${nqn}#${nsid}`);
  }

  /** Configured NVMe/TCP ports that are not listening; each is retried every RETRY_OFFLINE_MS. */
  listenersDown(): ListenerDown[] {
    return [...this.portsDown].map(([portId, d]) => ({
      subject: `nvme-tcp port ${portId}`,
      kind: 'nvme-tcp' as const,
      ...d,
      retryEverySec: RETRY_OFFLINE_MS / 1000,
    }));
  }

  private async addPortNow(
    p: { portId?: number; host: string; port: number },
    actor: string,
  ): Promise<PortConfig> {
    const cfg = this.store.load();
    if (cfg.ports.some((x) => x.host === p.host && x.port === p.port)) {
      throw new UserError(
        `NVMe/TCP already listens on ${joinHostPort(p.host, p.port)}.`,
        undefined,
        'conflict',
        'port',
      );
    }
    const taken = cfg.ports.find((x) => x.portId === p.portId);
    if (taken) {
      throw new UserError(
        `Port id ${taken.portId} is already configured (${joinHostPort(taken.host, taken.port)}).`,
        'Remove that port first, or leave out portId to get a new one.',
        'conflict',
        'portId',
      );
    }
    // the next id after the highest (a removed port's id is not handed out again at
    // once); past 65535, the lowest free one
    const highest = Math.max(0, ...cfg.ports.map((x) => x.portId));
    const portId =
      p.portId ??
      (highest < 65535 ? highest + 1 : firstFree(new Set(cfg.ports.map((x) => x.portId))));
    const bound = await this.rt.addPort({ portId, host: p.host, port: p.port });
    await this.persist(
      actor,
      'target.port.add',
      bound,
      () => this.store.addPort(bound),
      () => this.rt.removePort(portId),
    );
    return bound;
  }

  private async removePortNow(portId: number, actor: string): Promise<void> {
    const old = this.store.load().ports.find((p) => p.portId === portId);
    if (!old)
      throw new UserError(`Port id ${portId} does not exist.`, undefined, 'not-found', 'portId');
    // A port that could not listen (its address taken at start) is configured, not live:
    // removing it is only a change to the configuration.
    const live = this.rt.ports().some((p) => p.portId === portId);
    if (live) await this.rt.removePort(portId);
    await this.persist(
      actor,
      'target.port.remove',
      { portId },
      () => this.store.removePort(portId),
      async () => {
        if (live) await this.rt.addPort(old);
      },
    );
    this.portsDown.delete(portId);
  }

  private async createSubsystemNow(
    p: { nqn: string; serial?: string; model?: string; allowAnyHost?: boolean; hosts?: string[] },
    actor: string,
  ): Promise<SubsystemConfig> {
    const row = {
      nqn: p.nqn,
      serial: p.serial ?? `BSAN${newNguid().slice(0, 12).toUpperCase()}`,
      model: p.model ?? 'BranchSAN',
      allowAnyHost: p.allowAnyHost ?? false,
      hosts: [...new Set(p.hosts ?? [])],
    };
    if (this.store.load().subsystems.some((s) => s.nqn === p.nqn)) {
      throw new UserError(
        `Subsystem ${p.nqn} already exists.`,
        'Choose another NQN.',
        'conflict',
        'nqn',
      );
    }
    this.rt.addSubsystem(row);
    await this.persist(
      actor,
      'target.subsystem.create',
      row,
      () => this.store.addSubsystem(row),
      () => this.rt.removeSubsystem(p.nqn),
    );
    return this.subsystem(p.nqn);
  }

  private async deleteSubsystemNow(nqn: string, actor: string): Promise<void> {
    const old = this.subsystem(nqn);
    await this.rt.removeSubsystem(nqn);
    await this.persist(
      actor,
      'target.subsystem.delete',
      { nqn },
      () => this.store.removeSubsystem(nqn),
      async () => {
        this.rt.addSubsystem(old);
        for (const ns of old.namespaces)
          await this.rt.addNamespace(nqn, { ...ns, backend: specOf(ns, false) });
      },
    );
    this.accessLost(old.hosts);
  }

  private async setHostAllowedNow(
    nqn: string,
    hostNqn: string,
    allowed: boolean,
    actor: string,
  ): Promise<SubsystemConfig> {
    const old = this.subsystem(nqn);
    const hosts = allowed
      ? [...new Set([...old.hosts, hostNqn])]
      : old.hosts.filter((h) => h !== hostNqn);
    if (!allowed && hosts.length === old.hosts.length) {
      throw new UserError(
        `Host ${hostNqn} is not on the list of ${nqn}.`,
        undefined,
        'not-found',
        'hostNqn',
      );
    }
    if (!allowed && old.allowAnyHost) {
      // Reported done, it would leave the host connected and free to connect again.
      throw new UserError(
        `Subsystem ${nqn} allows any host, so taking ${hostNqn} off its list would not stop it from connecting; nothing was changed.`,
        'To let in only listed hosts, delete the subsystem and create it again without allowAnyHost, listing its hosts; then add its namespaces again (their files and data stay).',
        'conflict',
        'hostNqn',
      );
    }
    this.rt.setHosts(nqn, hosts, old.allowAnyHost);
    await this.persist(
      actor,
      allowed ? 'target.host.allow' : 'target.host.disallow',
      { nqn, hostNqn },
      () => (allowed ? this.store.allowHost(nqn, hostNqn) : this.store.disallowHost(nqn, hostNqn)),
      () => this.rt.setHosts(nqn, old.hosts, old.allowAnyHost),
    );
    if (!allowed) this.accessLost([hostNqn]);
    return this.subsystem(nqn);
  }

  /**
   * Tells onAccessLost. The change is stored and in effect whatever happens there, so
   * a failure is logged, not thrown.
   */
  private accessLost(hostNqns: string[]): void {
    if (hostNqns.length === 0) return;
    try {
      this.onAccessLost?.(hostNqns);
    } catch (err) {
      // one that says what is in the way (a directory) says what to run, too
      this.log.warn(
        err instanceof UserError
          ? `secrets of hosts that lost access could not be deleted: ${err.message} ${err.hint ?? ''}`.trimEnd()
          : 'secrets of hosts that lost access could not be deleted: delete them by hand from ' +
              'the data directory (secrets/hosts/, each named by the SHA-256 of its host NQN)',
        { hosts: hostNqns, err },
      );
    }
  }

  /**
   * Whether a new backing path lies in the data directory, and which file or device it
   * names. A path on a hung mount (NFS, FUSE) would hold these calls for good: they run
   * in the thread pool (the event loop serves NVMe/TCP meanwhile) and the answer is given
   * up after pathCheckMs. The calls themselves stay until the mount answers, so while
   * one is still out the next check is refused at once: two of the pool's four threads
   * at most wait on hung mounts, whatever a caller retries.
   */
  private async checkPath(
    p: string,
    others: readonly string[] = [],
  ): Promise<{ path: string; inDataDir: boolean; names: string[]; others: string[][] }> {
    const hung = (what: string, hint: string) =>
      new UserError(what, hint, 'unavailable', 'backend.path');
    const waitingOn = this.pathChecks.outFor(PATH_CHECK);
    if (waitingOn !== undefined)
      throw hung(
        `An earlier check of ${waitingOn} still waits for its file system to answer.`,
        `A network or FUSE mount is hung: bring it back or unmount it (\`umount -l ${path.dirname(waitingOn)}\`), then try again.`,
      );
    const answer = await this.pathChecks.run(
      PATH_CHECK,
      () =>
        Promise.all([
          insideDir(p, this.dataDir),
          pathNames(p),
          Promise.all(others.map((o) => pathNames(o))),
        ]),
      { what: p },
    );
    if (answer === LATE) {
      throw hung(
        `The file system that holds ${p}${others.length ? ` (or one holding an offline namespace: ${others.join(', ')})` : ''} did not answer within ${this.pathChecks.limitMs / 1000} s.`,
        `A network or FUSE mount may be hung: check it (\`stat ${path.dirname(p)}\`), or put the volume on a local disk.`,
      );
    }
    return { path: p, inDataDir: answer[0], names: answer[1], others: answer[2] };
  }

  /**
   * Refuses a backing path no namespace may take: one in the data directory, or the file
   * or device of another namespace (not `self`'s) under whatever name; resolves with the
   * names of what it points at (pathNames).
   */
  private async checkFree(p: string, self?: { nqn: string; nsid: number }): Promise<string[]> {
    const configured = this.store
      .load()
      .subsystems.flatMap((s) => s.namespaces.map((n) => ({ nqn: s.nqn, n })))
      .filter(
        ({ nqn, n }) => n.backendKind !== 'memory' && !(nqn === self?.nqn && n.nsid === self.nsid),
      );
    // Not open (offline: its file missing, or held by another program): known by its path,
    // with its directory's symbolic links resolved, and by its file if there is one (a
    // served one is known by what its descriptor names, with no call to its file system).
    const offline = configured.filter(({ nqn, n }) => !this.rt.servedIdentity(nqn, n.nsid));
    const checked = await this.checkPath(
      p,
      offline.map(({ n }) => n.path),
    );
    if (checked.inDataDir) {
      // Its database, logs, keys and secrets: a host writing or reading them as a disk
      // would corrupt the engine's state or carry its secrets away.
      throw new UserError(
        `${checked.path} is inside the engine's data directory ${this.dataDir}.`,
        `Keep volumes elsewhere, for example ${VOLUME_DIR}/ or a disk of their own.`,
        'invalid',
        'backend.path',
      );
    }
    // The same file or device under another name (./, //, a symlink, a by-id link) counts
    // too; a served one is also known by what its descriptor names, and by its path (its
    // file may be gone or replaced since).
    const inUse = configured.find(({ nqn, n }) => {
      const served = this.rt.servedIdentity(nqn, n.nsid);
      const i = offline.findIndex((o) => o.n === n);
      const named = i >= 0 ? checked.others[i]! : [`path:${path.resolve(n.path)}`];
      return (
        named.some((name) => checked.names.includes(name)) ||
        (!!served && checked.names.includes(served))
      );
    })?.n;
    this.rt.checkNotClosing(checked.path, checked.names);
    if (inUse)
      throw new UserError(
        `${inUse.path} is already a namespace.`,
        'One backing file or device serves one namespace.',
        'conflict',
        'backend.path',
      );
    return checked.names;
  }

  private async addNamespaceNow(req: NamespaceAddRequest, actor: string): Promise<NamespaceConfig> {
    const sub = this.subsystem(req.nqn);
    const used = new Set(sub.namespaces.map((n) => n.nsid));
    const nsid = req.nsid ?? firstFree(used);
    if (used.has(nsid)) {
      throw new UserError(
        `Namespace id ${nsid} is already used in ${req.nqn}.`,
        'Leave nsid out to take the next free one.',
        'conflict',
        'nsid',
      );
    }
    const names = req.backend.kind === 'memory' ? null : await this.checkFree(req.backend.path);
    // stored, shown and compared later as the path it names (see storedPath)
    if (req.backend.kind !== 'memory')
      req = { ...req, backend: { ...req.backend, path: storedPath(req.backend.path, names!) } };
    const b = req.backend;
    const created = b.kind === 'file' && b.createSizeBytes !== undefined;
    // Noted before the file is made, for a start after a crash to remove it (see
    // undoUnfinishedCreate); not when the path is taken: that create fails, and the
    // file there is someone else's.
    const noted = created && !names?.some((n) => !n.startsWith('path:'));
    if (noted) {
      whereStorageAllows(this.log, 'note the file being created', () =>
        setSetting(
          this.db,
          CREATING_SETTING,
          JSON.stringify({ path: b.path, sizeBytes: b.createSizeBytes, nqn: req.nqn, nsid }),
        ),
      );
    }
    try {
      return await this.addNamespaceRow(req, nsid, created, actor);
    } finally {
      if (noted) clearCreateNote(this.db, this.log);
    }
  }

  /** addNamespaceNow, its checks done: opens (or creates) the backend, then stores the row. */
  private async addNamespaceRow(
    req: NamespaceAddRequest,
    nsid: number,
    created: boolean,
    actor: string,
  ): Promise<NamespaceConfig> {
    const b = req.backend;
    const row: NamespaceRow = {
      nsid,
      backendKind: b.kind,
      path: b.kind === 'memory' ? '' : b.path,
      sizeBytes:
        b.kind === 'memory' ? b.sizeBytes : b.kind === 'file' ? (b.createSizeBytes ?? 0) : 0,
      blockSize: req.blockSize ?? 512,
      nguid: newNguid(),
      uuid: newUuid(),
      anaGroup: this.freeAnaGroup(this.store.load(), req.nqn, nsid),
      io: b.kind === 'memory' ? {} : (b.io ?? {}),
    };
    const backend = await this.rt.addNamespace(req.nqn, { ...row, backend: specOf(row, created) });
    row.sizeBytes = backend.sizeBytes;
    row.blockSize = backend.blockSize as 512 | 4096;
    // which disk it is, for every later open to compare (see backing-check.ts)
    row.device = deviceOf(backend);
    await this.persist(
      actor,
      'target.namespace.add',
      { ...req, nsid },
      () => this.store.addNamespace(req.nqn, row),
      async () => {
        await this.rt.removeNamespace(req.nqn, nsid);
        if (created && b.kind === 'file') fs.rmSync(b.path, { force: true });
      },
    );
    return row;
  }

  /** Namespace `nsid` of `nqn` as configured; not-found when there is none. */
  private namespaceOf(nqn: string, nsid: number): NamespaceRow {
    const ns = this.subsystem(nqn).namespaces.find((n) => n.nsid === nsid);
    if (ns) return ns;
    throw new UserError(
      `Namespace ${nsid} does not exist in ${nqn}.`,
      undefined,
      'not-found',
      'nsid',
    );
  }

  /**
   * Sets a file or block namespace's io tuning, the whole of it: at once for the I/O
   * its hosts send from then on when it is served, and at every later open (an offline
   * one takes it at its next). Its hosts see nothing of it but the speed.
   */
  private async tuneNamespaceNow(
    nqn: string,
    nsid: number,
    io: IoTuning,
    actor: string,
  ): Promise<NamespaceConfig> {
    const ns = this.namespaceOf(nqn, nsid);
    if (ns.backendKind === 'memory')
      throw new UserError(
        `Namespace ${nsid} of ${nqn} lives in memory: it has no I/O threads to tune. Nothing was changed.`,
        'io tuning is for namespaces on a file or a block device.',
        'invalid',
        'nsid',
      );
    const live = this.rt.retune(nqn, nsid, io);
    await this.persist(
      actor,
      'target.namespace.tune',
      { nqn, nsid, io },
      () => this.store.setIo(nqn, nsid, io),
      () => live && this.rt.retune(nqn, nsid, ns.io),
    );
    return { ...ns, io };
  }

  private async removeNamespaceNow(nqn: string, nsid: number, actor: string): Promise<void> {
    const ns = this.namespaceOf(nqn, nsid);
    this.refused.delete(`${nqn}#${nsid}`);
    const live = this.rt.hasNamespace(nqn, nsid); // an offline namespace is only a row
    if (live) await this.rt.removeNamespace(nqn, nsid);
    await this.persist(
      actor,
      'target.namespace.remove',
      { nqn, nsid },
      () => this.store.removeNamespace(nqn, nsid),
      async () => {
        if (live) await this.rt.addNamespace(nqn, { ...ns, backend: specOf(ns, false) });
      },
    );
  }

  /**
   * Serves an offline namespace from what its path (or `newPath`, which becomes its
   * path) names now, whatever it was added on: the explicit way to take a disk whose
   * identity or size differs from the recorded one (see backing-check.ts). Its NGUID and
   * UUID stay, so hosts see the same volume.
   */
  private async acceptNamespaceNow(
    nqn: string,
    nsid: number,
    newPath: string | undefined,
    actor: string,
  ): Promise<NamespaceConfig> {
    const ns = this.namespaceOf(nqn, nsid);
    if (ns.backendKind === 'memory')
      throw new UserError(
        `Namespace ${nsid} of ${nqn} lives in memory: it has no disk or file to accept.`,
        undefined,
        'invalid',
        'nsid',
      );
    if (this.rt.hasNamespace(nqn, nsid))
      throw new UserError(
        `Namespace ${nsid} of ${nqn} is online (${ns.path}): nothing was changed.`,
        'Accepting is for a namespace kept offline because its disk or file is not the one it was added on (its event says so).',
        'conflict',
        'nsid',
      );
    const p =
      newPath === undefined
        ? ns.path
        : storedPath(newPath, await this.checkFree(newPath, { nqn, nsid }));
    const row: NamespaceRow = { ...ns, path: p };
    // checked before the device is claimed and served: once served, connected hosts
    // are told of it and may read it at the wrong block size before it is taken back
    const spec = specOf(row, false);
    const sameBlocks = (o: OpenedBacking) => {
      if (o.blockSize === ns.blockSize) return;
      throw new UserError(
        `${p} has ${o.blockSize}-byte blocks, and namespace ${nsid} of ${nqn} has ${ns.blockSize}-byte blocks: hosts would misread all its data. Nothing was changed.`,
        `Serve it from a device with ${ns.blockSize}-byte blocks.`,
        'invalid',
        'path',
      );
    };
    const backend = await this.rt.addNamespace(nqn, {
      ...row,
      backend: spec.kind === 'memory' ? spec : { ...spec, verify: sameBlocks },
    });
    const was = storedDevice(ns);
    row.sizeBytes = backend.sizeBytes;
    row.device = deviceOf(backend);
    await this.persist(
      actor,
      'target.namespace.accept',
      { nqn, nsid, path: p },
      () =>
        this.store.setBacking(nqn, nsid, {
          path: p,
          sizeBytes: row.sizeBytes,
          device: row.device ?? null,
        }),
      () => this.rt.removeNamespace(nqn, nsid),
    );
    this.refused.delete(`${nqn}#${nsid}`);
    const now = storedDevice(row);
    this.notice(
      'target.namespace.accepted',
      `Namespace ${nsid} of ${nqn} is served from ${p}${now ? ` (${now.about})` : ''}, ${row.sizeBytes} bytes, as accepted by ${actor}; ` +
        `it was ${ns.path}${was ? ` (${was.about})` : ''}, ${ns.sizeBytes} bytes.`,
    );
    return row;
  }

  addPort(p: { portId?: number; host: string; port: number }, actor: string): Promise<PortConfig> {
    return this.serialized(() => this.addPortNow(p, actor));
  }

  removePort(portId: number, actor: string): Promise<void> {
    return this.serialized(() => this.removePortNow(portId, actor));
  }

  createSubsystem(
    p: { nqn: string; serial?: string; model?: string; allowAnyHost?: boolean; hosts?: string[] },
    actor: string,
  ): Promise<SubsystemConfig> {
    return this.serialized(() => this.createSubsystemNow(p, actor));
  }

  deleteSubsystem(nqn: string, actor: string): Promise<void> {
    return this.serialized(() => this.deleteSubsystemNow(nqn, actor));
  }

  setHostAllowed(
    nqn: string,
    hostNqn: string,
    allowed: boolean,
    actor: string,
  ): Promise<SubsystemConfig> {
    return this.serialized(() => this.setHostAllowedNow(nqn, hostNqn, allowed, actor));
  }

  addNamespace(req: NamespaceAddRequest, actor: string): Promise<NamespaceConfig> {
    return this.serialized(() => this.addNamespaceNow(req, actor));
  }

  acceptNamespace(
    nqn: string,
    nsid: number,
    newPath: string | undefined,
    actor: string,
  ): Promise<NamespaceConfig> {
    return this.serialized(() => this.acceptNamespaceNow(nqn, nsid, newPath, actor));
  }

  removeNamespace(nqn: string, nsid: number, actor: string): Promise<void> {
    return this.serialized(() => this.removeNamespaceNow(nqn, nsid, actor));
  }

  tuneNamespace(nqn: string, nsid: number, io: IoTuning, actor: string): Promise<NamespaceConfig> {
    return this.serialized(() => this.tuneNamespaceNow(nqn, nsid, io, actor));
  }

  /** Runs one configuration change after the ones before it have finished. */
  private serialized<T>(change: () => Promise<T>): Promise<T> {
    const run = this.queue.then(change, change);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private subsystem(nqn: string): SubsystemRow {
    const s = this.store.load().subsystems.find((x) => x.nqn === nqn);
    if (!s)
      throw new UserError(
        `Subsystem ${nqn} does not exist.`,
        'Create it first (target.subsystem.create).',
        'not-found',
        'nqn',
      );
    return s;
  }

  /** Persists one applied change with its audit row; on failure undoes the live change and rethrows. */
  private async persist(
    actor: string,
    action: string,
    details: unknown,
    write: () => unknown,
    undo: () => unknown,
  ): Promise<void> {
    try {
      this.db.transaction(() => {
        write();
        this.store.audit(actor, action, details);
      })();
    } catch (err) {
      this.log.error('configuration change not stored; undoing it', { action, err });
      let undoErr: unknown;
      try {
        await undo();
      } catch (e) {
        undoErr = e;
        this.log.error('undo failed: live target may differ from the database until restart', {
          action,
          err: e,
        });
      }
      const why = (err as Error).message;
      const retry =
        storageProblem(err) !== null
          ? "Check free space on the data directory's filesystem, then retry"
          : 'Retry';
      const [message, hint] =
        undoErr === undefined
          ? [
              `The change was not saved (${why}); nothing was changed.`,
              storageProblem(err) !== null
                ? `${retry}.`
                : `${retry}; if it fails again, \`branchsan diagnostics\` collects what is needed to report it.`,
            ]
          : [
              `The change was not saved (${why}), and undoing it on the live target failed (${(undoErr as Error).message}): ` +
                'the target may serve something other than the stored configuration until the engine restarts, which serves the stored one.',
              `${storageProblem(err) !== null ? "Free space on the data directory's filesystem, then restart" : 'Restart'} the engine service, check the configuration (target.config), and make the change again.`,
            ];
      throw new UserError(message, hint, 'unavailable');
    }
  }

  private problem(type: string, message: string, err: Error): void {
    this.log.error(message, { err });
    this.record({ type, severity: 'error', message });
  }

  private notice(type: string, message: string): void {
    this.log.info(message);
    this.record({ type, severity: 'info', message });
  }

  /**
   * Records an event of the restore; a data disk too full to take it (the log has the
   * line) must not stop the engine from serving what it could restore.
   */
  private record(ev: Parameters<typeof recordEvent>[1]): void {
    whereStorageAllows(this.log, 'record an event', () => recordEvent(this.db, ev), {
      type: ev.type,
    });
  }
}

/** The setting that holds the namespace add creating a file now (see undoUnfinishedCreate). */
const CREATING_SETTING = 'target.namespace.creating';

interface CreateNote {
  path: string;
  sizeBytes: number;
  nqn: string;
  nsid: number;
}

/** The note of an add creating a file: undefined when there is none, null when unreadable. */
function readCreateNote(db: Db): CreateNote | null | undefined {
  const raw = getSetting(db, CREATING_SETTING);
  if (!raw) return undefined;
  try {
    const n = JSON.parse(raw) as Partial<CreateNote>;
    return typeof n.path === 'string' && typeof n.sizeBytes === 'number'
      ? { path: n.path, sizeBytes: n.sizeBytes, nqn: String(n.nqn), nsid: Number(n.nsid) }
      : null;
  } catch {
    return null;
  }
}

/**
 * Never throws: a note left behind names a file that is configured by then, or gone,
 * or not as created, and the next start only clears it.
 */
function clearCreateNote(db: Db, log: Logger): void {
  try {
    db.prepare('DELETE FROM settings WHERE key = ?').run(CREATING_SETTING);
  } catch (err) {
    log.warn('could not clear the note of the file being created', { err });
  }
}

/** `m` ending with a full stop, so a sentence can follow. */
function sentence(m: string): string {
  return /[.!?]$/.test(m) ? m : `${m}.`;
}

/** specOf for a stored namespace: its open refuses what is not what it was added on. */
function checkedSpec(nqn: string, ns: NamespaceRow): BackendSpec {
  const spec = specOf(ns, false);
  return spec.kind === 'memory' ? spec : { ...spec, verify: verifyBacking(nqn, ns) };
}

/** A block backend's device identity as stored (JSON); null for files and memory. */
function deviceOf(backend: BlockBackend): string | null {
  return backend instanceof FdBackend && backend.kind === 'block' && backend.device
    ? JSON.stringify(backend.device)
    : null;
}

function specOf(ns: NamespaceRow, create: boolean): BackendSpec {
  const { blockSize, io } = ns;
  switch (ns.backendKind) {
    case 'file':
      return create
        ? { kind: 'file', path: ns.path, sizeBytes: ns.sizeBytes, create: true, blockSize, io }
        : { kind: 'file', path: ns.path, blockSize, io };
    case 'block':
      return { kind: 'block', path: ns.path, io };
    case 'memory':
      return { kind: 'memory', sizeBytes: ns.sizeBytes, blockSize };
  }
}

/**
 * How a backing path is stored: without `.` and doubled slashes, and, when it has `..`,
 * as the kernel resolves it (its directory's symbolic links followed: /v/link/../a.img is
 * a.img beside where link points, not /v/a.img); as given when that directory does not
 * exist (the open says so). `names` is what pathNames found for it.
 */
function storedPath(p: string, names: readonly string[]): string {
  if (!p.split('/').includes('..')) return path.normalize(p);
  return names.filter((n) => n.startsWith('path:'))[1]?.slice('path:'.length) ?? p;
}

/**
 * The names of what a backing path points at: its absolute path, that path with its
 * directory's symbolic links resolved, and the file or device itself when it exists.
 */
async function pathNames(p: string): Promise<string[]> {
  const abs = path.resolve(p);
  const names = [`path:${abs}`];
  // its directory as the kernel walks it: a `..` after a symbolic link goes up from
  // where the link points (path.resolve would drop the link lexically)
  const raw = path.isAbsolute(p) ? p : `${process.cwd()}/${p}`;
  try {
    names.push(
      `path:${path.join(await fs.promises.realpath(path.dirname(raw)), path.basename(raw))}`,
    );
  } catch {
    // a directory that does not exist: the open says so
  }
  try {
    names.push(statIdentity(await fs.promises.stat(p)));
  } catch {
    // not there yet (a file to create), or not reachable
  }
  return names;
}

/** The one key of pathChecks: a stuck check holds back every other. */
const PATH_CHECK = 'path';

function firstFree(used: Set<number>): number {
  let n = 1;
  while (used.has(n)) n++;
  return n;
}
