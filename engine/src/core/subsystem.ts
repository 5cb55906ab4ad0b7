/**
 * An NVM subsystem (or the discovery subsystem): identity strings shared by both
 * nodes of a pair, the host access list, its namespaces and live controllers.
 */
import { DISCOVERY_NQN } from '../protocol/opcodes.js';
import type { Controller } from './controller.js';
import type { Namespace } from './namespace.js';
import { assertNqn } from './nqn.js';

export interface SubsystemConfig {
  nqn: string;
  /** SN (≤ 20 printable ASCII), MN (≤ 40), FR (≤ 8): keep identical on both nodes. */
  serial: string;
  model: string;
  firmware?: string;
  /** Any host may connect (default false: only `hosts`). */
  allowAnyHost?: boolean;
  /** Host NQNs allowed to connect. */
  hosts?: readonly string[];
  /** NN and MNAN: the highest NSID (default 1024). */
  maxNamespaces?: number;
}

export type SubsystemKind = 'nvm' | 'discovery';

export class Subsystem {
  readonly nqn: string;
  readonly serial: string;
  readonly model: string;
  readonly firmware: string;
  readonly maxNamespaces: number;
  allowAnyHost: boolean;
  readonly hosts = new Set<string>();
  /** By nsid. */
  readonly namespaces = new Map<number, Namespace>();
  readonly controllers = new Set<Controller>();

  constructor(
    readonly kind: SubsystemKind,
    cfg: SubsystemConfig,
  ) {
    if (kind === 'nvm') {
      assertNqn(cfg.nqn, 'subsystem NQN');
      if (cfg.nqn === DISCOVERY_NQN)
        throw new Error('The discovery NQN cannot be used for an NVM subsystem');
    }
    this.nqn = cfg.nqn;
    this.serial = ascii(cfg.serial, 20, 'serial number', 'serial');
    this.model = ascii(cfg.model, 40, 'model number', 'model');
    this.firmware = ascii(cfg.firmware ?? '1.0', 8, 'firmware revision', 'firmware');
    this.maxNamespaces = cfg.maxNamespaces ?? 1024;
    if (
      !Number.isInteger(this.maxNamespaces) ||
      this.maxNamespaces < 1 ||
      this.maxNamespaces > 0xfffffffe
    ) {
      throw new Error(`maxNamespaces must be 1..4294967294, got ${cfg.maxNamespaces}`);
    }
    this.allowAnyHost = kind === 'discovery' || (cfg.allowAnyHost ?? false);
    this.setHosts(cfg.hosts ?? []);
  }

  /** Replaces the allow list (validated first, so a bad NQN changes nothing). */
  setHosts(hosts: readonly string[]): void {
    for (const h of hosts) assertNqn(h, 'host NQN');
    this.hosts.clear();
    for (const h of hosts) this.hosts.add(h);
  }

  allows(hostnqn: string): boolean {
    return this.allowAnyHost || this.hosts.has(hostnqn);
  }

  /** Active NSIDs, ascending. */
  nsids(): number[] {
    return [...this.namespaces.keys()].sort((a, b) => a - b);
  }
}

/** `field` names the configuration field at fault, for callers that report it. */
function ascii(v: string, max: number, what: string, field: string): string {
  const bad = (why: string) =>
    Object.assign(new Error(`Invalid ${what} "${v}": ${why}`), { field });
  if (!/^[\x20-\x7e]*$/.test(v)) throw bad('use printable ASCII only');
  const t = v.trimEnd();
  if (t.length === 0 || t.length > max) throw bad(`1..${max} characters`);
  return t;
}
