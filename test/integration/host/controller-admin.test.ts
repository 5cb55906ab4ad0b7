/**
 * Admin-side behaviour of the host library at its edges, against the in-process
 * FakeTarget (real sockets on 127.0.0.1): a command callback that closes or reconnects
 * the controller while error recovery fails its commands, close() against a controller
 * that stops answering, a namespace whose LBA format carries metadata, a discovery
 * log whose NUMREC changes without GENCTR (plus the GENCTR re-read it sits next to) or
 * is absurd, counts and lists in identify data that would size the host's memory or
 * loop it for ever, transfers larger than a queue takes, and command timeouts across
 * a wall-clock step.
 */
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MAX_ANA_LOG } from '../../../engine/src/host/ana-log.js';
import {
  HostError,
  NvmeController,
  NvmeRequest,
  NvmeTcpQueue,
  fillRw,
  readDiscoveryLog,
  type AsyncEvent,
  type ControllerState,
} from '../../../engine/src/host/index.js';
import { encodeActiveNsList } from '../../../engine/src/protocol/identify.js';
import {
  encodeDiscoveryLog,
  sliceLog,
  type DiscoveryEntry,
} from '../../../engine/src/protocol/logpages.js';
import {
  ADMIN,
  CNS,
  DISCOVERY_NQN,
  FABRICS_OPCODE,
  IO,
  LID,
} from '../../../engine/src/protocol/opcodes.js';
import { cdw, cdwPair } from '../../../engine/src/protocol/sqe.js';
import { waitFor } from './helpers.js';
import { FakeTarget, type FakeTargetOptions } from './fake-target.js';

/** FakeTarget internals replaced by some tests (private there; patched at run time). */
interface Internals {
  onAdmin(c: unknown, sqe: Buffer, cid: number, op: number): void;
  sendData(c: unknown, cid: number, data: Buffer): void;
  identify(cns: number): Buffer;
}

const targets: FakeTarget[] = [];
const ctrls: NvmeController[] = [];

afterEach(async () => {
  await Promise.all(ctrls.splice(0).map((c) => c.close(100)));
  await Promise.all(targets.splice(0).map((t) => t.stop()));
});

async function start(t: FakeTargetOptions = {}): Promise<FakeTarget> {
  const target = await new FakeTarget(t).start();
  targets.push(target);
  return target;
}

async function connect(target: FakeTarget, subnqn = 'nqn.fake', o = {}) {
  const ctrl = await NvmeController.connect({ host: '127.0.0.1', port: target.port, subnqn, ...o });
  ctrls.push(ctrl);
  return ctrl;
}

