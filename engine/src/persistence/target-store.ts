/**
 * The target's configuration as stored: ports, subsystems, allowed hosts, namespaces.
 * Pure data access; validation against the live target happens in the service layer,
 * which calls these inside one transaction per change.
 */
import { IoTuning } from '../../../contract/api.js';
import type { Db } from './db.js';

export interface PortRow {
  portId: number;
  host: string;
  port: number;
}

export interface NamespaceRow {
  nsid: number;
  backendKind: 'file' | 'block' | 'memory';
  path: string;
  sizeBytes: number;
  blockSize: 512 | 4096;
  nguid: string;
  uuid: string;
  anaGroup: number;
  /**
   * A block device's identity when it was added (JSON, storage/device-identity.ts),
   * compared at every open; null for files, memory, and rows from before it was kept.
   */
  device?: string | null;
  /** Its I/O tuning, as added or as last tuned ({}: the defaults). */
  io: IoTuning;
  /**
   * Why the stored tuning is not used (the column edited into something that is not
   * one): the namespace is then served with the defaults.
   */
  ioProblem?: string;
}

export interface SubsystemRow {
  nqn: string;
  serial: string;
  model: string;
  allowAnyHost: boolean;
  hosts: string[];
  namespaces: NamespaceRow[];
}

export interface TargetConfig {
  ports: PortRow[];
  subsystems: SubsystemRow[];
}

export class TargetStore {
  constructor(private readonly db: Db) {}

  load(): TargetConfig {
    const ports = this.db
      .prepare('SELECT port_id AS portId, host, port FROM ports ORDER BY port_id')
      .all() as PortRow[];
    const subs = this.db
      .prepare(
        'SELECT nqn, serial, model, allow_any_host AS allowAnyHost FROM subsystems ORDER BY created_at, nqn',
      )
      .all() as (Omit<SubsystemRow, 'hosts' | 'namespaces' | 'allowAnyHost'> & {
      allowAnyHost: number;
    })[];
    const hosts = this.db.prepare(
      'SELECT host_nqn FROM subsystem_hosts WHERE subsystem_nqn = ? ORDER BY host_nqn',
    );
    const nss = this.db.prepare(
      `SELECT nsid, backend_kind AS backendKind, path, size_bytes AS sizeBytes, block_size AS blockSize,
              nguid, uuid, ana_group AS anaGroup, device, io
       FROM namespaces WHERE subsystem_nqn = ? ORDER BY nsid`,
    );
    const namespaces = (nqn: string): NamespaceRow[] =>
      (nss.all(nqn) as (Omit<NamespaceRow, 'io'> & { io: string | null })[]).map((n) => ({
        ...n,
        ...ioTuningOf(n.io),
      }));
    return {
      ports,
      subsystems: subs.map((s) => ({
        ...s,
        allowAnyHost: s.allowAnyHost === 1,
        hosts: (hosts.all(s.nqn) as { host_nqn: string }[]).map((h) => h.host_nqn),
        namespaces: namespaces(s.nqn),
      })),
    };
  }

  addPort(p: PortRow): void {
    this.db
      .prepare('INSERT INTO ports (port_id, host, port) VALUES (?, ?, ?)')
      .run(p.portId, p.host, p.port);
  }

  removePort(portId: number): boolean {
    return this.db.prepare('DELETE FROM ports WHERE port_id = ?').run(portId).changes > 0;
  }

  addSubsystem(s: Omit<SubsystemRow, 'namespaces'>): void {
    this.db
      .prepare(
        'INSERT INTO subsystems (nqn, serial, model, allow_any_host, created_at) VALUES (?, ?, ?, ?, ?)',
      )
      .run(s.nqn, s.serial, s.model, s.allowAnyHost ? 1 : 0, Date.now());
    for (const h of s.hosts) this.allowHost(s.nqn, h);
  }

