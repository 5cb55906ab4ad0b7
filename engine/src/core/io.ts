/**
 * NVM I/O commands: Read, Write, Compare, Flush, Write Zeroes, Dataset Management.
 * Parse checks the namespace, its ANA state, the LBA range and the SGL length (all
 * before any data moves); execute calls the backend and maps its errors
 * (backend-status.ts); every completion is counted in the namespace's and the
 * controller's IoStats.
 */
import {
  BackendError,
  type BlockBackend,
  type IoCallback,
  type IoOwner,
} from '../storage/backend.js';
import { IO, NSID_ALL } from '../protocol/opcodes.js';
import { cdw, cdwPair } from '../protocol/sqe.js';
import { DNR, SC } from '../protocol/status.js';
import type { AnaState } from './ana.js';
import { backendStatus } from './backend-status.js';
import type { Controller } from './controller.js';
import type { Namespace } from './namespace.js';
import { INVALID_FIELD, INVALID_NS, INVALID_OPCODE, SGL_LENGTH, execute, fail } from './request.js';
import type { Completion, ParseResult } from './seam.js';
import type { IoKind, Timing } from './stats.js';

const LBA_RANGE = fail(SC.LBA_RANGE | DNR);
/** I/O refused by ANA state, checked at parse as nvmet does; no DNR so the host may fail over. */
const ANA_STATUS: { readonly [K in AnaState]: number } = {
  optimized: 0,
  'non-optimized': 0,
  inaccessible: SC.ANA_INACCESSIBLE,
  'persistent-loss': SC.ANA_PERSISTENT_LOSS,
  change: SC.ANA_TRANSITION,
};
const ANA_REFUSAL: { readonly [K in AnaState]: ParseResult | null } = {
  optimized: null,
  'non-optimized': null,
  inaccessible: fail(ANA_STATUS.inaccessible),
  'persistent-loss': fail(ANA_STATUS['persistent-loss']),
  change: fail(ANA_STATUS.change),
};
/** The ANA status that refuses I/O on `ns` through this controller now, or 0. */
function anaRefusalNow(ctrl: Controller, ns: Namespace): number {
  return ANA_STATUS[ctrl.ana.state(ns.anagrpid)];
}
const FUA = 1 << 30;
const DEAC = 1 << 25;
const DSM_AD = 1 << 2;
const DSM_RANGE_SIZE = 16;
/** Linux always sends a 4 KiB DSM buffer; allow a little more, refuse absurd lengths. */
const DSM_MAX_BYTES = 64 * 1024;
const ZERO_CHUNK = 1 << 20;
/**
 * The zeroes of Write Zeroes on a backend that cannot do it (writeZeroBuffers): one buffer
 * for every command, made at first use. Backends only read a write's data, so sharing it
 * is safe; one per command cost up to 1 MiB each, queue depth × queues of them at once.
 */
let sharedZeroes: Buffer | null = null;

/**
 * The queue a command came in on (the core's Queue). isClosed: the connection is gone
 * (queue, controller reset or deletion, keep-alive expiry). It is also the owner of
 * the backend calls its commands make, which the backend drops once it closes.
 */
export type IoQueue = IoOwner;

/** What runSteps() ends with when the queue closed: the host never sees it. */
const QUEUE_GONE = new BackendError('unavailable', 'the queue of this command is closed');

/**
 * A command done in several backend steps (Write Zeroes as zero-buffer writes, a DSM
 * deallocate per range): runs step 0..count-1 one after another and ends at the first
 * error. No step starts once the command's queue is closed: its host then counts the
 * command as in doubt and, after the fence, sends it on another path; a step landing
 * here later would reorder writes. The step in progress finishes.
 */
function runSteps(
  q: IoQueue,
  count: number,
  step: (i: number, next: IoCallback) => void,
  cb: IoCallback,
): void {
  let i = 0;
  const next = (err: BackendError | null): void => {
    if (err || i >= count) return cb(err);
    if (q.isClosed) return cb(QUEUE_GONE);
    step(i++, next);
  };
  next(null);
}

