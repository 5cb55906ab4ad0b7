/**
 * One association with a controller: the admin queue, the controller bring-up the way
 * the Linux host does it (facts §4.1), its keep-alive, and the I/O queues. A reconnect
 * builds a new Association (new Connect with CNTLID 0xFFFF); nothing is carried over.
 */
import { performance } from 'node:perf_hooks';
import { CNTLID_DYNAMIC, FID, PROP } from '../protocol/opcodes.js';
import { identifyController, setFeatures, type ControllerIdentity } from './admin.js';
import { MAX_ANA_LOG } from './ana-log.js';
import { fillConnect, fillPropertyGet, fillPropertySet, type ConnectParams } from './commands.js';
import { CATTR_DISABLE_SQFLOW } from '../protocol/sqe.js';
import { SC } from '../protocol/status.js';
import { HostError, NvmeStatusError } from './errors.js';
import { execute } from './execute.js';
import { KeepAlive } from './keep-alive.js';
import { ADMIN_IN_CAPSULE_LIMIT, NvmeTcpQueue, type QueueOptions } from './queue.js';
import { NvmeRequest } from './request.js';

/** Admin queue size Linux uses (NVME_AQ_DEPTH): Connect SQSIZE 31, so 31 commands in
 * flight at most: Keep Alive and the Async Event Request in slots of their own
 * (ADMIN_RESERVED_SLOTS), 29 for every other admin command. */
export const ADMIN_QUEUE_SIZE = 32;
/** Admin slots only Keep Alive and the Async Event Request use (submitReserved). */
export const ADMIN_RESERVED_SLOTS = 2;

/** CC fields Linux programs: IOSQES 6 (64 B), IOCQES 4 (16 B), MPS 0, AMS 0, CSS 0. */
export const CC_BASE = (6 << 16) | (4 << 20);
const CC_EN = 1;
const CC_SHN_NORMAL = 1 << 14;
const CSTS_RDY = 1;
const CSTS_CFS = 2;
const CSTS_SHST_COMPLETE = 2 << 2;

export interface AssociationParams {
  readonly host: string;
  readonly port: number;
  readonly subnqn: string;
  readonly hostnqn: string;
  readonly hostid: Buffer;
  readonly hdgst: boolean;
  readonly ddgst: boolean;
  /** Keep-alive timeout sent in the admin Connect, ms (0 = none). */
  readonly kato: number;
  /** I/O queues wanted (0 for a discovery controller). */
  readonly ioQueues: number;
  /** I/O queue entries wanted (clamped to CAP.MQES+1 and MAXCMD). */
  readonly queueSize: number;
  readonly connectTimeoutMs: number;
  readonly adminTimeoutMs: number;
  readonly ioTimeoutMs: number;
  readonly maxWaiting: number;
  readonly maxDataLength: number;
  /** Ask for SQ flow control to be disabled on I/O queues (Connect CATTR bit 2). */
  readonly disableSqFlow: boolean;
  /** Check what an I/O controller must have (ICDOFF 0, SGL support). */
  readonly discovery: boolean;
}

/** Decoded CAP. */
export interface ControllerCap {
  /** Maximum queue entries (1's based here). */
  readonly mqes: number;
  /** Worst-case time to become ready, ms. */
  readonly readyTimeoutMs: number;
  readonly mpsmin: number;
  readonly raw: bigint;
}

export class Association {
  private constructor(
    readonly admin: NvmeTcpQueue,
    readonly cntlid: number,
    readonly cap: ControllerCap,
    readonly vs: number,
    readonly cc: number,
    readonly identity: ControllerIdentity,
    readonly io: NvmeTcpQueue[],
    /** Runs from the bring-up on; stopped when the association fails or shuts down. */
    readonly keepAlive: KeepAlive,
  ) {}

