/**
 * A namespace: an NSID bound to the backend object it was enabled with, plus the
 * identifiers both nodes of a pair present byte for byte (NGUID, EUI64, UUID) and
 * its ANA group.
 */
import type { BlockBackend } from '../storage/backend.js';
import { IoStats } from './stats.js';

export interface NamespaceConfig {
  /** 1..the subsystem's maxNamespaces, unique in the subsystem. */
  nsid: number;
  backend: BlockBackend;
  /** 16 bytes, non-zero, unique across the target: a Buffer or 32 hex digits. */
  nguid: Uint8Array | string;
  /** 8 bytes (optional): a Buffer or 16 hex digits. */
  eui64?: Uint8Array | string;
  /** 16 bytes (optional): a Buffer or a UUID string. */
  uuid?: Uint8Array | string;
  /**
   * ANA group (default 1). The engine gives each volume a group of its own: a group has
   * one state for all its namespaces, so one volume's state must not stall another's.
   */
  anagrpid?: number;
}

export class Namespace {
  readonly nsid: number;
  readonly backend: BlockBackend;
  readonly nguid: Buffer;
  /** All zero when not configured (then left out of the descriptor list). */
  readonly eui64: Buffer;
  readonly uuid: Buffer;
  readonly anagrpid: number;
  readonly blockSize: number;
  /** log2(blockSize): LBADS. */
  readonly lbads: number;
  /** Size in logical blocks (NSZE). */
  readonly blocks: number;
  readonly stats = new IoStats();

  constructor(cfg: NamespaceConfig) {
    this.nsid = cfg.nsid;
    this.backend = cfg.backend;
    this.nguid = parseId(cfg.nguid, 16, 'NGUID');
    if (this.nguid.every((b) => b === 0))
      throw new Error('Invalid NGUID: it must not be all zeroes');
    this.eui64 = cfg.eui64 === undefined ? Buffer.alloc(8) : parseId(cfg.eui64, 8, 'EUI64');
    this.uuid = cfg.uuid === undefined ? Buffer.alloc(16) : parseId(cfg.uuid, 16, 'UUID');
    this.anagrpid = cfg.anagrpid ?? 1;
    this.blockSize = cfg.backend.blockSize;
    this.lbads = Math.log2(this.blockSize);
    // Linux shows a capacity of 0 for block sizes outside 512..4096 (facts §9.8).
    if (!Number.isInteger(this.lbads) || this.lbads < 9 || this.lbads > 12) {
      throw new Error(
        `Namespace ${cfg.nsid}: block size ${this.blockSize} must be 512, 1024, 2048 or 4096`,
      );
    }
    if (cfg.backend.sizeBytes <= 0 || cfg.backend.sizeBytes % this.blockSize !== 0) {
      throw new Error(
        `Namespace ${cfg.nsid}: size ${cfg.backend.sizeBytes} is not a positive multiple of ${this.blockSize}`,
      );
    }
    this.blocks = cfg.backend.sizeBytes / this.blockSize;
  }

  /** Ids for uniqueness checks: the non-zero ones, as hex. */
  ids(): string[] {
    return [this.nguid, this.eui64, this.uuid]
      .filter((b) => b.some((x) => x !== 0))
      .map((b) => b.toString('hex'));
  }
}

function parseId(v: Uint8Array | string, bytes: number, what: string): Buffer {
  let buf: Buffer;
  if (typeof v === 'string') {
    const hex = v.replace(/[-:]/g, '');
    if (!/^[0-9a-fA-F]*$/.test(hex) || hex.length !== bytes * 2) {
      throw new Error(`Invalid ${what} "${v}": expected ${bytes * 2} hex digits`);
    }
    buf = Buffer.from(hex, 'hex');
  } else {
    buf = Buffer.from(v);
  }
  if (buf.length !== bytes)
    throw new Error(`Invalid ${what}: expected ${bytes} bytes, got ${buf.length}`);
  return buf;
}