export function parseIo(ctrl: Controller, q: IoQueue, sqe: Buffer, sglLength: number): ParseResult {
  const opcode = sqe[0]!;
  const nsid = sqe.readUInt32LE(4);
  if (opcode === IO.FLUSH && nsid === NSID_ALL) return parseFlushAll(ctrl, sglLength);
  if (!isIoOpcode(opcode)) return INVALID_OPCODE;
  const ns = ctrl.subsys.namespaces.get(nsid);
  if (!ns) return INVALID_NS;
  const refusal = ANA_REFUSAL[ctrl.ana.state(ns.anagrpid)];
  if (refusal) return refusal;
  switch (opcode) {
    case IO.READ:
    case IO.WRITE:
    case IO.COMPARE:
      return parseReadWrite(ctrl, q, ns, sqe, sglLength);
    case IO.FLUSH:
      return sglLength !== 0 ? SGL_LENGTH : flushOne(ctrl, ns);
    case IO.WRITE_ZEROES:
      return parseWriteZeroes(ctrl, q, ns, sqe, sglLength);
    default:
      return parseDsm(ctrl, q, ns, sqe, sglLength);
  }
}

function isIoOpcode(op: number): boolean {
  return (
    op === IO.READ ||
    op === IO.WRITE ||
    op === IO.FLUSH ||
    op === IO.COMPARE ||
    op === IO.WRITE_ZEROES ||
    op === IO.DSM
  );
}

/** Counts the command, then completes it. */
function finish(
  ctrl: Controller,
  ns: Namespace | null,
  kind: IoKind,
  bytes: number,
  timing: Timing | null,
  status: number,
  done: Completion,
  data?: Buffer,
): void {
  // A backend out answers ANA Transition; once the log reports the group otherwise (its
  // storage closed: inaccessible), the status says what the host reads there next.
  if (ns && status === SC.ANA_TRANSITION) status = anaRefusalNow(ctrl, ns) || status;
  const us = timing ? (performance.now() - timing.at) * 1000 : -1;
  const weight = timing ? timing.weight : 1;
  const failed = status !== SC.SUCCESS;
  const moved = failed ? 0 : bytes;
  ns?.stats.record(kind, moved, us, failed, weight);
  ctrl.stats.record(kind, moved, us, failed, weight);
  done(status, 0, 0, data);
}

function parseReadWrite(
  ctrl: Controller,
  q: IoQueue,
  ns: Namespace,
  sqe: Buffer,
  sglLength: number,
): ParseResult {
  const opcode = sqe[0]!;
  const slba = cdwPair(sqe, 10);
  const cdw12 = cdw(sqe, 12);
  const nlb = (cdw12 & 0xffff) + 1; // 0's based
  if (slba + nlb > ns.blocks) return LBA_RANGE;
  const length = nlb * ns.blockSize;
  if (length > ctrl.maxTransfer) return INVALID_FIELD;
  if (sglLength !== length) return SGL_LENGTH;
  const offset = slba * ns.blockSize;
  const b = ns.backend;
  if (opcode === IO.READ) {
    // `into`: the transport's buffer for the data, when it offers one (seam.ts). A read
    // may wait in its transport for the host to take earlier data (READ_BUDGET): it is
    // timed from here, as every command with data is (a wait for the host says nothing
    // about the disk the latency alerts watch), and refused if this node gave the group
    // up meanwhile, as a late write is: the node that took over may have newer data.
    return execute('c2h', length, (into, done) => {
      const began = ctrl.timing.start();
      const refused = anaRefusalNow(ctrl, ns);
      if (refused) return finish(ctrl, ns, 'read', 0, began, refused, done);
      b.read(
        offset,
        length,
        (err, data) =>
          finish(
            ctrl,
            ns,
            'read',
            length,
            began,
            err ? backendStatus(err, 'read') : SC.SUCCESS,
            done,
            data,
          ),
        into ?? undefined,
      );
    });
  }
  if (opcode === IO.COMPARE) {
    return execute('h2c', length, (data, done) => {
      const began = ctrl.timing.start(); // once the data is here (R2T): see reads
      // Its data may come after this node gave the group up (as for writes): a compare
      // answered from here then would judge a copy that may be stale.
      const refused = anaRefusalNow(ctrl, ns);
      if (refused) return finish(ctrl, ns, 'other', 0, began, refused, done);
      b.read(offset, length, (err, got) => {
        let status: number = SC.SUCCESS;
        if (err) status = backendStatus(err, 'read');
        else if (!got)
          status = SC.INTERNAL; // a backend bug must not throw in its callback
        else if (!got.equals(data!)) status = SC.COMPARE_FAILED | DNR;
        finish(ctrl, ns, 'other', length, began, status, done);
      });
    });
  }
  const fua = wantsFua(ctrl, b, cdw12);
  return execute('h2c', length, (data, done) => {
    // Data sent by R2T arrives after the parse: timed from here (see reads), and if this
    // node gave the group up meanwhile (a failover), the write must not land here now.
    // The ANA status says it did not run, so a multipath host sends it to the node that
    // took over.
    const began = ctrl.timing.start();
    const refused = anaRefusalNow(ctrl, ns);
    if (refused) return finish(ctrl, ns, 'write', 0, began, refused, done);
    writeDurable(q, b, offset, data!, fua, (err) =>
      finish(
        ctrl,
        ns,
        'write',
        length,
        began,
        err ? backendStatus(err, 'write') : SC.SUCCESS,
        done,
      ),
    );
  });
}

