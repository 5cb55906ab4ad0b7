/**
 * Log page encoders: error (0x01), SMART (0x02), firmware slot (0x03), changed
 * namespace list (0x04), commands supported and effects (0x05), ANA (0x0C) and the
 * discovery log (0x70). Each returns the whole page; sliceLog() cuts the window a
 * Get Log Page asked for (LPO + length), zero-padded, as hosts read pages in pieces.
 */
import { NQN_FIELD_SIZE } from './opcodes.js';

export const ERROR_LOG_ENTRY_SIZE = 64;
export const SMART_LOG_SIZE = 512;
export const FW_SLOT_LOG_SIZE = 512;
export const CHANGED_NS_LOG_SIZE = 4096;
export const CMD_EFFECTS_LOG_SIZE = 4096;
export const ANA_LOG_HEADER_SIZE = 16;
export const ANA_GROUP_DESC_SIZE = 32;
export const DISC_LOG_HEADER_SIZE = 1024;
export const DISC_LOG_ENTRY_SIZE = 1024;
/** Changed namespace list capacity before it reports overflow. */
export const CHANGED_NS_MAX = 1024;

/** Exactly `length` bytes of `page` starting at `lpo`; bytes past the page read as zero. */
export function sliceLog(page: Buffer, lpo: number, length: number): Buffer {
  if (lpo === 0 && page.length === length) return page;
  const out = Buffer.alloc(length);
  if (lpo < page.length) page.copy(out, 0, lpo, Math.min(page.length, lpo + length));
  return out;
}

/** Error information log: `entries` zeroed 64-byte entries (we record none). */
export function encodeErrorLog(entries: number): Buffer {
  return Buffer.alloc(Math.max(1, entries) * ERROR_LOG_ENTRY_SIZE);
}

export interface SmartCounters {
  /** Bytes read / written by hosts. Reported in thousands of 512-byte units, rounded up. */
  readonly bytesRead: number;
  readonly bytesWritten: number;
  readonly readCommands: number;
  readonly writeCommands: number;
}

/** SMART / Health: only the host I/O counters are meaningful for a virtual target. */
export function encodeSmartLog(c: SmartCounters): Buffer {
  const b = Buffer.alloc(SMART_LOG_SIZE);
  writeU128(b, 32, Math.ceil(c.bytesRead / 512 / 1000));
  writeU128(b, 48, Math.ceil(c.bytesWritten / 512 / 1000));
  writeU128(b, 64, c.readCommands);
  writeU128(b, 80, c.writeCommands);
  return b;
}

/** Firmware slot information: slot 1 active and holding `fr`. */
export function encodeFwSlotLog(fr: string): Buffer {
  const b = Buffer.alloc(FW_SLOT_LOG_SIZE);
  b[0] = 1; // AFI: active slot 1
  b.fill(0x20, 8, 16);
  b.write(fr.slice(0, 8), 8, 8, 'ascii');
  return b;
}

/** Changed namespace list: ascending NSIDs, or 0xFFFFFFFF alone when it overflowed. */
export function encodeChangedNsLog(nsids: readonly number[], overflow: boolean): Buffer {
  const b = Buffer.alloc(CHANGED_NS_LOG_SIZE);
  if (overflow || nsids.length > CHANGED_NS_MAX) {
    b.writeUInt32LE(0xffffffff, 0);
    return b;
  }
  [...nsids].sort((x, y) => x - y).forEach((nsid, i) => b.writeUInt32LE(nsid, i * 4));
  return b;
}

/** Command effects bits. */
export const EFFECTS = { CSUPP: 1 << 0, LBCC: 1 << 1 } as const;

/** Commands supported and effects: acs[256] then iocs[256], u32 each. */
export function encodeCmdEffectsLog(
  acs: ReadonlyMap<number, number>,
  iocs: ReadonlyMap<number, number>,
): Buffer {
  const b = Buffer.alloc(CMD_EFFECTS_LOG_SIZE);
  for (const [op, v] of acs) b.writeUInt32LE(v >>> 0, op * 4);
  for (const [op, v] of iocs) b.writeUInt32LE(v >>> 0, 1024 + op * 4);
  return b;
}

