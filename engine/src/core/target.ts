/**
 * The NVMe-oF target of one node (CoreTarget): NVM subsystems with their namespaces
 * and host access lists, the discovery subsystem, ports, ANA group states and the
 * CNTLID range. The configuration methods below are what the service layer calls;
 * they validate first and throw an Error with a readable message, changing nothing,
 * when the request is wrong. Changes raise the async events hosts expect.
 */
import { DISCOVERY_NQN } from '../protocol/opcodes.js';
import type { ConnectData } from '../protocol/sqe.js';
import type { BlockBackend } from '../storage/backend.js';
import { AnaGroups, type AnaState, type HeldState } from './ana.js';
import { Controller, type ControllerEnv, type ControllerState } from './controller.js';
import { Namespace, type NamespaceConfig } from './namespace.js';
import { assertNqn } from './nqn.js';
import { resolveOptions, type ResolvedOptions, type TargetOptions } from './options.js';
import { Queue } from './queue.js';
import type { CoreQueue, CoreTarget, PortInfo, TransportQueue } from './seam.js';
import type { IoStatsSnapshot } from './stats.js';
import { Subsystem, type SubsystemConfig } from './subsystem.js';

export interface PortConfig {
  /** NQNs reachable through this port; default: every subsystem. */
  subsystems?: readonly string[];
}

/** A configured port and which subsystems it exposes. */
export interface PortEntry {
  readonly info: PortInfo;
  reaches(nqn: string): boolean;
}

export interface ControllerSummary {
  readonly cntlid: number;
  readonly kind: 'io' | 'discovery';
  readonly subnqn: string;
  readonly hostnqn: string;
  readonly state: ControllerState;
  readonly ioQueues: number;
  readonly kato: number;
  readonly stats: IoStatsSnapshot;
}

/** What the log says when holdWhileOut moves a group. */
const HOLD_MESSAGE = {
  change: 'ANA group in change: the storage of its namespaces is unavailable, hosts hold their I/O',
  inaccessible:
    'ANA group inaccessible: the storage of its namespaces was closed while they were attached, ' +
    'hosts use another path or wait; remove the volume and add it again, or restart the engine service',
  back: 'ANA group usable again: its storage is back',
};

export class Target implements CoreTarget, ControllerEnv {
  readonly options: ResolvedOptions;
  readonly ana: AnaGroups;
  private readonly subsystems = new Map<string, Subsystem>();
  private readonly discovery: Subsystem;
  private readonly ports = new Map<number, PortEntry>();
  private readonly controllers = new Map<number, Controller>();
  /** What stops each namespace's backend availability watch (see holdWhileOut). */
  private readonly unwatch = new Map<Namespace, () => void>();
  private nextCntlid: number;
  private genctr = 0;

  constructor(opts: TargetOptions = {}) {
    this.options = resolveOptions(opts);
    this.ana = new AnaGroups(this.options.maxAnaGroups);
    this.nextCntlid = this.options.cntlidMin;
    this.discovery = new Subsystem('discovery', {
      nqn: DISCOVERY_NQN,
      serial: 'BRANCHSAN-DISCOVERY',
      model: 'BranchSAN discovery controller',
      firmware: '1.0',
    });
  }

  // ---- configuration (service layer) ----

  addSubsystem(cfg: SubsystemConfig): void {
    if (this.subsystems.has(cfg.nqn)) throw new Error(`Subsystem ${cfg.nqn} already exists`);
    const s = new Subsystem('nvm', cfg);
    // A host reads the ANA log in one transfer (Linux turns ANA off when it may not fit).
    const anaLog = 16 + this.options.maxAnaGroups * 32 + s.maxNamespaces * 4;
    const mdts = this.options.mdts === 0 ? Infinity : 4096 * 2 ** this.options.mdts;
    if (anaLog > mdts) {
      throw new Error(
        `Subsystem ${cfg.nqn}: with up to ${s.maxNamespaces} namespaces and ${this.options.maxAnaGroups} ANA groups its ANA log may reach ${anaLog} bytes, ` +
          `more than one transfer (${mdts} bytes), and hosts would turn ANA off; allow fewer namespaces`,
      );
    }
    this.subsystems.set(cfg.nqn, s);
    this.discoveryChanged();
  }