/**
 * Whether a write must be durable before its completion: FUA asked, or every write with
 * the write cache disabled by the host (Set Features 0x06). Not on a backend without a
 * volatile cache (an O_DIRECT write-through device, memory): every completed write is as
 * durable as it gets there, and the controller says VWC present for all namespaces alike
 * (identify.ts), so hosts ask for FUA and Flush where it changes nothing but the cost.
 */
function wantsFua(ctrl: Controller, b: BlockBackend, cdw12: number): boolean {
  return b.caps.volatileWriteCache && ((cdw12 & FUA) !== 0 || !ctrl.wce);
}

/** FUA on a backend that cannot do it natively: write, then flush. */
function writeDurable(
  q: IoQueue,
  b: BlockBackend,
  offset: number,
  data: Buffer,
  fua: boolean,
  cb: IoCallback,
): void {
  if (!fua || b.caps.fua || !b.caps.flush) return b.write(offset, data, fua, cb, q);
  b.write(offset, data, false, (err) => (err ? cb(err) : b.flush(cb)), q);
}

/** A backend a Flush has work to do on: one with a volatile cache it can flush. */
function hasCache(b: BlockBackend): boolean {
  return b.caps.flush && b.caps.volatileWriteCache;
}

function flushOne(ctrl: Controller, ns: Namespace): ParseResult {
  const start = ctrl.timing.start();
  return execute('none', 0, (_d, done) => {
    if (!hasCache(ns.backend)) return finish(ctrl, ns, 'other', 0, start, SC.SUCCESS, done);
    ns.backend.flush((err) =>
      finish(ctrl, ns, 'other', 0, start, err ? backendStatus(err, 'write') : SC.SUCCESS, done),
    );
  });
}

/** Flush with NSID 0xFFFFFFFF: every namespace of the subsystem; the first error wins. */
function parseFlushAll(ctrl: Controller, sglLength: number): ParseResult {
  if (sglLength !== 0) return SGL_LENGTH;
  const start = ctrl.timing.start();
  return execute('none', 0, (_d, done) => {
    const backends = [...ctrl.subsys.namespaces.values()].map((ns) => ns.backend).filter(hasCache);
    let left = backends.length + 1;
    let status: number = SC.SUCCESS;
    const one = (err: BackendError | null): void => {
      if (err && status === SC.SUCCESS) status = backendStatus(err, 'write');
      if (--left === 0) finish(ctrl, null, 'other', 0, start, status, done);
    };
    for (const b of backends) b.flush(one);
    one(null);
  });
}