export interface AnaGroupDesc {
  readonly grpid: number;
  readonly chgcnt: number;
  /** ANA state code: 1 optimized, 2 non-optimized, 3 inaccessible, 4 persistent loss, 0xF change. */
  readonly state: number;
  /** Ascending NSIDs in the group (omitted when rgo). */
  readonly nsids: readonly number[];
}

/** ANA log; with rgo (LSP b0) the NSID lists are left out and NNSIDS is 0. */
export function encodeAnaLog(
  chgcnt: number,
  groups: readonly AnaGroupDesc[],
  rgo: boolean,
): Buffer {
  const nsidBytes = rgo ? 0 : groups.reduce((n, g) => n + g.nsids.length * 4, 0);
  const b = Buffer.alloc(ANA_LOG_HEADER_SIZE + groups.length * ANA_GROUP_DESC_SIZE + nsidBytes);
  b.writeBigUInt64LE(BigInt(chgcnt), 0);
  b.writeUInt16LE(groups.length, 8);
  let at = ANA_LOG_HEADER_SIZE;
  for (const g of groups) {
    const nsids = rgo ? [] : [...g.nsids].sort((x, y) => x - y);
    b.writeUInt32LE(g.grpid, at);
    b.writeUInt32LE(nsids.length, at + 4);
    b.writeBigUInt64LE(BigInt(g.chgcnt), at + 8);
    b[at + 16] = g.state & 0x0f;
    at += ANA_GROUP_DESC_SIZE;
    for (const nsid of nsids) {
      b.writeUInt32LE(nsid, at);
      at += 4;
    }
  }
  return b;
}

/**
 * Parses an ANA log page. It faces whatever a controller sends, so every length is
 * checked against the buffer; a malformed page throws an Error naming the offset.
 */
export function decodeAnaLog(b: Buffer): { chgcnt: number; groups: AnaGroupDesc[] } {
  if (b.length < ANA_LOG_HEADER_SIZE) {
    throw new Error(`ANA log: ${b.length} bytes, the header needs ${ANA_LOG_HEADER_SIZE}`);
  }
  const ngrps = b.readUInt16LE(8);
  const groups: AnaGroupDesc[] = [];
  let at = ANA_LOG_HEADER_SIZE;
  for (let i = 0; i < ngrps; i++) {
    if (at + ANA_GROUP_DESC_SIZE > b.length) {
      throw new Error(`ANA log: group ${i + 1} of ${ngrps} at byte ${at} runs past the page`);
    }
    const grpid = b.readUInt32LE(at);
    const n = b.readUInt32LE(at + 4);
    if (grpid === 0) throw new Error(`ANA log: group ${i + 1} has ANAGRPID 0`);
    if (at + ANA_GROUP_DESC_SIZE + n * 4 > b.length) {
      throw new Error(`ANA log: group ${grpid} lists ${n} NSIDs past the page end`);
    }
    const nsids: number[] = [];
    for (let k = 0; k < n; k++) nsids.push(b.readUInt32LE(at + ANA_GROUP_DESC_SIZE + k * 4));
    groups.push({
      grpid,
      chgcnt: Number(b.readBigUInt64LE(at + 8)),
      state: b[at + 16]! & 0x0f,
      nsids,
    });
    at += ANA_GROUP_DESC_SIZE + n * 4;
  }
  return { chgcnt: Number(b.readBigUInt64LE(0)), groups };
}

export interface DiscoveryEntry {
  /** 3 TCP, 254 loop. */
  readonly trtype: number;
  /** 1 IPv4, 2 IPv6. */
  readonly adrfam: number;
  /** 1 referral, 2 NVM subsystem, 3 current discovery subsystem. */
  readonly subtype: number;
  readonly treq: number;
  readonly portid: number;
  readonly cntlid: number;
  readonly asqsz: number;
  readonly eflags: number;
  readonly trsvcid: string;
  readonly subnqn: string;
  readonly traddr: string;
  /** TCP: SECTYPE (0 none). */
  readonly sectype: number;
}