  /** Removes a subsystem; its controllers are deleted (their connections closed). */
  removeSubsystem(nqn: string): void {
    const s = this.nvmSubsystem(nqn);
    for (const c of [...s.controllers]) c.delete('subsystem removed');
    this.subsystems.delete(nqn);
    this.discoveryChanged();
  }

  /**
   * Replaces who may connect. Live controllers of hosts no longer allowed are deleted,
   * their connections closed (nvmet leaves them: a host taken off the list would keep
   * reading and writing until it disconnected by itself). Their writes not yet started
   * never start (the queue close abandons them).
   */
  setAllowedHosts(nqn: string, hosts: readonly string[], allowAnyHost = false): void {
    const s = this.nvmSubsystem(nqn);
    s.setHosts(hosts);
    s.allowAnyHost = allowAnyHost;
    for (const c of [...s.controllers]) {
      if (!s.allows(c.hostnqn)) {
        this.options.logger.warn('host no longer allowed: controller deleted', {
          subnqn: nqn,
          hostnqn: c.hostnqn,
          cntlid: c.cntlid,
        });
        c.delete('host no longer allowed');
      }
    }
    this.discoveryChanged();
  }

  allowHost(nqn: string, hostnqn: string): void {
    const s = this.nvmSubsystem(nqn);
    this.setAllowedHosts(
      nqn,
      [...s.hosts, hostnqn].filter((h, i, a) => a.indexOf(h) === i),
      s.allowAnyHost,
    );
  }

  disallowHost(nqn: string, hostnqn: string): void {
    const s = this.nvmSubsystem(nqn);
    this.setAllowedHosts(
      nqn,
      [...s.hosts].filter((h) => h !== hostnqn),
      s.allowAnyHost,
    );
  }

  addNamespace(subnqn: string, cfg: NamespaceConfig): void {
    const s = this.nvmSubsystem(subnqn);
    if (!Number.isInteger(cfg.nsid) || cfg.nsid < 1 || cfg.nsid > s.maxNamespaces) {
      throw new Error(`Namespace id ${cfg.nsid} is out of range 1..${s.maxNamespaces}`);
    }
    if (s.namespaces.has(cfg.nsid))
      throw new Error(`Namespace ${cfg.nsid} already exists in ${subnqn}`);
    const ns = new Namespace(cfg);
    this.assertUniqueIds(ns);
    this.ana.membersChanged(ns.anagrpid); // checks the group id first
    s.namespaces.set(ns.nsid, ns);
    const watch = ns.backend.watchAvailable?.(() => this.holdWhileOut(ns.anagrpid));
    if (watch) this.unwatch.set(ns, watch);
    this.holdWhileOut(ns.anagrpid);
    for (const c of s.controllers) c.notifyNsChanged(ns.nsid);
  }

  /** Detaches a namespace; the backend stays open (its owner closes it after in-flight I/O). */
  removeNamespace(subnqn: string, nsid: number): void {
    const s = this.nvmSubsystem(subnqn);
    const ns = s.namespaces.get(nsid);
    if (!ns) throw new Error(`Namespace ${nsid} does not exist in ${subnqn}`);
    s.namespaces.delete(nsid);
    this.unwatch.get(ns)?.();
    this.unwatch.delete(ns);
    // Writes to it still waiting inside its backend (behind a stalled disk) never start:
    // they fail as not executed, and their hosts send them to a node that still serves
    // the volume, where they must not be overtaken by this node's copy landing later.
    // (A closing queue abandons its writes only on the namespaces still present.)
    for (const c of s.controllers) for (const q of c.ioQueues.values()) ns.backend.abandon?.(q);
    this.ana.membersChanged(ns.anagrpid);
    this.holdWhileOut(ns.anagrpid);
    for (const c of s.controllers) c.notifyNsChanged(nsid);
  }