  /**
   * Connect and bring the controller up; `onFailed` hears about any queue failing later.
   * Everything opened is closed again if a step fails; the error is a HostError of kind
   * 'connect' (cause: the underlying HostError or NvmeStatusError).
   */
  static async establish(
    p: AssociationParams,
    onFailed: (e: HostError) => void,
    signal?: AbortSignal,
  ) {
    const opened: NvmeTcpQueue[] = [];
    const base = { host: p.host, port: p.port, hdgst: p.hdgst, ddgst: p.ddgst };
    // A queue that fails before the association is up (the admin queue's Keep Alive
    // refused or timed out, a connection dropped) ends the attempt at once: the queues
    // still connecting would otherwise be waited for up to connectTimeoutMs, on an
    // association that cannot go live. That failure is what the attempt fails with.
    const ended = new AbortController();
    let failure: HostError | null = null;
    let up = false;
    let over = false;
    const failed = (e: HostError) => {
      if (up) return onFailed(e);
      if (over) return;
      failure ??= e;
      ended.abort();
    };
    const stop = signal ? AbortSignal.any([signal, ended.signal]) : ended.signal;
    const common = {
      ...base,
      connectTimeoutMs: p.connectTimeoutMs,
      onFailed: failed,
      signal: stop,
    };
    // Cancelling fails the queues already up, which ends whatever command the attempt
    // waits for; a queue still connecting watches the signal itself.
    const cancelled = new HostError('closed', `connect to ${p.subnqn} cancelled`);
    const cancel = () => opened.forEach((q) => q.fail(failure ?? cancelled));
    stop.addEventListener('abort', cancel, { once: true });
    let keepAlive: KeepAlive | null = null;
    try {
      if (signal?.aborted) throw cancelled;
      const admin = await NvmeTcpQueue.connect({
        ...common,
        qid: 0,
        depth: ADMIN_QUEUE_SIZE - 1,
        reserved: ADMIN_RESERVED_SLOTS,
        commandTimeoutMs: p.adminTimeoutMs,
        maxWaiting: p.maxWaiting,
        // Admin reads are not I/O: a path's small maxTransferBytes must not make its
        // ANA log (up to MAX_ANA_LOG) too large to read, which left the path unusable.
        maxDataLength: Math.max(p.maxDataLength, MAX_ANA_LOG),
        inCapsuleLimit: ADMIN_IN_CAPSULE_LIMIT,
      });
      opened.push(admin);
      const cntlid = await connectQueue(admin, p, {
        qid: 0,
        sqsize: ADMIN_QUEUE_SIZE - 1,
        kato: p.kato,
        cntlid: CNTLID_DYNAMIC,
      });
      const cap = await readCap(admin);
      const cc = await enable(admin, cap);
      // The controller's keep-alive timer runs since the Connect, and Keep Alive is
      // accepted once it is enabled. So it starts here, not once the association is up:
      // an I/O queue may wait longer than KATO for its ICResp (connectTimeoutMs), and
      // the controller would be gone by the time its Connect arrives.
      keepAlive = new KeepAlive(admin, `${p.host}:${p.port}`);
      keepAlive.start(p.kato);
      const vs = (await execute(admin, fillPropertyGet(new NvmeRequest(), PROP.VS, false))).dw0;
      const identity = await identifyController(admin);
      checkIdentity(identity, cntlid, p.discovery);
      if (!p.discovery) await enableRetryDelays(admin, identity);
      const io = await connectIoQueues(admin, p, cap, identity, cntlid, common, opened);
      // A queue that failed after it was up told no one (onFailed reaches the controller
      // only once the association exists): going live with it would leave a dead queue
      // that nothing recovers. Nothing asynchronous can fail one between here and then.
      const dead = [admin, ...io].find((q) => q.state !== 'live');
      if (dead) throw dead.failure ?? new Error(`queue ${dead.qid} is ${dead.state}`);
      up = true;
      return new Association(admin, cntlid, cap, vs, cc, identity, io, keepAlive);
    } catch (e) {
      // A queue connecting when another failed was cancelled: the failure says why.
      const why: unknown = isClosed(e) && failure ? failure : e;
      over = true; // what fails below is no news
      keepAlive?.stop();
      for (const q of opened) q.fail(new HostError('connect', 'connect failed'));
      if (signal?.aborted) throw cancelled;
      if (why instanceof HostError && why.kind === 'connect') throw why;
      const msg = `connect to ${p.subnqn} at ${p.host}:${p.port}: ${(why as Error).message}`;
      throw new HostError('connect', msg, false, { cause: why });
    } finally {
      stop.removeEventListener('abort', cancel);
    }
  }