const DISC = { trsvcid: 32, subnqn: 256, traddr: 512, tsas: 768 } as const;

/** Discovery log: 1024-byte header (GENCTR, NUMREC, RECFMT 0) then 1024-byte entries. */
export function encodeDiscoveryLog(genctr: number, entries: readonly DiscoveryEntry[]): Buffer {
  const b = Buffer.alloc(DISC_LOG_HEADER_SIZE + entries.length * DISC_LOG_ENTRY_SIZE);
  b.writeBigUInt64LE(BigInt(genctr), 0);
  b.writeBigUInt64LE(BigInt(entries.length), 8);
  entries.forEach((e, i) =>
    writeDiscoveryEntry(b, DISC_LOG_HEADER_SIZE + i * DISC_LOG_ENTRY_SIZE, e),
  );
  return b;
}

function writeDiscoveryEntry(b: Buffer, at: number, e: DiscoveryEntry): void {
  b[at] = e.trtype;
  b[at + 1] = e.adrfam;
  b[at + 2] = e.subtype;
  b[at + 3] = e.treq;
  b.writeUInt16LE(e.portid, at + 4);
  b.writeUInt16LE(e.cntlid, at + 6);
  b.writeUInt16LE(e.asqsz, at + 8);
  b.writeUInt16LE(e.eflags, at + 10);
  // NUL padded, as nvmet copies them (libnvme also trims trailing spaces, SPDK's style).
  b.write(e.trsvcid, at + DISC.trsvcid, 31, 'ascii');
  b.write(e.subnqn, at + DISC.subnqn, NQN_FIELD_SIZE - 1, 'utf8');
  b.write(e.traddr, at + DISC.traddr, 255, 'ascii');
  b[at + DISC.tsas] = e.sectype;
}

export function decodeDiscoveryLog(b: Buffer): {
  genctr: number;
  numrec: number;
  recfmt: number;
  entries: DiscoveryEntry[];
} {
  const numrec = Number(b.readBigUInt64LE(8));
  const entries: DiscoveryEntry[] = [];
  for (let i = 0; i < numrec; i++) {
    const at = DISC_LOG_HEADER_SIZE + i * DISC_LOG_ENTRY_SIZE;
    if (at + DISC_LOG_ENTRY_SIZE > b.length) break;
    entries.push(decodeDiscoveryEntry(b, at));
  }
  return { genctr: Number(b.readBigUInt64LE(0)), numrec, recfmt: b.readUInt16LE(16), entries };
}

function nulString(b: Buffer, at: number, len: number): string {
  const f = b.subarray(at, at + len);
  const nul = f.indexOf(0);
  return f.toString('utf8', 0, nul < 0 ? len : nul);
}

/** 128-bit little-endian counter from a safe integer (high 64 bits stay zero). */
function writeU128(b: Buffer, at: number, v: number): void {
  b.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(v))), at);
}

/** One 1024-byte discovery log entry at offset `at` (hosts read entries in chunks). */
export function decodeDiscoveryEntry(b: Buffer, at = 0): DiscoveryEntry {
  return {
    trtype: b[at]!,
    adrfam: b[at + 1]!,
    subtype: b[at + 2]!,
    treq: b[at + 3]!,
    portid: b.readUInt16LE(at + 4),
    cntlid: b.readUInt16LE(at + 6),
    asqsz: b.readUInt16LE(at + 8),
    eflags: b.readUInt16LE(at + 10),
    trsvcid: nulString(b, at + DISC.trsvcid, 32).trim(),
    subnqn: nulString(b, at + DISC.subnqn, NQN_FIELD_SIZE),
    traddr: nulString(b, at + DISC.traddr, 256).trim(),
    sectype: b[at + DISC.tsas]!,
  };
}
