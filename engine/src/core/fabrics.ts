/**
 * Fabrics commands (opcode 0x7F): Connect, Property Get/Set; authentication and
 * Disconnect are not supported. Connect follows nvmet's checks and error locators:
 * an invalid parameter completes with dw0 = IATTR << 16 | byte offset (facts §3).
 */
import { CNTLID_DYNAMIC, CONNECT_DATA_SIZE, FCTYPE, PROP } from '../protocol/opcodes.js';
import {
  CONNECT_DATA_OFFSET,
  CONNECT_SQE_OFFSET,
  cdw,
  decodeConnectCmd,
  decodeConnectData,
  type ConnectCmd,
  type ConnectData,
} from '../protocol/sqe.js';
import { DNR, SC } from '../protocol/status.js';
import type { Controller } from './controller.js';
import type { Queue } from './queue.js';
import { hasControlChars } from './nqn.js';
import { INVALID_FIELD, INVALID_OPCODE, SGL_LENGTH, execute, fail, immediate } from './request.js';
import type { Completion, ParseResult } from './seam.js';

/** dw0 locator for "Invalid Parameters": IATTR 1 = field in the Connect data, 0 = in the SQE. */
const inData = (offset: number): number => (1 << 16) | offset;
const inSqe = (offset: number): number => offset;
const invalidParam = (dw0: number): [number, number] => [SC.CONNECT_INVALID_PARAM | DNR, dw0];

/**
 * Connect on a queue that is not connected yet. One at a time: a second Connect while
 * one waits for its data (sent by R2T) would bind the queue twice, leaving a controller
 * (or an I/O queue ID) behind that no connection ever releases.
 */
export function parseConnect(q: Queue, sqe: Buffer, sglLength: number): ParseResult {
  if (q.connecting) return fail(SC.CMD_SEQ_ERROR | DNR);
  const cmd = decodeConnectCmd(sqe);
  const o = q.target.options;
  if (sglLength !== CONNECT_DATA_SIZE) return SGL_LENGTH;
  if (cmd.recfmt !== 0) return fail(SC.CONNECT_FORMAT | DNR);
  // SQSIZE is 0's based: 0 would be a one-entry queue, which cannot work.
  if (cmd.sqsize === 0 || cmd.sqsize > o.mqes)
    return fail(...invalidParam(inSqe(CONNECT_SQE_OFFSET.sqsize)));
  if (cmd.qid > o.maxIoQueues) return fail(...invalidParam(inSqe(CONNECT_SQE_OFFSET.qid)));
  q.connecting = true;
  const r = execute('h2c', CONNECT_DATA_SIZE, (data, done) => {
    const d = decodeConnectData(data!);
    // A refused Connect frees the queue for another try; a successful one binds it.
    const end: Completion = (status, dw0) => {
      if (status !== SC.SUCCESS) q.connecting = false;
      done(status, dw0);
    };
    if (cmd.qid === 0) connectAdmin(q, cmd, d, end);
    else connectIo(q, cmd, d, end);
  });
  // Its data failed a digest (a retryable error): the queue is free for the retry.
  const free = () => {
    q.connecting = false;
  };
  return r.kind === 'exec' ? { ...r, unused: free } : r;
}

function connectAdmin(q: Queue, cmd: ConnectCmd, d: ConnectData, done: Completion): void {
  const t = q.target;
  if (d.cntlid !== CNTLID_DYNAMIC) return done(...invalidParam(inData(CONNECT_DATA_OFFSET.cntlid)));
  const subsys = t.findSubsystemOn(d.subnqn, q.tq.port.portId);
  if (!subsys) return done(...invalidParam(inData(CONNECT_DATA_OFFSET.subnqn)));
  // A host names itself: an empty name, or one with control characters (it reaches
  // events, alerts, mail and logs), is no NQN at all.
  if (d.hostnqn.length === 0 || hasControlChars(d.hostnqn))
    return done(...invalidParam(inData(CONNECT_DATA_OFFSET.hostnqn)));
  if (!subsys.allows(d.hostnqn)) {
    return done(SC.CONNECT_INVALID_HOST | DNR, inData(CONNECT_DATA_OFFSET.hostnqn));
  }
  if (q.isClosed) return done(SC.ABORT_QUEUE);
  const ctrl = t.createController(q, subsys, d, cmd.kato);
  // No free CNTLID is transient (controllers come and go): no DNR, the host retries.
  if (!ctrl) return done(SC.CONNECT_CTRL_BUSY);
  q.bind(ctrl, 0, cmd.sqsize);
  done(SC.SUCCESS, ctrl.cntlid);
}

