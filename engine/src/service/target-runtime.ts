/**
 * The live NVMe/TCP target of this node: the core Target, one TCP listener per port
 * and the open backends of every namespace. Each change is all-or-nothing: when a
 * step fails (port in use, backing file missing), what was already done is undone
 * and the error says what to fix. The engine persists a change only after it applied
 * here; `branchsan export` uses this without a database.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { IoTuning } from '../../../contract/api.js';
import { Target, type TargetOptions } from '../core/index.js';
import { IN_CAPSULE_DATA_SIZE } from '../protocol/tcp-limits.js';
import { BackendError, type BlockBackend } from '../storage/backend.js';
import {
  FdBackend,
  statIdentity,
  type BackingState,
  type IoThreadsEvent,
  type StorageGone,
} from '../storage/file.js';
import { openBackend, type BackendSpec } from '../storage/open.js';
import { TcpTransport } from '../transport/tcp/index.js';
import {
  processPeerMemory,
  type PeerMemoryEvent,
  type PeerMemoryGuard,
} from '../transport/tcp/peer-memory.js';
import { cannotListen, UserError } from '../util/errors.js';
import { BoundedCalls, LATE, within } from '../util/within.js';
import type { Logger } from '../util/log.js';

export interface PortSpec {
  portId: number;
  host: string;
  port: number;
}

export interface SubsystemSpec {
  nqn: string;
  serial: string;
  model: string;
  allowAnyHost: boolean;
  hosts: string[];
}

export interface NamespaceSpec {
  nsid: number;
  backend: BackendSpec;
  nguid: string;
  uuid: string;
  anaGroup: number;
}

export const FIRMWARE = '0.1';

/** The subsystem and NSID of a backends key (`${nqn}#${nsid}`). */
function namespaceOf(key: string): { nqn: string; nsid: number } {
  const at = key.lastIndexOf('#');
  return { nqn: key.slice(0, at), nsid: Number(key.slice(at + 1)) };
}

function stillClosing(location: string, of: { nqn: string; nsid: number }): UserError {
  return new UserError(
    `${location} still belongs to removed namespace ${of.nsid} of ${of.nqn}: its storage has not finished the writes in flight.`,
    'Check the disk or mount it is on (a stalled disk, a hung network mount); add it again once that namespace has closed (the engine log says when).',
    'unavailable',
    'backend.path',
  );
}

/**
 * How long opening a backend waits for its file system: a local disk answers in
 * milliseconds, a network mount that is merely slow in well under this.
 */
export const OPEN_WAIT_MS = 10_000;

/** How long removing a namespace waits for its backend to close (see retire()). */
export const RETIRE_WAIT_MS = 5_000;

/**
 * ANA groups the node reports (ANAGRPMAX = NANAGRPID): each volume has a group of its
 * own (TargetService), so as many as one subsystem has NSIDs. A Linux host reads 32
 * bytes per group in every ANA log read (16 + NANAGRPID × 32 + MNAN × 4: 36 KiB).
 */
export const MAX_ANA_GROUPS = 1024;

/** How each IoThreadsEvent is logged (the event log's wording is TargetService's). */
const IO_THREADS_LOG: Record<IoThreadsEvent['kind'], ['error' | 'warn', string]> = {
  failed: ['error', 'storage I/O threads failed: the I/O they held fails and hosts retry it'],
  'start-failed': ['error', 'new storage I/O threads could not start; I/O fails until they do'],
  restarted: ['warn', 'new storage I/O threads took over'],
};

/** An IoThreadsEvent of one namespace's backend. */
export type NamespaceIoThreadsEvent = IoThreadsEvent & {
  nqn: string;
  nsid: number;
  /** Tells this namespace from a later one under the same nsid. */
  nguid: string;
  location: string;
};