describe('controller error recovery and close', () => {
  it.each([
    {
      action: 'close',
      final: 'closed',
      states: ['connecting', 'live', 'dead', 'deleting', 'closed'],
    },
    {
      action: 'reconnect',
      final: 'live',
      states: ['connecting', 'live', 'dead', 'connecting', 'live'],
    },
  ] as const)(
    'lets the callback of a command failed by error recovery $action the controller',
    async ({ action, final, states }) => {
      // A read held on the I/O queue; then the admin connection drops. Recovery fails the
      // read, and its callback (callback API, so synchronously) calls close()/reconnect().
      const target = await start({ hold: (op, qid) => qid > 0 && op === IO.READ });
      const seen: ControllerState[] = [];
      const ctrl = await connect(target, 'nqn.fake', {
        onStateChange: (s: ControllerState) => seen.push(s),
      });
      const uncaught: unknown[] = [];
      const onUncaught = (e: unknown) => uncaught.push(e);
      process.prependListener('uncaughtException', onUncaught);
      try {
        let calls = 0;
        let next: Promise<void> | null = null;
        let stateInCallback: ControllerState | null = null;
        const req = fillRw(new NvmeRequest(), IO.READ, 1, 0, 1);
        req.readLength = 512;
        req.onDone = (r) => {
          calls++;
          stateInCallback = ctrl.state;
          expect(r.error?.kind).toBe('transport');
          next = action === 'close' ? ctrl.close(100) : ctrl.reconnect();
        };
        ctrl.submitIo(req);
        await waitFor(() => target.ioCommands === 1);
        for (const c of target.conns) if (c.qid === 0) c.sock.destroy();
        await waitFor(() => calls === 1);
        await next;
        await new Promise((r) => setTimeout(r, 50));
        expect(calls).toBe(1);
        // The association is gone when its commands fail: no reconnect policy, so dead.
        // (Before the fix: 'live', with no association behind it.)
        expect(stateInCallback).toBe('dead');
      } finally {
        process.removeListener('uncaughtException', onUncaught);
      }
      // Before the fix: "controller: illegal state transition deleting -> dead" thrown
      // from the socket's close handler (a process crash outside a test runner), and
      // after reconnect() the controller went 'dead' under its own attempt.
      expect(uncaught).toEqual([]);
      expect(ctrl.state).toBe(final);
      expect(seen).toEqual(states);
    },
  );

  it('fails the old association under reconnect() with the controller connecting; a callback reconnect() joins that attempt', async () => {
    const target = await start({ hold: (op, qid) => qid > 0 && op === IO.READ });
    const ctrl = await connect(target);
    const req = fillRw(new NvmeRequest(), IO.READ, 1, 0, 1);
    req.readLength = 512;
    let stateInCallback: ControllerState | null = null;
    let joined: Promise<void> | null = null;
    req.onDone = (r) => {
      expect(r.error?.kind).toBe('transport');
      stateInCallback = ctrl.state;
      joined = ctrl.reconnect();
    };
    ctrl.submitIo(req);
    await waitFor(() => target.ioCommands === 1);
    const admins = () => [...target.conns].filter((c) => c.qid === 0).length;
    await ctrl.reconnect();
    await joined;
    expect(stateInCallback).toBe('connecting'); // before the fix: 'live'
    expect(ctrl.state).toBe('live');
    expect(admins()).toBe(1); // one new association, not two
  });

  it('ends reconnect() as closed when a failed command of the old association closes the controller', async () => {
    const target = await start({ hold: (op, qid) => qid > 0 && op === IO.READ });
    const ctrl = await connect(target);
    const req = fillRw(new NvmeRequest(), IO.READ, 1, 0, 1);
    req.readLength = 512;
    let closing: Promise<void> | null = null;
    req.onDone = () => (closing = ctrl.close(100));
    ctrl.submitIo(req);
    await waitFor(() => target.ioCommands === 1);
    const outcome = await ctrl.reconnect().catch((e: unknown) => e);
    await closing;
    // Before the fix: a plain Error, "controller: illegal state transition deleting -> connecting".
    expect(outcome).toBeInstanceOf(HostError);
    expect((outcome as HostError).kind).toBe('closed');
    expect(ctrl.state).toBe('closed');
  });

  it.each([
    { stage: 'the Fabrics Connect is never answered', where: 'connect' },
    { stage: 'the ICReq is never answered', where: 'ic' },
  ] as const)(
    'close() during a reconnect attempt stops it at once when $stage',
    async ({ where }) => {
      let silent = false;
      const target = await start({ hold: (op) => silent && op === FABRICS_OPCODE });
      // Timeouts far beyond this test's own: before the fix close() waited for them.
      const ctrl = await connect(target, 'nqn.fake', {
        adminTimeoutMs: 120_000,
        connectTimeoutMs: 120_000,
      });
      let accepted = 0;
      let silentServer: net.Server | null = null;
      if (where === 'connect') {
        silent = true;
      } else {
        // The target goes away; something on its port takes connections and never answers.
        const port = target.port;
        await target.stop();
        silentServer = net.createServer((sock) => {
          accepted++;
          sock.on('error', () => undefined);
        });
        await new Promise<void>((resolve) => silentServer!.listen(port, '127.0.0.1', resolve));
      }
      const attempt = ctrl.reconnect().catch((e: unknown) => e);
      try {
        if (where === 'connect') await waitFor(() => target.conns.size === 1);
        else await waitFor(() => accepted === 1);
        await new Promise((r) => setTimeout(r, 100)); // the attempt is waiting now
        expect(ctrl.state).toBe('connecting');
        await ctrl.close(100);
        const outcome = await attempt;
        expect(outcome).toBeInstanceOf(HostError);
        expect((outcome as HostError).kind).toBe('closed');
        expect(ctrl.state).toBe('closed');
      } finally {
        silentServer?.close();
      }
    },
    20_000,
  );

  it('bounds close() when the controller stops answering the shutdown', async () => {
    let silent = false;
    const target = await start({ hold: (op, qid) => silent && qid === 0 && op === FABRICS_OPCODE });
    const ctrl = await connect(target, 'nqn.fake', { adminTimeoutMs: 20_000 });
    silent = true; // the connection stays open; Property Set CC.SHN is never answered
    const t0 = Date.now();
    await ctrl.close(100);
    const took = Date.now() - t0;
    expect(ctrl.state).toBe('closed');
    // Shutdown waits at most ~5 s (Linux's shutdown_timeout), not the 20 s admin timeout.
    expect(took).toBeLessThan(8000);
  }, 30_000);
});

