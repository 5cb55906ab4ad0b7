/**
 * The core's side of one transport queue (CoreQueue). Before Connect it accepts only
 * Connect; afterwards it routes commands by queue type and controller kind. parse()
 * never throws and has no side effects for rejected commands (apart from the
 * keep-alive activity flag, which any command arriving sets).
 */
import { FABRICS_OPCODE, FCTYPE } from '../protocol/opcodes.js';
import { SQE_FLAGS_FUSE_MASK, SQE_FLAGS_PSDT_MASK, SQE_FLAGS_SGL } from '../protocol/sqe.js';
import { SC } from '../protocol/status.js';
import { parseAdmin } from './admin.js';
import type { Controller, QueueLink } from './controller.js';
import { parseDiscoveryAdmin } from './discovery.js';
import { parseConnect, parseFabricsAdmin, parseFabricsIo } from './fabrics.js';
import { parseIo } from './io.js';
import { CMD_SEQ, INVALID_FIELD, INVALID_OPCODE, fail } from './request.js';
import type { CoreQueue, ParseResult, QueueOwner, TransportQueue } from './seam.js';
import type { Target } from './target.js';

const ABORTED = fail(SC.ABORT_QUEUE);
const INTERNAL = fail(SC.INTERNAL);

export class Queue implements CoreQueue, QueueLink {
  /** -1 until Connect binds the queue; then 0 (admin) or 1..n. */
  qid = -1;
  /** 1's based queue depth granted at Connect. */
  size = 0;
  ctrl: Controller | null = null;
  /** A Connect was accepted at parse and has not been refused (see parseConnect). */
  connecting = false;
  private closedFlag = false;

  constructor(
    readonly target: Target,
    readonly tq: TransportQueue,
  ) {}

  get isClosed(): boolean {
    return this.closedFlag;
  }

  parse(sqe: Buffer, sglLength: number): ParseResult {
    try {
      return this.dispatch(sqe, sglLength);
    } catch (err) {
      this.target.options.logger.warn('exception while parsing a command', { err: String(err) });
      return INTERNAL;
    }
  }

  private dispatch(sqe: Buffer, sglLength: number): ParseResult {
    const flags = sqe[1]!;
    // nvmet: fused commands and PRPs are rejected; NVMe-oF data pointers are SGLs.
    if ((flags & SQE_FLAGS_FUSE_MASK) !== 0 || (flags & SQE_FLAGS_PSDT_MASK) !== SQE_FLAGS_SGL) {
      return INVALID_FIELD;
    }
    const opcode = sqe[0]!;
    const ctrl = this.ctrl;
    if (!ctrl) {
      const isConnect = opcode === FABRICS_OPCODE && sqe[4] === FCTYPE.CONNECT;
      return isConnect ? parseConnect(this, sqe, sglLength) : INVALID_OPCODE;
    }
    if (ctrl.state === 'deleted') return ABORTED;
    ctrl.kaSeen = true;
    if (opcode === FABRICS_OPCODE) {
      return this.qid === 0 ? parseFabricsAdmin(ctrl, sqe, sglLength) : parseFabricsIo(sqe);
    }
    // Before CC.EN = 1 / RDY only fabrics commands are accepted (nvmet_check_ctrl_status).
    if (ctrl.state !== 'enabled') return CMD_SEQ;
    if (this.qid !== 0) return parseIo(ctrl, this, sqe, sglLength);
    return ctrl.kind === 'discovery'
      ? parseDiscoveryAdmin(ctrl, this.target, sqe, sglLength)
      : parseAdmin(ctrl, this.target, sqe, sglLength);
  }

  /** A successful Connect: attach to the controller and size the transport queue. */
  bind(ctrl: Controller, qid: number, sqsize: number): void {
    this.ctrl = ctrl;
    this.qid = qid;
    this.size = sqsize + 1;
    if (qid !== 0) ctrl.ioQueues.set(qid, this);
    this.tq.setQueueSize(this.size);
  }

  /** QueueLink: the controller wants this connection gone. */
  close(reason: string): void {
    this.tq.close(reason);
  }

  owner(): QueueOwner | null {
    const c = this.ctrl;
    return c ? { hostnqn: c.hostnqn, subnqn: c.subsys.nqn, cntlid: c.cntlid, qid: this.qid } : null;
  }

  closed(): void {
    if (this.closedFlag) return;
    this.closedFlag = true;
    const ctrl = this.ctrl;
    if (!ctrl) return;
    if (this.qid === 0) ctrl.delete('admin queue closed');
    else {
      if (ctrl.ioQueues.get(this.qid) === this) ctrl.ioQueues.delete(this.qid);
      // Writes of this queue still waiting inside a backend (behind a stalled disk)
      // must not start: its host resends them elsewhere after its fence.
      for (const ns of ctrl.subsys.namespaces.values()) ns.backend.abandon?.(this);
    }
  }
}