/** A namespace whose device went away under it (FdBackend.onStorageGone). */
export type NamespaceStorageGone = StorageGone & {
  nqn: string;
  nsid: number;
  nguid: string;
  location: string;
  kind: string;
};

export class TargetRuntime {
  readonly target: Target;
  private readonly listeners = new Map<number, { spec: PortSpec; transport: TcpTransport }>();
  private readonly backends = new Map<string, BlockBackend>();
  /** Backend opens, by namespace (nqn#nsid), each waited for at most openWaitMs. */
  private readonly opens: BoundedCalls;
  /**
   * Backends of removed namespaces whose close has not ended (writes in flight on a
   * stalled disk): their files still count as served, so none is opened again while
   * a stale write may still land in it.
   */
  private readonly closing = new Map<BlockBackend, { nqn: string; nsid: number }>();
  /** Told, after the log line, when a namespace's I/O threads fail or are replaced. */
  onIoThreads: ((e: NamespaceIoThreadsEvent) => void) | null = null;
  /** Told, after the log line, when the device of a namespace goes away under it. */
  onStorageGone: ((e: NamespaceStorageGone) => void) | null = null;
  /**
   * Told, after the log line, when the bound on what all NVMe/TCP connections hold
   * disconnects peers, or the process goes over that bound and back under it.
   */
  onPeerMemory: ((e: PeerMemoryEvent) => void) | null = null;
  private readonly unlistenMemory: () => void;

  constructor(
    private readonly log: Logger,
    opts: TargetOptions = {},
    /** How long opening a backend may wait for its file system (see addNamespace). */
    openWaitMs = OPEN_WAIT_MS,
    /** The bound on what the NVMe/TCP connections hold (the process's own by default). */
    readonly memory: PeerMemoryGuard = processPeerMemory,
  ) {
    this.unlistenMemory = memory.listen((e) => this.onPeerMemory?.(e));
    this.opens = new BoundedCalls(openWaitMs);
    this.target = new Target({
      inCapsuleBytes: IN_CAPSULE_DATA_SIZE,
      maxAnaGroups: MAX_ANA_GROUPS,
      logger: { info: (m, f) => log.info(m, f), warn: (m, f) => log.warn(m, f) },
      ...opts,
    });
  }

  /** Listens on host:port, then advertises it; a port in use changes nothing. */
  async addPort(spec: PortSpec): Promise<PortSpec> {
    if (this.listeners.has(spec.portId)) {
      throw new UserError(
        `Port id ${spec.portId} is already configured.`,
        'Pick another port id.',
        'conflict',
        'portId',
      );
    }
    let transport: TcpTransport;
    try {
      transport = await TcpTransport.listen(
        {
          host: spec.host,
          port: spec.port,
          portId: spec.portId,
          log: this.log.child({ component: 'nvme-tcp', port: spec.port }),
          memory: this.memory,
        },
        this.target,
      );
    } catch (err) {
      throw cannotListen('nvme-tcp', spec.host, spec.port, err);
    }
    const bound = { ...spec, port: transport.address().port };
    try {
      this.target.addPort({
        portId: spec.portId,
        trtype: 'tcp',
        adrfam: spec.host.includes(':') ? 'ipv6' : 'ipv4',
        traddr: spec.host,
        trsvcid: String(bound.port),
      });
    } catch (err) {
      await transport.close();
      throw asUserError(err, 'portId');
    }
    this.listeners.set(spec.portId, { spec: bound, transport });
    this.log.info('NVMe/TCP port listening', { ...bound });
    return bound;
  }

  async removePort(portId: number): Promise<void> {
    const l = this.listeners.get(portId);
    if (!l)
      throw new UserError(`Port id ${portId} does not exist.`, undefined, 'not-found', 'portId');
    this.target.removePort(portId);
    this.listeners.delete(portId);
    await l.transport.close();
  }

  ports(): PortSpec[] {
    return [...this.listeners.values()].map((l) => l.spec);
  }