  removeSubsystem(nqn: string): boolean {
    return this.db.prepare('DELETE FROM subsystems WHERE nqn = ?').run(nqn).changes > 0;
  }

  setAllowAnyHost(nqn: string, allow: boolean): void {
    this.db
      .prepare('UPDATE subsystems SET allow_any_host = ? WHERE nqn = ?')
      .run(allow ? 1 : 0, nqn);
  }

  allowHost(nqn: string, hostNqn: string): void {
    this.db
      .prepare('INSERT OR IGNORE INTO subsystem_hosts (subsystem_nqn, host_nqn) VALUES (?, ?)')
      .run(nqn, hostNqn);
  }

  disallowHost(nqn: string, hostNqn: string): boolean {
    return (
      this.db
        .prepare('DELETE FROM subsystem_hosts WHERE subsystem_nqn = ? AND host_nqn = ?')
        .run(nqn, hostNqn).changes > 0
    );
  }

  addNamespace(nqn: string, ns: NamespaceRow): void {
    this.db
      .prepare(
        `INSERT INTO namespaces (subsystem_nqn, nsid, backend_kind, path, size_bytes, block_size, nguid, uuid, ana_group, device, io)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(
        nqn,
        ns.nsid,
        ns.backendKind,
        ns.path,
        ns.sizeBytes,
        ns.blockSize,
        ns.nguid,
        ns.uuid,
        ns.anaGroup,
        ns.device ?? null,
        storedIo(ns.io),
      );
  }

  /** A namespace's io tuning, the whole of it. */
  setIo(nqn: string, nsid: number, io: IoTuning): void {
    this.db
      .prepare('UPDATE namespaces SET io = ? WHERE subsystem_nqn = ? AND nsid = ?')
      .run(storedIo(io), nqn, nsid);
  }

  /** What an open found at a namespace's path, taken as what it serves from now on. */
  setBacking(
    nqn: string,
    nsid: number,
    b: { path: string; sizeBytes: number; device: string | null },
  ): void {
    this.db
      .prepare(
        'UPDATE namespaces SET path = ?, size_bytes = ?, device = ? WHERE subsystem_nqn = ? AND nsid = ?',
      )
      .run(b.path, b.sizeBytes, b.device, nqn, nsid);
  }

  /** Moves a namespace to another ANA group (see TargetService.separateAnaGroups). */
  setAnaGroup(nqn: string, nsid: number, anaGroup: number): void {
    this.db
      .prepare('UPDATE namespaces SET ana_group = ? WHERE subsystem_nqn = ? AND nsid = ?')
      .run(anaGroup, nqn, nsid);
  }

  removeNamespace(nqn: string, nsid: number): boolean {
    return (
      this.db.prepare('DELETE FROM namespaces WHERE subsystem_nqn = ? AND nsid = ?').run(nqn, nsid)
        .changes > 0
    );
  }

  audit(actor: string, action: string, details: unknown): void {
    this.db
      .prepare('INSERT INTO audit (ts, actor, action, details) VALUES (?, ?, ?, ?)')
      .run(Date.now(), actor, action, JSON.stringify(details));
  }
}

/** The io column of a tuning: NULL for the defaults. */
const storedIo = (io: IoTuning): string | null =>
  Object.keys(io).length > 0 ? JSON.stringify(io) : null;

/**
 * A stored I/O tuning: the defaults ({}) for NULL, and, with the reason, for a value
 * that is not one (the column edited by hand).
 */
function ioTuningOf(json: string | null): Pick<NamespaceRow, 'io' | 'ioProblem'> {
  if (json === null) return { io: {} };
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return { io: {}, ioProblem: `not JSON: ${JSON.stringify(json.slice(0, 80))}` };
  }
  const r = IoTuning.safeParse(value);
  if (r.success) return { io: r.data };
  const i = r.error.issues[0]!;
  return { io: {}, ioProblem: `${['io', ...i.path].join('.')}: ${i.message}` };
}
