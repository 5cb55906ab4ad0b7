/**
 * Target-wide tunables, fixed at construction. Defaults suit a Linux host over TCP
 * and leave CNTLID room for a second node.
 */
import { IN_CAPSULE_DATA_SIZE, MAXH2CDATA } from '../protocol/tcp-limits.js';

export interface CoreLogger {
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

export interface TargetOptions {
  /** Lowest / highest CNTLID this node hands out (node A 1..0x7FFF, node B 0x8000..0xFFEF). */
  cntlidMin?: number;
  cntlidMax?: number;
  /**
   * In-capsule data bytes a command may carry, announced as IOCCSZ = (64 + this) / 16 and
   * enforced by the TCP transport (which takes 8 KiB on every queue even below that: the
   * Linux host's admin data). A multiple of 16, at most MAXH2CDATA. Default 16 KiB.
   */
  inCapsuleBytes?: number;
  /** Max data transfer as a power of two of 4 KiB pages (MDTS); 0 = unlimited. Default 8 = 1 MiB. */
  mdts?: number;
  /** Max I/O queue entries, 0's based (CAP.MQES); at least 31. Default 127. */
  mqes?: number;
  /** I/O queues granted per controller at most (Set Features Number of Queues). */
  maxIoQueues?: number;
  /** Highest ANA group id (ANAGRPMAX = NANAGRPID). */
  maxAnaGroups?: number;
  /** ANA transition time in seconds (ANATT). */
  anatt?: number;
  /** Keep-alive slack added to ceil(KATO) before a controller is declared dead (ms). */
  kaSlackMs?: number;
  /** KATO given to discovery controllers that connect with KATO 0 (ms). */
  discoveryKatoMs?: number;
  logger?: CoreLogger;
}

export type ResolvedOptions = Required<TargetOptions>;

const silent: CoreLogger = { info: () => {}, warn: () => {} };

export function resolveOptions(o: TargetOptions = {}): ResolvedOptions {
  const r: ResolvedOptions = {
    cntlidMin: o.cntlidMin ?? 1,
    cntlidMax: o.cntlidMax ?? 0xffef,
    inCapsuleBytes: o.inCapsuleBytes ?? IN_CAPSULE_DATA_SIZE,
    mdts: o.mdts ?? 8,
    mqes: o.mqes ?? 127,
    maxIoQueues: o.maxIoQueues ?? 8,
    maxAnaGroups: o.maxAnaGroups ?? 32,
    anatt: o.anatt ?? 10,
    kaSlackMs: o.kaSlackMs ?? 500,
    discoveryKatoMs: o.discoveryKatoMs ?? 120_000,
    logger: o.logger ?? silent,
  };
  check(
    r.cntlidMin >= 1 && r.cntlidMax <= 0xffef && r.cntlidMin <= r.cntlidMax,
    'CNTLID range must lie within 1..0xFFEF',
  );
  check(
    r.inCapsuleBytes >= 0 && r.inCapsuleBytes % 16 === 0 && r.inCapsuleBytes <= MAXH2CDATA,
    `inCapsuleBytes must be a multiple of 16 of at most ${MAXH2CDATA}`,
  );
  check(r.mdts >= 0 && r.mdts <= 20, 'mdts must be 0..20');
  // MAXCMD (mqes + 1) is a 16-bit field of Identify Controller
  check(r.mqes >= 31 && r.mqes <= 0xfffe, 'mqes must be 31..65534');
  check(r.maxIoQueues >= 1 && r.maxIoQueues <= 0xfffe, 'maxIoQueues must be 1..65534');
  check(r.maxAnaGroups >= 1 && r.maxAnaGroups <= 0xffff, 'maxAnaGroups must be 1..65535');
  return r;
}

function check(ok: boolean, msg: string): void {
  if (!ok) throw new Error(`Invalid target option: ${msg}`);
}

/** Max bytes one command may move (MDTS), or a 16 MiB ceiling when MDTS is unlimited. */
export function maxTransferBytes(o: ResolvedOptions): number {
  return o.mdts === 0 ? 16 << 20 : 4096 * 2 ** o.mdts;
}