  addSubsystem(spec: SubsystemSpec): void {
    try {
      this.target.addSubsystem({ ...spec, firmware: FIRMWARE });
    } catch (err) {
      throw asUserError(err, 'nqn'); // or the field the core names (serial, model)
    }
  }

  async removeSubsystem(nqn: string): Promise<void> {
    try {
      this.target.removeSubsystem(nqn);
    } catch (err) {
      throw asUserError(err, 'nqn');
    }
    const retired: Promise<void>[] = [];
    for (const [key, backend] of this.backends) {
      if (key.startsWith(`${nqn}#`)) retired.push(this.retire(key, backend));
    }
    await Promise.all(retired);
  }

  /**
   * Detaches a removed namespace's backend and closes it, waiting for that at most
   * RETIRE_WAIT_MS: a close waits for the writes in flight, which a stalled disk can
   * hold for minutes, and every configuration change waits behind this one. Past
   * that the close goes on by itself (logged when it ends).
   */
  private async retire(key: string, backend: BlockBackend): Promise<void> {
    this.backends.delete(key);
    const where = namespaceOf(key);
    this.closing.set(backend, where);
    let late = false;
    const closed = backend
      .close()
      .catch((err: unknown) =>
        this.log.warn('closing a removed namespace failed', { ...where, err }),
      )
      .finally(() => {
        this.closing.delete(backend);
        if (late) this.log.info('removed namespace closed at last', where);
      });
    if ((await within(closed, RETIRE_WAIT_MS)) === LATE) {
      late = true;
      this.log.warn('removed namespace still closing: its storage has writes in flight', {
        ...where,
        location: backend.location,
      });
    }
  }

  /** Whether a file namespace's path still names the file it serves (FdBackend.backingState). */
  async backingState(
    nqn: string,
    nsid: number,
  ): Promise<{ state: BackingState; fd: number } | undefined> {
    const b = this.backends.get(`${nqn}#${nsid}`);
    return b instanceof FdBackend ? b.backingState() : undefined;
  }

  /**
   * The namespace whose backend is the file or device `identity` names: a served one,
   * or a removed one still closing (`closing`).
   */
  private servedAs(
    identity: string,
  ): { nqn: string; nsid: number; location: string; closing: boolean } | undefined {
    for (const [key, b] of this.backends) {
      if (!(b instanceof FdBackend) || b.identity !== identity) continue;
      return { ...namespaceOf(key), location: b.location, closing: false };
    }
    for (const [b, where] of this.closing) {
      if (b instanceof FdBackend && b.identity === identity)
        return { ...where, location: b.location, closing: true };
    }
    return undefined;
  }

  /**
   * Refuses a path whose file or device (one of `names`, see pathNames) a removed
   * namespace still closes: checked before opening, where the addon's lock would only
   * say that "another process" has it.
   */
  checkNotClosing(path: string, names: readonly string[]): void {
    for (const [b, where] of this.closing) {
      if (b instanceof FdBackend && names.includes(b.identity)) throw stillClosing(path, where);
    }
  }

  /** Which file or device a namespace serves (FdTarget.identity); undefined when not open. */
  servedIdentity(nqn: string, nsid: number): string | undefined {
    const b = this.backends.get(`${nqn}#${nsid}`);
    return b instanceof FdBackend ? b.identity : undefined;
  }

  /** Why a namespace is not served though attached: its device went away (FdBackend.goneReason). */
  storageGone(nqn: string, nsid: number): string | undefined {
    const b = this.backends.get(`${nqn}#${nsid}`);
    return (b instanceof FdBackend && b.goneReason) || undefined;
  }

  /** Whether a namespace's I/O threads failed and new ones have not taken over yet. */
  ioThreadsDown(nqn: string, nsid: number): boolean | undefined {
    const b = this.backends.get(`${nqn}#${nsid}`);
    return b instanceof FdBackend ? b.ioThreadsDown : undefined;
  }