function parseWriteZeroes(
  ctrl: Controller,
  q: IoQueue,
  ns: Namespace,
  sqe: Buffer,
  sglLength: number,
): ParseResult {
  const slba = cdwPair(sqe, 10);
  const cdw12 = cdw(sqe, 12);
  const nlb = (cdw12 & 0xffff) + 1;
  if (slba + nlb > ns.blocks) return LBA_RANGE;
  if (sglLength !== 0) return SGL_LENGTH;
  const offset = slba * ns.blockSize;
  const length = nlb * ns.blockSize;
  const b = ns.backend;
  const fua = wantsFua(ctrl, b, cdw12);
  // DEAC may deallocate instead, but only where deallocated blocks read back as zeroes.
  const dealloc =
    (cdw12 & DEAC) !== 0 && b.caps.deallocate && b.caps.readZeroesAfterDeallocate && !fua;
  const start = ctrl.timing.start();
  return execute('none', 0, (_d, done) => {
    const cb = (err: BackendError | null): void =>
      finish(ctrl, ns, 'other', 0, start, err ? backendStatus(err, 'write') : SC.SUCCESS, done);
    if (dealloc) b.deallocate(offset, length, cb, q);
    else if (b.caps.writeZeroes) b.writeZeroes(offset, length, fua, cb, q);
    else writeZeroBuffers(q, b, offset, length, fua, cb);
  });
}

/** Write Zeroes on a backend without it: sequential writes of the shared zero buffer. */
function writeZeroBuffers(
  q: IoQueue,
  b: BlockBackend,
  offset: number,
  length: number,
  fua: boolean,
  cb: IoCallback,
): void {
  const zeroes = (sharedZeroes ??= Buffer.alloc(ZERO_CHUNK));
  const step = (i: number, next: IoCallback): void => {
    const at = i * ZERO_CHUNK;
    const n = Math.min(ZERO_CHUNK, length - at);
    const chunk = n === zeroes.length ? zeroes : zeroes.subarray(0, n);
    writeDurable(q, b, offset + at, chunk, fua, next);
  };
  runSteps(q, Math.ceil(length / ZERO_CHUNK), step, cb);
}

function parseDsm(
  ctrl: Controller,
  q: IoQueue,
  ns: Namespace,
  sqe: Buffer,
  sglLength: number,
): ParseResult {
  const nr = (cdw(sqe, 10) & 0xff) + 1; // 0's based
  const ad = (cdw(sqe, 11) & DSM_AD) !== 0;
  // The host may send more than NR ranges' worth (Linux: always 4 KiB); only NR are used.
  if (sglLength < nr * DSM_RANGE_SIZE || sglLength > DSM_MAX_BYTES) return SGL_LENGTH;
  const start = ctrl.timing.start();
  return execute('h2c', sglLength, (data, done) => {
    const refused = anaRefusalNow(ctrl, ns); // as for a write whose data came late
    if (refused) return finish(ctrl, ns, 'other', 0, start, refused, done);
    const ranges = readRanges(data!, nr, ns);
    if (ranges === null) return finish(ctrl, ns, 'other', 0, start, SC.LBA_RANGE | DNR, done);
    // Without AD the attributes are hints; without a deallocate capability it is advisory.
    if (!ad || !ns.backend.caps.deallocate)
      return finish(ctrl, ns, 'other', 0, start, SC.SUCCESS, done);
    const step = (i: number, next: IoCallback): void => {
      const [offset, length] = ranges[i]!;
      ns.backend.deallocate(offset, length, next, q);
    };
    runSteps(q, ranges.length, step, (err) =>
      finish(ctrl, ns, 'other', 0, start, err ? backendStatus(err, 'write') : SC.SUCCESS, done),
    );
  });
}

/** [byte offset, byte length] per non-empty range, or null if one lies outside the namespace. */
function readRanges(data: Buffer, nr: number, ns: Namespace): Array<[number, number]> | null {
  const out: Array<[number, number]> = [];
  for (let i = 0; i < nr; i++) {
    const at = i * DSM_RANGE_SIZE;
    const nlb = data.readUInt32LE(at + 4); // not 0's based
    const slba = data.readUInt32LE(at + 12) * 0x1_0000_0000 + data.readUInt32LE(at + 8);
    if (nlb === 0) continue;
    if (slba + nlb > ns.blocks) return null;
    out.push([slba * ns.blockSize, nlb * ns.blockSize]);
  }
  return out;
}