describe('namespace identify', () => {
  /** Identify Namespace with two LBA formats: 0 = 512+8 (extended), 1 = 4096+0. */
  async function withFormats(flbas: number) {
    const target = await start({ blockSize: 4096, blocks: 256 });
    const t = target as unknown as Internals;
    const honest = t.identify.bind(target);
    t.identify = (cns) => {
      const b = honest(cns);
      if (cns !== CNS.NS) return b;
      b[25] = 1; // NLBAF: two formats (0's based)
      b[26] = flbas;
      b.writeUInt32LE(0, 128);
      b.writeUInt16LE(8, 128); // LBAF0: MS 8
      b[128 + 2] = 9; // LBAF0: LBADS 9
      b[132 + 2] = 12; // LBAF1: MS 0, LBADS 12
      return b;
    };
    return connect(target);
  }

  it('refuses a namespace whose LBA format carries metadata', async () => {
    const ctrl = await withFormats(0x10); // format 0, metadata at the end of each LBA
    // Before the fix: a handle with blockSize 512, whose every transfer length is short
    // by 8 bytes per block.
    await expect(ctrl.namespace(1)).rejects.toThrow(/8 bytes of metadata per block/);
  });

  it('takes the metadata size from the format FLBAS selects', async () => {
    const ctrl = await withFormats(0x01); // format 1: 4 KiB, no metadata
    const ns = await ctrl.namespace(1);
    expect(ns.blockSize).toBe(4096);
    expect(ns.identity.ms).toBe(0);
  });
});

describe('discovery log', () => {
  const entry = (i: number): DiscoveryEntry => ({
    trtype: 3,
    adrfam: 1,
    subtype: i === 0 ? 3 : 2,
    treq: 0x2 | 0x4,
    portid: i,
    cntlid: 0xffff,
    asqsz: 32,
    eflags: 0,
    trsvcid: String(4420 + i),
    subnqn: i === 0 ? DISCOVERY_NQN : `nqn.2024-01.org.example:sub${i}`,
    traddr: '10.0.0.1',
    sectype: 0,
  });

  /**
   * A FakeTarget whose log 0x70 is `page()`; `afterBody` runs after the first read of
   * entries (LPO > 0). Records every read as "lpo+length rae".
   */
  async function discoveryTarget(page: () => Buffer, afterBody: () => void) {
    const target = await start();
    const t = target as unknown as Internals;
    const honest = t.onAdmin.bind(target);
    const reads: string[] = [];
    let bodies = 0;
    t.onAdmin = (c, sqe, cid, op) => {
      if (op !== ADMIN.GET_LOG_PAGE || (cdw(sqe, 10) & 0xff) !== LID.DISCOVERY) {
        return honest(c, sqe, cid, op);
      }
      const numd = (cdw(sqe, 10) >>> 16) + (cdw(sqe, 11) & 0xffff) * 0x10000 + 1;
      const lpo = cdwPair(sqe, 12);
      reads.push(`${lpo}+${numd * 4} rae${(cdw(sqe, 10) >>> 15) & 1}`);
      t.sendData(c, cid, sliceLog(page(), lpo, numd * 4));
      if (lpo > 0 && bodies++ === 0) afterBody();
    };
    const ctrl = await connect(target, DISCOVERY_NQN);
    return { ctrl, reads };
  }

  it('reads a log larger than one transfer and reads it again when GENCTR moves', async () => {
    let genctr = 7;
    let entries = Array.from({ length: 70 }, (_, i) => entry(i));
    const { ctrl, reads } = await discoveryTarget(
      () => encodeDiscoveryLog(genctr, entries),
      () => {
        genctr++;
        entries = entries.slice(0, 69);
      },
    );
    const log = await readDiscoveryLog(ctrl);
    expect(reads).toEqual([
      '0+20 rae1',
      '1024+65536 rae1',
      '66560+6144 rae1',
      '0+20 rae0',
      '0+20 rae1',
      '1024+65536 rae1',
      '66560+5120 rae1',
      '0+20 rae0',
    ]);
    expect(log.genctr).toBe(8n);
    expect(log.entries).toHaveLength(69);
    expect(log.entries[0]).toMatchObject({ subtype: 3, subnqn: DISCOVERY_NQN, eflags: 0 });
    expect(log.entries[68]).toEqual(entry(68));
  });

  it('refuses a log whose NUMREC changed within one GENCTR', async () => {
    let entries = Array.from({ length: 70 }, (_, i) => entry(i));
    const { ctrl } = await discoveryTarget(
      () => encodeDiscoveryLog(7, entries),
      () => (entries = entries.slice(0, 69)), // shrinks, GENCTR left alone
    );
    // Before the fix: 70 entries, the last one all zeros (the target's padding).
    await expect(readDiscoveryLog(ctrl)).rejects.toThrow(/NUMREC went from 70 to 69/);
  });

  it('refuses a log that claims more records than anyone has, before allocating them', async () => {
    const { ctrl, reads } = await discoveryTarget(
      () => {
        const log = encodeDiscoveryLog(7, [entry(0)]);
        log.writeBigUInt64LE(1n << 40n, 8); // NUMREC: a petabyte of entries
        return log;
      },
      () => {},
    );
    await expect(readDiscoveryLog(ctrl)).rejects.toThrow(
      /claims 1099511627776 records, more than the 16384 the library reads/,
    );
    expect(reads).toEqual(['0+20 rae1']);
  });
});