  setHosts(nqn: string, hosts: string[], allowAnyHost: boolean): void {
    try {
      this.target.setAllowedHosts(nqn, hosts, allowAnyHost);
    } catch (err) {
      throw asUserError(err, 'hostNqn');
    }
  }

  /**
   * Opens the backend, then attaches it; the backend is closed again if attaching fails.
   * An open its file system does not answer within openWaitMs (a hung network or FUSE
   * mount) fails as unavailable, so the engine's start and every change go on; the
   * call itself stays out until the mount answers (then its backend is closed), and
   * until then no new open of that namespace starts (each would hold a pool thread).
   */
  async addNamespace(nqn: string, spec: NamespaceSpec): Promise<BlockBackend> {
    const key = `${nqn}#${spec.nsid}`;
    const where = spec.backend.kind === 'memory' ? 'memory' : spec.backend.path;
    const notAnswering = (what: string) =>
      new UserError(
        what,
        `Its disk or mount does not answer: check it (\`stat ${path.dirname(where)}\`), or unmount a hung network mount (\`umount -l\`).`,
        'unavailable',
        'backend.path',
      );
    if (this.opens.outSince(key) !== undefined)
      throw notAnswering(`An earlier open of ${where} still waits for its file system.`);
    let backend: BlockBackend;
    try {
      // opened after all, once given up: closed again, and a file it created removed
      // (else the same add, tried again, would find it there: "already exists")
      const got = await this.opens.run(key, () => openBackend(spec.backend), {
        late: (b) => this.discard(b, spec.backend),
      });
      if (got === LATE) {
        throw notAnswering(
          `${where} did not open within ${this.opens.limitMs / 1000} s: its file system does not answer.`,
        );
      }
      backend = got;
    } catch (err) {
      if (err instanceof UserError) throw err;
      throw backendUserError(err, spec.backend);
    }
    // Under another name (a symlinked directory, a by-id link) a file already served
    // would be two namespaces on one file: caught here whatever named it (an add, the
    // retry of an offline namespace, a restart), and without the file locks of the addon.
    const twin = backend instanceof FdBackend ? this.servedAs(backend.identity) : undefined;
    if (twin?.closing) {
      await this.discard(backend, spec.backend);
      throw stillClosing(backend.location, twin);
    }
    if (twin) {
      await this.discard(backend, spec.backend);
      throw new UserError(
        `${backend.location} is the same file or device as namespace ${twin.nsid} of ${twin.nqn} (${twin.location}).`,
        'One backing file or device serves one namespace: remove one of the two.',
        'conflict',
        'backend.path',
      );
    }
    try {
      this.target.addNamespace(nqn, {
        nsid: spec.nsid,
        backend,
        nguid: spec.nguid,
        uuid: spec.uuid,
        anagrpid: spec.anaGroup,
      });
    } catch (err) {
      await this.discard(backend, spec.backend);
      throw asUserError(err, 'nsid');
    }
    this.backends.set(`${nqn}#${spec.nsid}`, backend);
    if (backend instanceof FdBackend) {
      const where = { nqn, nsid: spec.nsid, nguid: spec.nguid, location: backend.location };
      backend.onIoThreads = (e) => {
        this.logIoThreads(where, e);
        this.onIoThreads?.({ ...e, ...where });
      };
      // the namespace stays attached, its ANA group inaccessible (the core sees closed)
      backend.onStorageGone = (e) => {
        this.log.error(
          'the storage of a namespace is gone: this node no longer serves it, hosts use another path or wait',
          { ...where, ...e },
        );
        this.onStorageGone?.({ ...e, ...where, kind: backend.kind });
      };
    }
    this.log.info('namespace attached', {
      nqn,
      nsid: spec.nsid,
      backend: backend.kind,
      location: backend.location,
      // How reads are served: on the event loop when cached (see InlineReads), else by a
      // worker; whether lone writes run on the event loop (a RAM-only file).
      ...(backend instanceof FdBackend
        ? {
            inlineReads: backend.inlineReads ?? 'off',
            inlineWrites: backend.inlineWrites,
            nativeAddon: backend.nativeNote ?? 'loaded',
            // the volume's io tuning as asked for ({}: the defaults)
            io: spec.backend.kind === 'memory' ? {} : (spec.backend.io ?? {}),
          }
        : {}),
    });
    return backend;
  }

