/**
 * Admin commands of an I/O controller (enabled state), one flat opcode switch.
 * The NVMe-oF controller model has no queue creation, namespace management or
 * firmware commands: those are Invalid Opcode.
 */
import { ADMIN } from '../protocol/opcodes.js';
import { DNR, SC } from '../protocol/status.js';
import type { Controller } from './controller.js';
import { parseGetFeatures, parseSetFeatures } from './features.js';
import { parseIdentify } from './identify.js';
import { parseGetLogPage } from './logs.js';
import { INVALID_OPCODE, SGL_LENGTH, execute, fail, immediate } from './request.js';
import type { ParseResult } from './seam.js';
import type { Target } from './target.js';

const AER_LIMIT = fail(SC.AER_LIMIT | DNR);
const KA_INVALID = fail(SC.KA_TIMEOUT_INVALID);

/** Parses Identify; the discovery controller passes its own (CNS 1 only). */
export type IdentifyParser = (ctrl: Controller, sqe: Buffer, sglLength: number) => ParseResult;

/**
 * The admin commands of an NVM controller; a discovery controller accepts the same set
 * (Identify, logs, features, AER, Keep Alive, Abort) with its own Identify.
 */
export function parseAdmin(
  ctrl: Controller,
  t: Target,
  sqe: Buffer,
  sglLength: number,
  identify: IdentifyParser = parseIdentify,
): ParseResult {
  switch (sqe[0]) {
    case ADMIN.GET_LOG_PAGE:
      return parseGetLogPage(ctrl, t, sqe, sglLength);
    case ADMIN.IDENTIFY:
      return identify(ctrl, sqe, sglLength);
    case ADMIN.ABORT:
      // Commands are never aborted: dw0 b0 = 1 "not aborted" (nvmet).
      return sglLength !== 0 ? SGL_LENGTH : immediate(SC.SUCCESS, 1);
    case ADMIN.SET_FEATURES:
      return parseSetFeatures(ctrl, sqe, sglLength);
    case ADMIN.GET_FEATURES:
      return parseGetFeatures(ctrl, sqe, sglLength);
    case ADMIN.ASYNC_EVENT:
      return parseAsyncEvent(ctrl, sglLength);
    case ADMIN.KEEP_ALIVE:
      return parseKeepAlive(ctrl, sglLength);
    default:
      return INVALID_OPCODE;
  }
}

/** Asynchronous Event Request: held until an event; at most AERL + 1 outstanding. */
export function parseAsyncEvent(ctrl: Controller, sglLength: number): ParseResult {
  if (sglLength !== 0) return SGL_LENGTH;
  if (ctrl.aen.outstanding >= ctrl.aen.limit) return AER_LIMIT;
  return execute('none', 0, (_d, done) => ctrl.aen.submit(done));
}

/** Keep Alive: the activity flag set by every command is the restart; KATO 0 is an error (nvmet). */
export function parseKeepAlive(ctrl: Controller, sglLength: number): ParseResult {
  if (sglLength !== 0) return SGL_LENGTH;
  return ctrl.kato === 0 ? KA_INVALID : immediate(SC.SUCCESS);
}