  get queues(): NvmeTcpQueue[] {
    return [this.admin, ...this.io];
  }

  /** Fail every queue (error recovery): in-flight commands end with `err`. */
  failAll(err: HostError): void {
    this.keepAlive.stop();
    for (const q of this.queues) q.fail(err);
  }

  /**
   * Clean shutdown as Linux deletes a controller: close the I/O queues, set CC.SHN
   * (normal) and wait for CSTS.SHST complete, then close the admin queue.
   */
  async shutdown(timeoutMs = 5000): Promise<void> {
    this.keepAlive.stop(); // as Linux stops it before the shutdown
    await Promise.all(this.io.map((q) => q.close()));
    if (this.admin.state === 'live') {
      try {
        await setProperty(this.admin, PROP.CC, this.cc | CC_SHN_NORMAL);
        await pollCsts(this.admin, CSTS_SHST_COMPLETE, 0xc, timeoutMs, 'shutdown');
      } catch {
        // The controller goes away with the admin queue anyway; shutdown is a courtesy.
      }
    }
    await this.admin.close();
  }
}

function isClosed(e: unknown): boolean {
  return e instanceof HostError && e.kind === 'closed';
}

async function connectQueue(
  q: NvmeTcpQueue,
  p: AssociationParams,
  c: Pick<ConnectParams, 'qid' | 'sqsize' | 'kato' | 'cntlid' | 'cattr'>,
): Promise<number> {
  const params = { ...c, hostid: p.hostid, subnqn: p.subnqn, hostnqn: p.hostnqn };
  try {
    const req = await execute(q, fillConnect(new NvmeRequest(), params), `connect qid ${c.qid}`);
    if (req.dw0 & (3 << 17)) {
      throw new HostError('connect', `${p.subnqn} requires in-band authentication (unsupported)`);
    }
    return req.dw0 & 0xffff;
  } catch (e) {
    if (e instanceof NvmeStatusError && (e.status & 0x7ff) === SC.CONNECT_INVALID_PARAM) {
      // Invalid Parameters: dw0 says which field (IATTR b16: in the data, else the SQE).
      const where = e.dw0 & 0x10000 ? 'connect data' : 'SQE';
      e.message += ` (${where} byte ${e.dw0 & 0xffff})`;
    }
    throw e;
  }
}

async function readCap(admin: NvmeTcpQueue): Promise<ControllerCap> {
  const r = await execute(admin, fillPropertyGet(new NvmeRequest(), PROP.CAP, true), 'get CAP');
  const raw = (BigInt(r.dw1) << 32n) | BigInt(r.dw0);
  const cap = {
    mqes: (r.dw0 & 0xffff) + 1,
    readyTimeoutMs: (((r.dw0 >>> 24) & 0xff) + 1) * 500,
    mpsmin: (r.dw1 >>> 16) & 0xf,
    raw,
  };
  if (cap.mpsmin !== 0) throw new Error(`CAP.MPSMIN ${cap.mpsmin}: 4 KiB pages not supported`);
  return cap;
}

function setProperty(admin: NvmeTcpQueue, offset: number, value: number) {
  return execute(admin, fillPropertySet(new NvmeRequest(), offset, value), 'set property');
}

/** CC without EN, then with EN, then wait for CSTS.RDY (Linux: (CAP.TO+1)/2 s). */
async function enable(admin: NvmeTcpQueue, cap: ControllerCap): Promise<number> {
  await setProperty(admin, PROP.CC, CC_BASE);
  await setProperty(admin, PROP.CC, CC_BASE | CC_EN);
  await pollCsts(admin, CSTS_RDY, CSTS_RDY, cap.readyTimeoutMs, 'enable');
  return CC_BASE | CC_EN;
}