describe('identify data and sizes that lie', () => {
  it('reads at most MAX_ANA_LOG of the ANA log after an event, whatever MNAN says', async () => {
    const target = await start();
    const t = target as unknown as Internals;
    const honest = t.identify.bind(target);
    t.identify = (cns) => {
      const b = honest(cns);
      if (cns === CNS.CTRL) b.writeUInt32LE(0xffffffff, 540); // MNAN: 16 GiB of NSIDs
      return b;
    };
    const events: AsyncEvent[] = [];
    const ctrl = await connect(target, 'nqn.fake', {
      onAsyncEvent: (e: AsyncEvent) => events.push(e),
    });
    await waitFor(() => target.fireEvent(0x000c0302) === 1); // ANA change, log 0x0C
    await waitFor(() => events.length === 1);
    // Before the fix: the Get Log Page for 16 GiB threw inside the queue after taking a
    // command slot; it never went out, the event came with no log, and the admin
    // timeout later took the association down for a command never sent.
    expect(events[0]!.log?.length).toBe(MAX_ANA_LOG);
    expect(ctrl.state).toBe('live');
  });

  it('stops following an active namespace list that does not move forward', async () => {
    const target = await start();
    const t = target as unknown as Internals;
    const honest = t.identify.bind(target);
    let pages = 0;
    t.identify = (cns) => {
      if (cns !== CNS.NS_ACTIVE_LIST) return honest(cns);
      pages++; // the same full page, whatever NSID the host asks to start after
      return encodeActiveNsList(
        Array.from({ length: 1024 }, (_, i) => i + 1),
        0,
      );
    };
    const ctrl = await connect(target);
    // Before the fix: asked for page after page for ever, 1024 more NSIDs each time.
    await expect(ctrl.activeNamespaces()).rejects.toThrow(
      /not in ascending order \(NSID 1 after 1024\)/,
    );
    expect(pages).toBe(2);
    expect(ctrl.state).toBe('live');
  });

  it('refuses, as never sent, a transfer larger than the queue takes; the association carries on', async () => {
    const target = await start();
    const ctrl = await connect(target, 'nqn.fake', { maxTransferBytes: 64 * 1024 });
    // Admin: the log a caller asks for is larger than the admin queue's limit.
    const err = await ctrl
      .getLogPage({ lid: LID.ANA, length: 2 << 20 })
      .catch((e: unknown) => e as HostError);
    expect(err).toBeInstanceOf(HostError);
    expect(err).toMatchObject({ kind: 'too-large', maybeExecuted: false });
    expect((err as Error).message).toMatch(/2097152-byte transfer is over .* 1048576 bytes/);
    // I/O: a read past the I/O queue's limit.
    const req = fillRw(new NvmeRequest(), IO.READ, 1, 0, 256);
    req.readLength = 128 * 1024;
    const io = await new Promise<NvmeRequest>((resolve) => {
      req.onDone = resolve;
      ctrl.submitIo(req);
    });
    expect(io.error?.kind).toBe('too-large');
    expect(target.ioCommands).toBe(0);
    // Before the fix: the target answered the 2 MiB log in one PDU, too large for the
    // host's parser, and the whole association went down.
    expect(ctrl.state).toBe('live');
    const ns = await ctrl.namespace(1);
    expect((await ns.read(0, 8)).length).toBe(8 * ns.blockSize);
  });
});

