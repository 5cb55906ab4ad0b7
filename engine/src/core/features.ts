/**
 * Get/Set Features. I/O controllers: Number of Queues, Async Event Configuration,
 * Keep Alive Timer, Volatile Write Cache, Host Identifier (get only). Discovery
 * controllers: KATO and Async Event Configuration. Everything else is Invalid Field.
 */
import { FID } from '../protocol/opcodes.js';
import { cdw } from '../protocol/sqe.js';
import { DNR, SC } from '../protocol/status.js';
import type { Controller } from './controller.js';
import { INVALID_FIELD, SGL_LENGTH, execute, fail, immediate, replyWith } from './request.js';
import type { ParseResult } from './seam.js';

const HOST_ID_SIZE = 16;
/** Set Features with SV (save) set: nothing we hold survives a power cycle. */
const NOT_SAVEABLE = fail(0x10d | DNR);

export function parseSetFeatures(ctrl: Controller, sqe: Buffer, sglLength: number): ParseResult {
  const cdw10 = cdw(sqe, 10);
  const cdw11 = cdw(sqe, 11);
  const fid = cdw10 & 0xff;
  if (!supported(ctrl, fid)) return INVALID_FIELD;
  if (cdw10 >>> 31) return NOT_SAVEABLE;
  if (fid === FID.HOST_ID) return fail(SC.CMD_SEQ_ERROR | DNR); // nvmet: set at Connect only
  if (sglLength !== 0) return SGL_LENGTH;
  switch (fid) {
    case FID.NUM_QUEUES:
      return setNumQueues(ctrl, cdw11);
    case FID.ASYNC_EVENT:
      // Bits we do not support are an error (nvmet), not silently dropped.
      if ((cdw11 & ~ctrl.aenMask) !== 0) return INVALID_FIELD;
      return run(() => {
        ctrl.aen.enabled = cdw11 >>> 0;
        return 0;
      });
    case FID.KATO:
      return run(() => {
        ctrl.setKato(cdw11 >>> 0);
        return 0;
      });
    case FID.VOLATILE_WC:
      return run(() => {
        ctrl.wce = (cdw11 & 1) === 1;
        return 0;
      });
    default:
      return INVALID_FIELD;
  }
}

function setNumQueues(ctrl: Controller, cdw11: number): ParseResult {
  const nsqr = cdw11 & 0xffff;
  const ncqr = cdw11 >>> 16;
  if (nsqr === 0xffff || ncqr === 0xffff) return INVALID_FIELD;
  // NVMe Base, Number of Queues: once an I/O queue exists, Command Sequence Error (a
  // smaller grant would refuse the Connects of queues the host already has).
  if (ctrl.ioQueues.size > 0) return fail(SC.CMD_SEQ_ERROR | DNR);
  const max = ctrl.options.maxIoQueues;
  // The host uses min(requested, granted); queue pairs, so grant the smaller of the two asks.
  const granted = Math.min(nsqr + 1, ncqr + 1, max);
  return run(() => {
    ctrl.grantedQueues = granted;
    return numQueuesDw0(granted);
  });
}

const numQueuesDw0 = (n: number): number => ((n - 1) | ((n - 1) << 16)) >>> 0;

export function parseGetFeatures(ctrl: Controller, sqe: Buffer, sglLength: number): ParseResult {
  const cdw10 = cdw(sqe, 10);
  const fid = cdw10 & 0xff;
  const sel = (cdw10 >>> 8) & 0x7;
  if (!supported(ctrl, fid) || sel > 3) return INVALID_FIELD;
  if (fid === FID.HOST_ID) {
    // EXHID (cdw11 b0) must ask for the 128-bit identifier, the only one we keep.
    if ((cdw(sqe, 11) & 1) === 0) return INVALID_FIELD;
    if (sglLength !== HOST_ID_SIZE) return SGL_LENGTH;
    return replyWith(HOST_ID_SIZE, () => Buffer.from(ctrl.hostid));
  }
  if (sglLength !== 0) return SGL_LENGTH;
  // SEL 3 (supported capabilities): b2 changeable; nothing is saveable or per-namespace.
  if (sel === 3) return immediate(SC.SUCCESS, 0x4);
  const dflt = sel === 1;
  switch (fid) {
    case FID.NUM_QUEUES:
      return run(() => numQueuesDw0(dflt ? ctrl.options.maxIoQueues : ctrl.grantedQueues));
    case FID.ASYNC_EVENT:
      return run(() => (dflt ? ctrl.aenMask & ~0xff : ctrl.aen.enabled) >>> 0);
    case FID.KATO:
      return run(() => ctrl.kato);
    case FID.VOLATILE_WC:
      return run(() => (dflt || ctrl.wce ? 1 : 0));
    default:
      return INVALID_FIELD;
  }
}

function supported(ctrl: Controller, fid: number): boolean {
  if (ctrl.kind === 'discovery') return fid === FID.KATO || fid === FID.ASYNC_EVENT;
  switch (fid) {
    case FID.NUM_QUEUES:
    case FID.ASYNC_EVENT:
    case FID.KATO:
    case FID.HOST_ID:
    case FID.VOLATILE_WC: // present on every controller (identify.ts)
      return true;
    default:
      return false;
  }
}

/** A no-data feature command whose effect and dw0 come from `fn` at execution. */
function run(fn: () => number): ParseResult {
  return execute('none', 0, (_d, done) => done(SC.SUCCESS, fn()));
}