async function pollCsts(
  admin: NvmeTcpQueue,
  want: number,
  mask: number,
  timeoutMs: number,
  what: string,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const r = await execute(admin, fillPropertyGet(new NvmeRequest(), PROP.CSTS, false));
    if (r.dw0 & CSTS_CFS)
      throw new Error(`${what}: controller fatal status (CSTS 0x${r.dw0.toString(16)})`);
    if ((r.dw0 & mask) === want) return;
    if (performance.now() > deadline)
      throw new Error(`${what}: CSTS 0x${r.dw0.toString(16)} after ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 2));
  }
}

function checkIdentity(id: ControllerIdentity, cntlid: number, discovery: boolean): void {
  if (id.cntlid !== cntlid) {
    throw new Error(`Identify CNTLID ${id.cntlid} differs from Connect's ${cntlid}`);
  }
  if (id.icdoff !== 0) throw new Error(`ICDOFF ${id.icdoff} (only 0 is supported)`);
  if (!discovery && (id.sgls & 3) === 0) throw new Error('controller does not support SGLs');
}

/** Host Behavior Support data (512 bytes): byte 0 is ACRE. */
const HOST_BEHAVIOR_SIZE = 512;

/**
 * Ask for Command Retry Delays (ACRE) when the controller has them (CRDT1 not 0), as
 * Linux does (nvme_configure_acre): a controller then sets CRD in a retryable status
 * and the host waits that long before sending it again (status-retry.ts). Refused (a
 * status), the controller keeps CRD 0 and retries are sent at once: no reason to fail.
 */
async function enableRetryDelays(admin: NvmeTcpQueue, id: ControllerIdentity): Promise<void> {
  if (id.crdt[0] === 0) return;
  const data = Buffer.alloc(HOST_BEHAVIOR_SIZE);
  data[0] = 1;
  try {
    await setFeatures(admin, FID.HOST_BEHAVIOR, { data });
  } catch (e) {
    if (!(e instanceof NvmeStatusError)) throw e;
  }
}

async function connectIoQueues(
  admin: NvmeTcpQueue,
  p: AssociationParams,
  cap: ControllerCap,
  id: ControllerIdentity,
  cntlid: number,
  common: Omit<QueueOptions, 'qid' | 'depth'>,
  opened: NvmeTcpQueue[],
): Promise<NvmeTcpQueue[]> {
  if (p.discovery || p.ioQueues === 0) return [];
  const n = p.ioQueues;
  const nq = await setFeatures(admin, FID.NUM_QUEUES, { cdw11: (n - 1) | ((n - 1) << 16) });
  const granted = Math.min(n, (nq.dw0 & 0xffff) + 1, (nq.dw0 >>> 16) + 1);
  // At least 2 entries: a queue of N entries holds N - 1 commands.
  const size = Math.max(2, Math.min(p.queueSize, cap.mqes, id.maxcmd || Infinity));
  // allSettled, not all: every queue that did open must be in `opened` before a
  // failure is reported, so the caller can close them all.
  const results = await Promise.allSettled(
    Array.from({ length: granted }, async (_, i) => {
      const q = await NvmeTcpQueue.connect({
        ...common,
        qid: i + 1,
        depth: size - 1,
        commandTimeoutMs: p.ioTimeoutMs,
        maxWaiting: p.maxWaiting,
        maxDataLength: p.maxDataLength,
        inCapsuleLimit: id.inCapsuleDataSize,
      });
      opened.push(q);
      // The library counts its own commands against the queue depth: SQHD is never needed.
      const cattr = p.disableSqFlow ? CATTR_DISABLE_SQFLOW : 0;
      await connectQueue(q, p, { qid: i + 1, sqsize: size - 1, kato: 0, cntlid, cattr });
      return q;
    }),
  );
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
  return results.map((r) => (r as PromiseFulfilledResult<NvmeTcpQueue>).value);
}
