/**
 * Discovery: connect to a discovery controller and read its log (LID 0x70) the way
 * libnvme does: a 20-byte header, NUMREC 1024-byte entries from LPO 1024, then the header
 * again; if GENCTR moved meanwhile the log changed under us and is read again.
 */
import { decodeDiscoveryEntry, type DiscoveryEntry } from '../protocol/logpages.js';

export type { DiscoveryEntry };
import { DISCOVERY_NQN, LID } from '../protocol/opcodes.js';
import { NvmeController, type ControllerOptions } from './controller.js';
import { isTcpPort } from './queue.js';

export const DISCOVERY_ENTRY_SIZE = 1024;
const HEADER_READ = 20; // GENCTR, NUMREC, RECFMT (libnvme reads exactly this)
const MAX_CHUNK = 64 * 1024;
/** Discovery log entries the library reads at most (16 MiB of log): a lying NUMREC does
 * not size our memory. */
export const MAX_DISCOVERY_RECORDS = 16 * 1024;

export interface DiscoveryLog {
  readonly genctr: bigint;
  readonly entries: DiscoveryEntry[];
}

/** One entry: the codec's decoder (one source of truth for the wire). */
export const parseDiscoveryEntry = (b: Buffer): DiscoveryEntry => decodeDiscoveryEntry(b, 0);

/** Read the whole discovery log from a connected discovery controller. */
export async function readDiscoveryLog(
  ctrl: NvmeController,
  maxRetries = 10,
): Promise<DiscoveryLog> {
  const chunk = Math.min(MAX_CHUNK, ctrl.maxTransferBytes || MAX_CHUNK);
  for (let attempt = 0; attempt <= maxRetries; attempt++) {
    const head = await ctrl.getLogPage({ lid: LID.DISCOVERY, length: HEADER_READ, rae: true });
    const genctr = head.readBigUInt64LE(0);
    const numrecRaw = head.readBigUInt64LE(8);
    if (numrecRaw > BigInt(MAX_DISCOVERY_RECORDS)) {
      throw new Error(
        `discovery log claims ${numrecRaw} records, more than the ${MAX_DISCOVERY_RECORDS} ` +
          `the library reads: the discovery controller is broken or not what it seems`,
      );
    }
    const numrec = Number(numrecRaw);
    const total = numrec * DISCOVERY_ENTRY_SIZE;
    const body = Buffer.alloc(total);
    for (let off = 0; off < total; off += chunk) {
      const length = Math.min(chunk, total - off);
      const lpo = DISCOVERY_ENTRY_SIZE + off;
      const part = await ctrl.getLogPage({ lid: LID.DISCOVERY, length, lpo, rae: true });
      part.copy(body, off);
    }
    // RAE=0 on the last read re-enables discovery-change events.
    const again = await ctrl.getLogPage({ lid: LID.DISCOVERY, length: HEADER_READ });
    if (again.readBigUInt64LE(0) !== genctr) continue;
    const now = again.readBigUInt64LE(8);
    if (now !== numrecRaw) {
      // Same generation, other size: the entries read may be padding (libnvme: EBADSLT).
      throw new Error(`discovery log NUMREC went from ${numrecRaw} to ${now} in GENCTR ${genctr}`);
    }
    const entries: DiscoveryEntry[] = [];
    for (let off = 0; off < total; off += DISCOVERY_ENTRY_SIZE) {
      entries.push(parseDiscoveryEntry(body.subarray(off, off + DISCOVERY_ENTRY_SIZE)));
    }
    return { genctr, entries };
  }
  throw new Error(`discovery log kept changing (${maxRetries + 1} attempts)`);
}

/**
 * The TCP port an entry's TRSVCID names (decimal digits, 1..65535), or null. A log
 * may hold anything there ("", "70000", "nvme"); a port made of it with Number() would
 * only fail the connect later, as NaN or out of range.
 */
export function entryPort(e: DiscoveryEntry): number | null {
  const port = /^\d{1,5}$/.test(e.trsvcid) ? Number(e.trsvcid) : NaN;
  return isTcpPort(port) ? port : null;
}

export type DiscoverOptions = Omit<ControllerOptions, 'subnqn' | 'discovery' | 'ioQueues'> & {
  /** Default: the well-known discovery NQN. */
  readonly subnqn?: string;
};

/**
 * Connect to a discovery controller, read its log, disconnect. Without keep-alive (KATO
 * 0, unless given), as Linux connects one it does not keep.
 */
export async function discover(opts: DiscoverOptions): Promise<DiscoveryLog> {
  const ctrl = await NvmeController.connect({
    ...opts,
    kato: opts.kato ?? 0,
    subnqn: opts.subnqn ?? DISCOVERY_NQN,
    discovery: true,
  });
  try {
    return await readDiscoveryLog(ctrl);
  } finally {
    await ctrl.close();
  }
}
