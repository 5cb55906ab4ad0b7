/**
 * Get Log Page (admin opcode 0x02): decode NUMD/LPO/RAE, pick the page, build it at
 * execution, return exactly the requested window (zero-padded past the end), and
 * re-arm the matching async event when the host reads with RAE = 0.
 */
import {
  EFFECTS,
  encodeAnaLog,
  encodeChangedNsLog,
  encodeCmdEffectsLog,
  encodeErrorLog,
  encodeFwSlotLog,
  encodeSmartLog,
  sliceLog,
} from '../protocol/logpages.js';
import { ADMIN, AEN_BIT, IO, LID, NSID_ALL } from '../protocol/opcodes.js';
import { cdw, cdwPair } from '../protocol/sqe.js';
import { DNR, SC } from '../protocol/status.js';
import { ANA_STATE_CODE } from './ana.js';
import type { Controller } from './controller.js';
import { discoveryLog } from './discovery.js';
import { maxTransferBytes } from './options.js';
import { INVALID_FIELD, INVALID_NS, SGL_LENGTH, execute, fail } from './request.js';
import type { ParseResult } from './seam.js';
import type { IoStatsSnapshot } from './stats.js';
import type { Target } from './target.js';

const INVALID_LOG_PAGE = fail(SC.INVALID_LOG_PAGE | DNR);

interface LogPage {
  build(): Buffer;
  /** Runs after a read with RAE = 0: clear the log and/or unmask its event. */
  ack?(): void;
}

export function parseGetLogPage(
  ctrl: Controller,
  t: Target,
  sqe: Buffer,
  sglLength: number,
): ParseResult {
  const cdw10 = cdw(sqe, 10);
  const lid = cdw10 & 0xff;
  const lsp = (cdw10 >>> 8) & 0x7f;
  const rae = (cdw10 >>> 15) & 1;
  // NUMD is 0's based, NUMDU:NUMDL, in dwords.
  const length = ((cdw(sqe, 11) & 0xffff) * 0x10000 + (cdw10 >>> 16) + 1) * 4;
  const lpo = cdwPair(sqe, 12);
  if (lpo % 4 !== 0 || length > maxTransferBytes(ctrl.options)) return INVALID_FIELD;
  if (sglLength !== length) return SGL_LENGTH;
  const page = pageFor(ctrl, t, lid, lsp, sqe.readUInt32LE(4));
  if (!('build' in page)) return page;
  return execute('c2h', length, (_d, done) => {
    const data = sliceLog(page.build(), lpo, length);
    if (!rae) page.ack?.();
    done(SC.SUCCESS, 0, 0, data);
  });
}

function pageFor(
  ctrl: Controller,
  t: Target,
  lid: number,
  lsp: number,
  nsid: number,
): LogPage | ParseResult {
  if (ctrl.kind === 'discovery') {
    if (lid !== LID.DISCOVERY) return INVALID_LOG_PAGE;
    return {
      build: () => discoveryLog(t, ctrl),
      ack: () => ctrl.aen.unmask(AEN_BIT.DISC_CHANGE),
    };
  }
  switch (lid) {
    case LID.ERROR:
      return { build: () => encodeErrorLog(1) };
    case LID.SMART:
      return smartPage(ctrl, nsid);
    case LID.FW_SLOT:
      return { build: () => encodeFwSlotLog(ctrl.subsys.firmware) };
    case LID.CHANGED_NS:
      return {
        build: () => encodeChangedNsLog([...ctrl.changedNs], ctrl.changedNsOverflow),
        ack: () => {
          ctrl.changedNs.clear();
          ctrl.changedNsOverflow = false;
          ctrl.aen.unmask(AEN_BIT.NS_ATTR);
        },
      };
    case LID.CMD_EFFECTS:
      return { build: () => encodeCmdEffectsLog(ADMIN_EFFECTS, IO_EFFECTS) };
    case LID.ANA:
      return {
        build: () => anaLog(ctrl, t, (lsp & 1) === 1),
        ack: () => ctrl.aen.unmask(AEN_BIT.ANA_CHANGE),
      };
    default:
      return INVALID_LOG_PAGE;
  }
}

/** SMART for one namespace, or (NSID 0 / all) summed over the subsystem's namespaces. */
function smartPage(ctrl: Controller, nsid: number): LogPage | ParseResult {
  const all = nsid === 0 || nsid === NSID_ALL;
  const ns = all ? undefined : ctrl.subsys.namespaces.get(nsid);
  if (!all && !ns) return INVALID_NS;
  return {
    build: () => {
      const stats: IoStatsSnapshot[] = ns
        ? [ns.stats]
        : [...ctrl.subsys.namespaces.values()].map((n) => n.stats);
      const sum = (f: (s: IoStatsSnapshot) => number): number =>
        stats.reduce((a, s) => a + f(s), 0);
      return encodeSmartLog({
        bytesRead: sum((s) => s.readBytes),
        bytesWritten: sum((s) => s.writeBytes),
        readCommands: sum((s) => s.readOps),
        writeCommands: sum((s) => s.writeOps),
      });
    },
  };
}

/**
 * The groups that hold namespaces of this controller's subsystem, each with those NSIDs
 * in ascending order (the host walks them in order); RGO leaves the NSIDs out. The log
 * holds only those (NVMe base spec, ANA log page: descriptors of the ANA groups that
 * contain namespaces attached to the controller), not every group of this node: Linux
 * counts a group in change whatever its NNSIDS and resets the controller when one stays
 * so past twice ANATT (multipath.c nvme_read_ana_log), so another subsystem's volume
 * out for a few seconds reset this controller (seen on the 6.1 host). A group no
 * namespace is left in (its volume removed, its id free for the next one) goes with
 * it. The header's CHGCNT is the node's, so it also moves for changes not listed here.
 */
function anaLog(ctrl: Controller, t: Target, rgo: boolean): Buffer {
  const members = new Map<number, number[]>();
  for (const nsid of ctrl.subsys.nsids()) {
    const grpid = ctrl.subsys.namespaces.get(nsid)!.anagrpid;
    members.set(grpid, [...(members.get(grpid) ?? []), nsid]);
  }
  const groups = t.ana
    .list()
    .filter((g) => members.has(g.grpid))
    .map((g) => ({
      grpid: g.grpid,
      chgcnt: g.chgcnt,
      state: ANA_STATE_CODE[g.state],
      nsids: members.get(g.grpid)!,
    }));
  return encodeAnaLog(t.ana.chgcnt, groups, rgo);
}

const CSUPP = EFFECTS.CSUPP;
const LBCC = EFFECTS.CSUPP | EFFECTS.LBCC;
const ADMIN_EFFECTS = new Map<number, number>([
  [ADMIN.GET_LOG_PAGE, CSUPP],
  [ADMIN.IDENTIFY, CSUPP],
  [ADMIN.ABORT, CSUPP],
  [ADMIN.SET_FEATURES, CSUPP],
  [ADMIN.GET_FEATURES, CSUPP],
  [ADMIN.ASYNC_EVENT, CSUPP],
  [ADMIN.KEEP_ALIVE, CSUPP],
]);
const IO_EFFECTS = new Map<number, number>([
  [IO.FLUSH, CSUPP],
  [IO.WRITE, LBCC],
  [IO.READ, CSUPP],
  [IO.COMPARE, CSUPP],
  [IO.WRITE_ZEROES, LBCC],
  [IO.DSM, LBCC],
]);