function connectIo(q: Queue, cmd: ConnectCmd, d: ConnectData, done: Completion): void {
  const t = q.target;
  const subsys = t.findSubsystemOn(d.subnqn, q.tq.port.portId);
  if (!subsys) return done(...invalidParam(inData(CONNECT_DATA_OFFSET.subnqn)));
  const ctrl = t.findController(d.cntlid);
  if (!ctrl || ctrl.subsys !== subsys || ctrl.hostnqn !== d.hostnqn || ctrl.state === 'deleted') {
    return done(...invalidParam(inData(CONNECT_DATA_OFFSET.cntlid)));
  }
  // Taken off the list since its admin Connect (its controller is being deleted).
  if (!subsys.allows(d.hostnqn)) {
    return done(SC.CONNECT_INVALID_HOST | DNR, inData(CONNECT_DATA_OFFSET.hostnqn));
  }
  if (cmd.qid > ctrl.grantedQueues) return done(...invalidParam(inSqe(CONNECT_SQE_OFFSET.qid)));
  if (ctrl.state !== 'enabled') return done(SC.CMD_SEQ_ERROR | DNR);
  // A QID this controller already has: Command Sequence Error (NVMe base spec; nvmet too).
  if (ctrl.ioQueues.has(cmd.qid)) return done(SC.CMD_SEQ_ERROR | DNR);
  if (q.isClosed) return done(SC.ABORT_QUEUE);
  q.bind(ctrl, cmd.qid, cmd.sqsize);
  done(SC.SUCCESS, ctrl.cntlid);
}

/** Fabrics commands on a connected admin queue: properties work in every live state. */
export function parseFabricsAdmin(ctrl: Controller, sqe: Buffer, sglLength: number): ParseResult {
  switch (sqe[4]) {
    case FCTYPE.PROPERTY_GET:
      return sglLength !== 0 ? SGL_LENGTH : propertyGet(ctrl, sqe);
    case FCTYPE.PROPERTY_SET:
      return sglLength !== 0 ? SGL_LENGTH : propertySet(ctrl, sqe);
    case FCTYPE.CONNECT:
      // This queue is already connected.
      return fail(SC.CMD_SEQ_ERROR | DNR);
    default:
      // Auth Send/Receive (we never set ATR), Disconnect and unknown types.
      return INVALID_OPCODE;
  }
}

/** Fabrics commands on an I/O queue: none are supported (nvmet accepts only auth there). */
export function parseFabricsIo(sqe: Buffer): ParseResult {
  return sqe[4] === FCTYPE.CONNECT ? fail(SC.CMD_SEQ_ERROR | DNR) : INVALID_OPCODE;
}

/** ATTRIB b0: 1 = 8-byte property. */
const is8Byte = (sqe: Buffer): boolean => (sqe[40]! & 1) === 1;

function propertyGet(ctrl: Controller, sqe: Buffer): ParseResult {
  const offset = cdw(sqe, 11);
  if (is8Byte(sqe)) {
    if (offset !== PROP.CAP) return INVALID_FIELD;
    const cap = capValue(ctrl);
    return immediate(SC.SUCCESS, cap.lo, cap.hi);
  }
  switch (offset) {
    case PROP.VS:
      return immediate(SC.SUCCESS, NVME_VS);
    case PROP.CC:
      return immediate(SC.SUCCESS, ctrl.cc);
    case PROP.CSTS:
      return execute('none', 0, (_d, done) => done(SC.SUCCESS, ctrl.csts));
    default:
      return INVALID_FIELD;
  }
}

function propertySet(ctrl: Controller, sqe: Buffer): ParseResult {
  if (is8Byte(sqe) || cdw(sqe, 11) !== PROP.CC) return INVALID_FIELD;
  const value = cdw(sqe, 12);
  return execute('none', 0, (_d, done) => {
    ctrl.setCc(value);
    done(SC.SUCCESS);
  });
}

/** Version 1.4.0: ANA exists; below 2.0 the Linux host does not try Identify CNS 0x08. */
export const NVME_VS = 0x00010400;
/** CAP.TO in 500 ms units: 7.5 s for CSTS.RDY to follow CC.EN, as nvmet. */
const CAP_TO = 15;

/**
 * CAP: MQES b15:0, CQR b16, TO b31:24; high dword: CSS b37 (NVM only; b43 would
 * make the host use CSI mode, facts §9.3), MPSMIN = MPSMAX = 0 (4 KiB pages).
 */
export function capValue(ctrl: Controller): { lo: number; hi: number } {
  const mqes = ctrl.options.mqes;
  return { lo: (mqes | (1 << 16) | (CAP_TO << 24)) >>> 0, hi: 1 << (37 - 32) };
}