describe('command timeouts', () => {
  it('times a command out by the monotonic clock: a wall-clock step back does not stop it', async () => {
    const target = await start({ hold: (op, qid) => qid > 0 && op === IO.READ });
    const ctrl = await connect(target, 'nqn.fake', { ioTimeoutMs: 300 });
    const req = fillRw(new NvmeRequest(), IO.READ, 1, 0, 1);
    req.readLength = 512;
    const done = new Promise<NvmeRequest>((resolve) => (req.onDone = resolve));
    ctrl.submitIo(req);
    await waitFor(() => target.ioCommands === 1);
    const real = Date.now();
    vi.spyOn(Date, 'now').mockReturnValue(real - 3_600_000); // NTP steps the clock back 1 h
    try {
      const r = await Promise.race([
        done,
        new Promise<null>((resolve) => setTimeout(() => resolve(null), 3000)),
      ]);
      // Before the fix: no timeout for an hour.
      expect(r?.error?.kind).toBe('timeout');
    } finally {
      vi.restoreAllMocks();
    }
  });
});

describe('timer settings', () => {
  // Before: Node fired these after 1 ms (TimeoutOverflowWarning): a connect timeout of
  // Infinity failed every connect at once ("TCP connect timed out after Infinity ms"), a
  // reconnect delay of 2^31 ms reconnected at once, a NaN I/O timeout scanned every 1 ms.
  it('refuses timer settings Node cannot keep, before connecting, and says what to give', async () => {
    const target = await start();
    const base = { host: '127.0.0.1', port: target.port, subnqn: 'nqn.fake' };
    const cases: [Partial<Parameters<typeof NvmeController.connect>[0]>, RegExp][] = [
      [{ connectTimeoutMs: Infinity }, /connectTimeoutMs Infinity is not .* from 1 to 2147483647/],
      [{ connectTimeoutMs: 2 ** 31 }, /connectTimeoutMs 2147483648 is not .*after 1 ms\)\. Give/],
      [
        { reconnect: { delayMs: 2 ** 31, lossTimeoutMs: Infinity } },
        /reconnect\.delayMs 2147483648/,
      ],
      [
        { reconnect: { delayMs: 100, lossTimeoutMs: NaN } },
        /reconnect\.lossTimeoutMs NaN .* 0 or more/,
      ],
      [{ ioTimeoutMs: NaN }, /ioTimeoutMs NaN is not a number of milliseconds 0 or more\. Give/],
      [{ adminTimeoutMs: -1 }, /adminTimeoutMs -1 is not/],
    ];
    for (const [o, msg] of cases) {
      const err = await NvmeController.connect({ ...base, ...o }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RangeError);
      expect((err as Error).message).toMatch(new RegExp(`^controller 127\\.0\\.0\\.1:\\d+: `));
      expect((err as Error).message).toMatch(msg);
    }
    // A queue opened on its own refuses them too.
    const q = { host: '127.0.0.1', port: target.port, qid: 0, depth: 4 };
    await expect(NvmeTcpQueue.connect({ ...q, connectTimeoutMs: Infinity })).rejects.toThrow(
      /^127\.0\.0\.1:\d+ queue 0: connectTimeoutMs Infinity is not/,
    );
    await expect(NvmeTcpQueue.connect({ ...q, commandTimeoutMs: NaN })).rejects.toThrow(RangeError);
    expect(target.adminOps).toEqual([]); // nothing connected
    expect(target.conns.size).toBe(0);
    // The largest of each still works; Infinity is "for ever" where that has a meaning.
    const ctrl = await connect(target, 'nqn.fake', {
      connectTimeoutMs: 2 ** 31 - 1,
      ioTimeoutMs: Infinity,
      reconnect: { delayMs: 2 ** 31 - 1, lossTimeoutMs: Infinity },
    });
    expect(ctrl.state).toBe('live');
  });
});