  addPort(port: PortInfo, cfg: PortConfig = {}): void {
    if (!Number.isInteger(port.portId) || port.portId < 0 || port.portId > 0xffff) {
      throw new Error(`Port id ${port.portId} is out of range 0..65535`);
    }
    if (this.ports.has(port.portId)) throw new Error(`Port ${port.portId} already exists`);
    for (const nqn of cfg.subsystems ?? []) assertNqn(nqn, 'subsystem NQN');
    const only = cfg.subsystems ? new Set(cfg.subsystems) : null;
    this.ports.set(port.portId, {
      info: { ...port },
      reaches: (nqn) => only === null || only.has(nqn),
    });
    this.discoveryChanged();
  }

  removePort(portId: number): void {
    if (!this.ports.delete(portId)) throw new Error(`Port ${portId} does not exist`);
    this.discoveryChanged();
  }

  /**
   * Sets this node's state of an ANA group; the controllers of subsystems with a
   * namespace in it get an ANA change event if it changed (a group no namespace is in
   * yet is in no controller's log).
   */
  setAnaState(grpid: number, state: AnaState): void {
    this.ana.ensure(grpid);
    if (this.ana.set(grpid, state)) this.anaChanged(grpid);
  }

  /**
   * Reports group `grpid` in change while the backend of every namespace in it is
   * unavailable (BlockBackend.available), and in the state set once one is back, each
   * with an ANA change event. Else a Linux host, told ANA Transition by every I/O while
   * the log said optimized, resent it at once, round after round (backend-status.ts);
   * told 'change', it holds the I/O until the event says the group is usable again
   * (ANATT applies: past twice that without news, it resets the controller, and
   * reconnects). Once every one is closed (BlockBackend.closed) the group is reported
   * inaccessible: that storage will not be back by itself, and a host then uses another
   * path or parks the I/O with no ANATT to run out (Linux, for a live controller), where
   * ANA Transition under 'optimized' had it resend at once (668 refused writes and 296
   * ANA log reads in 4 s, the 6.1 host under QEMU). A group shared with a namespace whose
   * backend serves stays as set, and the I/O of the one out still gets ANA Transition:
   * holding the group would stall the healthy volume, which is why the engine gives each
   * volume a group of its own.
   */
  private holdWhileOut(grpid: number): void {
    const members = this.subsystemList().flatMap((s) =>
      [...s.namespaces.values()].filter((n) => n.anagrpid === grpid),
    );
    const every = (out: (b: BlockBackend) => boolean) =>
      members.length > 0 && members.every((n) => out(n.backend));
    const held: HeldState | null = every((b) => b.closed === true)
      ? 'inaccessible'
      : every((b) => b.closed === true || b.available === false)
        ? 'change'
        : null;
    if (!this.ana.hold(grpid, held)) return;
    this.options.logger[held ? 'warn' : 'info'](HOLD_MESSAGE[held ?? 'back'], {
      anagrpid: grpid,
      state: this.ana.state(grpid),
    });
    this.anaChanged(grpid);
  }

  /**
   * Group `grpid`'s state changed: an ANA change event goes to the I/O controllers whose
   * ANA log changed, those of subsystems with a namespace in the group (logs.ts lists
   * only those groups); the others would read again a log in which nothing changed.
   */
  private anaChanged(grpid: number): void {
    for (const s of this.subsystems.values()) {
      if (![...s.namespaces.values()].some((ns) => ns.anagrpid === grpid)) continue;
      for (const c of s.controllers) c.notifyAnaChanged();
    }
  }

  anaState(grpid: number): AnaState {
    return this.ana.state(grpid);
  }

  /**
   * Graceful stop: complete every held Async Event Request (Internal Error, DNR — the
   * host does not re-arm on an error) so that only real I/O keeps queues busy while
   * the transports drain.
   */
  quiesce(): void {
    for (const c of this.controllers.values()) c.failAsyncEvents();
  }

  /**
   * Deletes every controller (closing its connections); configuration stays. The
   * backends' availability is no longer watched: they close next, with no host left to
   * tell (nor a warning to log at every stop).
   */
  close(): void {
    for (const c of [...this.controllers.values()]) c.delete('target closing');
    for (const stop of this.unwatch.values()) stop();
    this.unwatch.clear();
  }

  // ---- inspection (service, metrics) ----

  subsystemNqns(): string[] {
    return [...this.subsystems.keys()];
  }