  /**
   * Closes a backend this runtime opened but does not serve; a file its spec created
   * is removed, provided its path still names that file (nothing of it was served, and
   * the caller was told the add failed).
   */
  private async discard(backend: BlockBackend, spec: BackendSpec): Promise<void> {
    await backend.close();
    if (spec.kind !== 'file' || !spec.create || !(backend instanceof FdBackend)) return;
    try {
      if (statIdentity(await fs.promises.lstat(spec.path)) !== backend.identity) return;
      await fs.promises.unlink(spec.path);
      this.log.info('removed the file of a namespace that was not added', { path: spec.path });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      this.log.warn('could not remove the file of a namespace that was not added', {
        path: spec.path,
        err,
      });
    }
  }

  private logIoThreads(
    where: { nqn: string; nsid: number; nguid: string; location: string },
    e: IoThreadsEvent,
  ): void {
    const { kind, ...fields } = e;
    const [level, msg] = IO_THREADS_LOG[kind];
    this.log[level](msg, { ...where, ...fields });
  }

  /**
   * Runs an attached namespace's I/O as `io` asks from now on (FdBackend.retune); false
   * when it is not attached, or has no I/O threads to tune (memory).
   */
  retune(nqn: string, nsid: number, io: IoTuning): boolean {
    const backend = this.backends.get(`${nqn}#${nsid}`);
    if (!(backend instanceof FdBackend)) return false;
    backend.retune(io);
    this.log.info('namespace io tuning changed', {
      nqn,
      nsid,
      io,
      inlineReads: backend.inlineReads ?? 'off',
      inlineWrites: backend.inlineWrites,
    });
    return true;
  }

  /** Whether the namespace is attached (a configured one may be offline: its backend failed to open). */
  hasNamespace(nqn: string, nsid: number): boolean {
    return this.backends.has(`${nqn}#${nsid}`);
  }

  async removeNamespace(nqn: string, nsid: number): Promise<void> {
    try {
      this.target.removeNamespace(nqn, nsid);
    } catch (err) {
      throw asUserError(err, 'nsid');
    }
    const key = `${nqn}#${nsid}`;
    const backend = this.backends.get(key);
    if (backend) await this.retire(key, backend);
  }

  /**
   * Graceful stop: stop accepting, let commands in flight complete and answer them
   * (up to drainMs), then disconnect hosts, stop listening, close backends.
   */
  async close(drainMs = 5000): Promise<void> {
    this.unlistenMemory();
    const drained = [...this.listeners.values()].map((l) => l.transport.drain(drainMs));
    this.target.quiesce();
    await Promise.all(drained);
    this.target.close();
    await Promise.all([...this.listeners.values()].map((l) => l.transport.close()));
    this.listeners.clear();
    await Promise.all([...this.backends.values(), ...this.closing.keys()].map((b) => b.close()));
    this.backends.clear();
  }
}

/** A fresh, globally unique NGUID (16 bytes as 32 hex digits). */
export function newNguid(): string {
  return randomBytes(16).toString('hex');
}

/** A random (version 4) UUID string. */
export function newUuid(): string {
  return randomUUID();
}

