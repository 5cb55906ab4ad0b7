/**
 * The discovery controller: Identify CNS 1, Get Log Page 0x70, KATO and AEN features,
 * AER and Keep Alive only (facts §5). The discovery log lists this connection's
 * discovery subsystem (SUBTYPE 3) and every NVM subsystem the host may reach, on
 * every port that exposes it, with wildcard addresses replaced by the address the
 * host actually connected to.
 */
import { encodeDiscoveryLog, type DiscoveryEntry } from '../protocol/logpages.js';
import { CNTLID_DYNAMIC, DISCOVERY_NQN } from '../protocol/opcodes.js';
import { parseAdmin } from './admin.js';
import type { Controller } from './controller.js';
import { parseDiscoveryIdentify } from './identify.js';
import type { ParseResult, PortInfo } from './seam.js';
import type { Target } from './target.js';

export function parseDiscoveryAdmin(
  ctrl: Controller,
  t: Target,
  sqe: Buffer,
  sglLength: number,
): ParseResult {
  return parseAdmin(ctrl, t, sqe, sglLength, parseDiscoveryIdentify);
}

const SUBTYPE_NVM = 2;
const SUBTYPE_CURRENT_DISCOVERY = 3;
const TRTYPE = { tcp: 3, loop: 254 } as const;
const ADRFAM = { ipv4: 1, ipv6: 2 } as const;
/**
 * TREQ 1:0 = 10b: secure channel not required; b2: SQ flow control may be disabled (as
 * nvmet advertises; libnvme's connect-all then asks for it, and successful reads end
 * with a SUCCESS C2HData instead of a CapsuleResp: see transport/tcp/queue.ts).
 */
const TREQ = 0x2 | 0x4;
/** EFLAGS for the current discovery subsystem entry: DUPRETINFO | EPCSD (as nvmet). */
const EFLAGS_CURRENT = 0x3;
/** Admin queue size hosts should use (ASQSZ), as nvmet. */
const ASQSZ = 32;

const WILDCARDS = new Set(['', '0.0.0.0', '::', '[::]']);

/** A listening address as seen by this host: never 0.0.0.0 (facts §5). */
function resolve(port: PortInfo, conn: PortInfo): PortInfo {
  if (!WILDCARDS.has(port.traddr)) return port;
  return { ...port, traddr: conn.traddr, adrfam: conn.adrfam };
}

function entry(port: PortInfo, subnqn: string, subtype: number): DiscoveryEntry {
  return {
    trtype: TRTYPE[port.trtype],
    adrfam: ADRFAM[port.adrfam],
    subtype,
    treq: TREQ,
    portid: port.portId,
    cntlid: CNTLID_DYNAMIC,
    asqsz: ASQSZ,
    eflags: subtype === SUBTYPE_CURRENT_DISCOVERY ? EFLAGS_CURRENT : 0,
    trsvcid: port.trsvcid,
    subnqn,
    traddr: port.traddr,
    sectype: 0,
  };
}

/** The entries host `hostnqn`, connected through `conn`, may see. */
export function discoveryEntries(t: Target, hostnqn: string, conn: PortInfo): DiscoveryEntry[] {
  const out = [entry(resolve(conn, conn), DISCOVERY_NQN, SUBTYPE_CURRENT_DISCOVERY)];
  for (const p of t.portList()) {
    const port = resolve(p.info, conn);
    for (const s of t.subsystemList()) {
      if (p.reaches(s.nqn) && s.allows(hostnqn)) out.push(entry(port, s.nqn, SUBTYPE_NVM));
    }
  }
  return out;
}

export function discoveryLog(t: Target, ctrl: Controller): Buffer {
  return encodeDiscoveryLog(t.discoveryGenctr, discoveryEntries(t, ctrl.hostnqn, ctrl.port));
}