  listControllers(): ControllerSummary[] {
    return [...this.controllers.values()].map((c) => ({
      cntlid: c.cntlid,
      kind: c.kind,
      subnqn: c.subsys.nqn,
      hostnqn: c.hostnqn,
      state: c.state,
      ioQueues: c.ioQueues.size,
      kato: c.kato,
      stats: c.stats.snapshot(),
    }));
  }

  namespaceStats(subnqn: string, nsid: number): IoStatsSnapshot | undefined {
    return this.subsystems.get(subnqn)?.namespaces.get(nsid)?.stats.snapshot();
  }

  // ---- CoreTarget ----

  get inCapsuleBytes(): number {
    return this.options.inCapsuleBytes;
  }

  openQueue(tq: TransportQueue): CoreQueue {
    return new Queue(this, tq);
  }

  // ---- used by the core's command handlers ----

  /** The NVM subsystem or the discovery subsystem named `nqn`. */
  findSubsystem(nqn: string): Subsystem | undefined {
    return nqn === DISCOVERY_NQN ? this.discovery : this.subsystems.get(nqn);
  }

  /**
   * Subsystem `nqn` as a host reaches it through port `portId` (at Connect): undefined
   * when that port does not expose it, as nvmet refuses it. Discovery is on every port;
   * a port the target was not told about restricts nothing.
   */
  findSubsystemOn(nqn: string, portId: number): Subsystem | undefined {
    const s = this.findSubsystem(nqn);
    if (!s || s === this.discovery) return s;
    const port = this.ports.get(portId);
    return port && !port.reaches(nqn) ? undefined : s;
  }

  findController(cntlid: number): Controller | undefined {
    return this.controllers.get(cntlid);
  }

  /** An admin Connect passed its checks: a new controller, or null when no CNTLID is free. */
  createController(q: Queue, subsys: Subsystem, d: ConnectData, kato: number): Controller | null {
    const cntlid = this.allocCntlid();
    if (cntlid === null) return null;
    const ctrl = new Controller(this, {
      cntlid,
      subsys,
      hostnqn: d.hostnqn,
      hostid: d.hostid,
      kato,
      port: q.tq.port,
      adminQueue: q,
    });
    this.controllers.set(cntlid, ctrl);
    subsys.controllers.add(ctrl);
    return ctrl;
  }

  /** ControllerEnv: the controller was deleted. */
  release(ctrl: Controller): void {
    if (this.controllers.get(ctrl.cntlid) === ctrl) this.controllers.delete(ctrl.cntlid);
    ctrl.subsys.controllers.delete(ctrl);
  }

  portList(): PortEntry[] {
    return [...this.ports.values()].sort((a, b) => a.info.portId - b.info.portId);
  }

  subsystemList(): Subsystem[] {
    return [...this.subsystems.values()];
  }

  /** Discovery log generation counter: bumped on every change a host could see. */
  get discoveryGenctr(): number {
    return this.genctr;
  }

  // ---- private ----

  private nvmSubsystem(nqn: string): Subsystem {
    const s = this.subsystems.get(nqn);
    if (!s) throw new Error(`Subsystem ${nqn} does not exist`);
    return s;
  }

  /** A host drops a namespace whose id shows up in another subsystem (facts §7). */
  private assertUniqueIds(ns: Namespace): void {
    const mine = new Set(ns.ids());
    for (const s of this.subsystems.values()) {
      for (const other of s.namespaces.values()) {
        const clash = other.ids().find((id) => mine.has(id));
        if (clash)
          throw new Error(
            `Namespace id ${clash} is already used by namespace ${other.nsid} of ${s.nqn}`,
          );
      }
    }
  }

  /** Round robin through the range, so a stale I/O Connect cannot hit a fresh controller. */
  private allocCntlid(): number | null {
    const { cntlidMin: min, cntlidMax: max } = this.options;
    for (let i = 0; i <= max - min; i++) {
      const id = this.nextCntlid;
      this.nextCntlid = id >= max ? min : id + 1;
      if (!this.controllers.has(id)) return id;
    }
    return null;
  }

  private discoveryChanged(): void {
    this.genctr++;
    for (const c of this.discovery.controllers) c.notifyDiscoveryChanged();
  }
}