/** Stable identifiers derived from a name: the same export gets the same ids after a restart. */
export function stableIds(seed: string): { nguid: string; uuid: string } {
  const h = createHash('sha256').update(seed).digest();
  const u = Buffer.from(h.subarray(16, 32));
  u[6] = (u[6]! & 0x0f) | 0x80; // version 8: custom, name-derived
  u[8] = (u[8]! & 0x3f) | 0x80;
  const x = u.toString('hex');
  return {
    nguid: h.subarray(0, 16).toString('hex'),
    uuid: `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`,
  };
}

/** A core refusal as a UserError; its field is the one the core named, else `field`. */
function asUserError(err: unknown, field: string): Error {
  if (err instanceof UserError) return err;
  const named = (err as { field?: unknown }).field;
  if (typeof named === 'string') field = named;
  const msg = (err as Error).message;
  const code = /already exists|in use|duplicate/i.test(msg)
    ? 'conflict'
    : /does not exist|unknown|no such/i.test(msg)
      ? 'not-found'
      : 'invalid';
  return new UserError(msg.endsWith('.') ? msg : `${msg}.`, undefined, code, field);
}

function backendUserError(err: unknown, spec: BackendSpec): Error {
  if (err instanceof BackendError) {
    return new UserError(err.message, backendHint(err, spec), backendCode(err), 'backend');
  }
  return asUserError(err, 'backend');
}

/** What kind of refusal: the API's error code for it. */
function backendCode(err: BackendError): string {
  if (err.kind === 'out-of-range') return 'invalid';
  if (err.errno === 'ENOENT' || err.errno === 'ENOTDIR') return 'not-found';
  if (err.errno === 'EISDIR' || NOT_A_DEVICE.test(err.message)) return 'invalid';
  if (err.errno === 'ENOTCONN' || err.errno === 'ESTALE') return 'unavailable';
  return 'conflict'; // held by another program, exists already, no permission, no space
}

const NOT_A_DEVICE = /is not a block device/;

function backendHint(err: BackendError, spec: BackendSpec): string {
  if (spec.kind === 'memory') {
    return /multiple of/.test(err.message)
      ? 'Choose a size that is a whole number of blocks (for example 64M or 1G).'
      : 'Choose a smaller size.';
  }
  if (err.errno === 'ENOENT') {
    if (spec.kind !== 'file') return 'No such device: check the path (ls -l /dev/disk/by-id).';
    return spec.create
      ? `The directory ${path.dirname(spec.path)} does not exist: create it first (mkdir -p), or choose another path.`
      : `Create it, or pass a size to create a new sparse file at ${spec.path}.`;
  }
  if (err.errno === 'EEXIST')
    return 'The file already exists: use it without a size, or pick another path.';
  if (err.errno === 'EISDIR') return 'That is a directory: give the path of a file (in it).';
  if (NOT_A_DEVICE.test(err.message))
    return 'Give a block device (lsblk lists them), or serve a file with kind "file".';
  if (err.kind === 'out-of-range' && spec.kind === 'file' && /multiple of/.test(err.message)) {
    return spec.create
      ? 'Choose a size that is a whole number of blocks (for example 64M or 10G).'
      : `Its size must be a whole, non-zero number of blocks: resize it (truncate -s SIZE '${spec.path}') or serve another file.`;
  }
  if (err.errno === 'EBUSY') {
    const who = `fuser -v '${spec.path}'`;
    return spec.kind === 'file'
      ? `Stop that process first (${who} names it), or serve a copy of the file.`
      : `Unmount it or stop the program that holds it (${who} and lsblk show which).`;
  }
  if (err.errno === 'EACCES' || err.errno === 'EPERM')
    return "The engine lacks permission: run it as root or fix the file's owner.";
  if (err.errno === 'ENOSPC' || err.errno === 'EDQUOT')
    return 'Free space on its filesystem, or choose a smaller size.';
  if (err.errno === 'ENOTCONN' || err.errno === 'ESTALE')
    return `Remount it (\`findmnt -T '${path.dirname(spec.path)}'\` shows the mount), then try again.`;
  return 'Check the path, and that nothing else uses it.';
}
