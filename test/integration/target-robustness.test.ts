/**
 * Robustness of the NVMe/TCP target ("Must show: Robustness"): a live `branchsan export`
 * process is fed malformed and mutated PDUs and out-of-range commands from raw, scripted
 * connections, while a well-behaved host (the host library, 2 I/O queues) keeps writing
 * random data and reading it back the whole time.
 *
 * For every structured case the exact NVMe status (in a CapsuleResp) or C2HTermReq FES
 * (and FEI, where it names a field) is asserted, and that only the offending connection
 * is closed. For random cases (seeded fast-check) the rule is: whatever comes back parses
 * as valid PDUs, a TermReq is the last thing sent and is followed by the target closing
 * the connection, and nothing hangs beyond a timeout. At the end the process is alive,
 * logged no internal error, the good host saw no error, its data verifies, and a fresh
 * connection works.
 *
 * Needs the built engine (npm test builds it; or npm run build:engine).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NvmeController, type NvmeNamespace } from '../../engine/src/host/index.js';
import { IO } from '../../engine/src/protocol/opcodes.js';
import { readCqe, type Cqe } from '../../engine/src/protocol/pdu-capsule.js';
import {
  encodeCapsuleCmd,
  encodeH2CData,
  encodeICReq,
  encodeTermReq,
  Fes,
  PduFlag,
  PduType,
  type C2HPdu,
  type Digests,
} from '../../engine/src/protocol/pdu.js';
import { encodeSqe } from '../../engine/src/protocol/sqe.js';
import { DNR, SC } from '../../engine/src/protocol/status.js';
import { IN_CAPSULE_DATA_SIZE, MAXH2CDATA } from '../../engine/src/protocol/tcp-limits.js';
import { BIN, REPO_ROOT, tempDir } from '../helpers/engine.js';
import {
  adminConnect,
  connectData,
  connectSqe,
  describe as describePdu,
  enableController,
  ioConnect,
  RawHost,
  rwSqe,
  sqe,
  type Outcome,
} from '../helpers/raw-nvme.js';

const NQN = 'nqn.2026-01.io.branchsan.test:robustness';
const GOOD_HOST = 'nqn.2014-08.org.nvmexpress:uuid:0000aaaa-0000-4000-8000-00000000600d';
const RAW_HOST = 'nqn.2014-08.org.nvmexpress:uuid:0000bbbb-0000-4000-8000-0000000000ba';
const SIZE = 64 << 20;
const BS = 512;
const NSZE = SIZE / BS;
/** The good host writes below this block; raw connections write above it. */
const RAW_AREA = NSZE / 2;
const SEED = 0x5eed_b5a1;
const DIGEST_MODES: Digests[] = [
  { hdgst: false, ddgst: false },
  { hdgst: true, ddgst: false },
  { hdgst: false, ddgst: true },
  { hdgst: true, ddgst: true },
];
/** Generous: the machine is shared and slow; nothing here should come close. */
const SETTLE_MS = 10_000;

// ---------------------------------------------------------------- the export process

interface ExportProcess {
  proc: ChildProcess;
  port: number;
  stderr(): string;
  alive(): boolean;
}

let exp: ExportProcess;
let dir: string;
let good: NvmeController;
let workload: Workload;

async function startExport(file: string): Promise<ExportProcess> {
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist/engine/src/cli/export.js'))) {
    throw new Error('the engine is not built: run `npm run build:engine` first');
  }
  const proc = spawn(
    process.execPath,
    [BIN, 'export', file, '--create-size', '64M', '--port', '0', '--nqn', NQN],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Set what bin/branchsan.js would set, so it does not re-exec: proc is the target.
      env: {
        ...process.env,
        MALLOC_TRIM_THRESHOLD_: '1073741824',
        MALLOC_TOP_PAD_: '67108864',
        MALLOC_MMAP_THRESHOLD_: '33554432',
      },
    },
  );
  let out = '';
  let err = '';
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`export not ready in 30 s\n${out}\n${err}`)),
      30_000,
    );
    proc.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /nvme connect -t tcp -a \S+ -s (\d+) -n /.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`export exited with ${code}\n${out}\n${err}`));
    });
  });
  return {
    proc,
    port,
    stderr: () => err,
    alive: () => proc.exitCode === null && proc.signalCode === null,
  };
}

// ---------------------------------------------------------------- the good host

/** Deterministic small PRNG (the data itself is random; sizes and places are seeded). */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x1_0000_0000;
  };
}

/**
 * Verified I/O: each worker owns its own slots (no overlapping writes in flight), writes
 * random data of mixed sizes (in-capsule and R2T, some FUA), reads it back and compares.
 * Every error of any kind is recorded: the suite allows none.
 */
class Workload {
  static readonly SLOT_BLOCKS = 256;
  static readonly SLOTS_PER_WORKER = 24;
  static readonly SIZES = [1, 8, 16, 32, 64, 256]; // blocks: 512 B .. 128 KiB
  readonly errors: string[] = [];
  ops = 0;
  private stopped = false;
  private readonly last = new Map<number, Buffer>();
  private readonly running: Promise<void>[] = [];

  constructor(
    private readonly ns: NvmeNamespace,
    private readonly workers: number,
  ) {}

  start(): void {
    for (let w = 0; w < this.workers; w++) this.running.push(this.worker(w));
  }

  private async worker(w: number): Promise<void> {
    const rnd = prng(SEED + w);
    while (!this.stopped) {
      const slot = w + this.workers * Math.floor(rnd() * Workload.SLOTS_PER_WORKER);
      const nlb = Workload.SIZES[Math.floor(rnd() * Workload.SIZES.length)]!;
      const slba = slot * Workload.SLOT_BLOCKS;
      const data = randomBytes(nlb * BS);
      try {
        await this.ns.write(slba, data, { fua: rnd() < 0.25 });
        this.last.set(slot, data);
        const back = await this.ns.read(slba, nlb);
        if (!back.equals(data)) this.errors.push(`slot ${slot}: read back differs`);
        this.ops++;
      } catch (e) {
        this.errors.push(`slot ${slot}: ${String(e)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.running);
  }

  /** Every slot holds what was last written to it. */
  async verifyAll(): Promise<number> {
    for (const [slot, data] of this.last) {
      const back = await this.ns.read(slot * Workload.SLOT_BLOCKS, data.length / BS);
      if (!back.equals(data)) this.errors.push(`final verify: slot ${slot} differs`);
    }
    return this.last.size;
  }
}

// ---------------------------------------------------------------- raw connection helpers

const open: RawHost[] = [];

async function raw(): Promise<RawHost> {
  const h = await RawHost.connect(exp.port);
  open.push(h);
  return h;
}

/** Raw connection with a live, enabled controller and I/O queue 1 connected. */
async function rawIoQueue(dg: Digests = DIGEST_MODES[0]!): Promise<RawHost> {
  const admin = await raw();
  const c = await adminConnect(admin, { subnqn: NQN, hostnqn: RAW_HOST, dg });
  expect(c.status).toBe(0);
  await enableController(admin);
  const io = await raw();
  const q = await ioConnect(io, { subnqn: NQN, hostnqn: RAW_HOST, cntlid: c.dw0, qid: 1, dg });
  expect(q.status).toBe(0);
  return io;
}

/** The target ended the connection with exactly this TermReq, and closed it itself. */
async function expectTerm(h: RawHost, fes: number, fei?: number): Promise<void> {
  const o = await h.settle(SETTLE_MS);
  expect(o.parseError, o.parseError?.message).toBeNull();
  expect(o.closed, 'the target closes the connection after a TermReq').toBe(true);
  const last = o.pdus.at(-1);
  expect(last && describePdu(last)).toMatch(/^TermReq/);
  expect(o.term).toMatchObject({
    type: PduType.C2HTermReq,
    fes,
    ...(fei === undefined ? {} : { fei }),
  });
}

/** Generic oracle for random input: valid PDUs only, a TermReq last if any, then closed. */
function expectSane(o: Outcome, what: string): void {
  expect(o.parseError, `${what}: ${o.parseError?.message}`).toBeNull();
  expect(o.closed, `${what}: connection still open after ${SETTLE_MS} ms`).toBe(true);
  if (o.term) {
    expect(o.pdus.at(-1), `${what}: TermReq is the last PDU`).toBe(o.term);
    expect(o.term.type).toBe(PduType.C2HTermReq);
    expect(o.term.fes, what).toBeGreaterThanOrEqual(Fes.INVALID_HEADER_FIELD);
    expect(o.term.fes, what).toBeLessThanOrEqual(Fes.UNSUPPORTED_PARAMETER);
  }
  for (const p of o.pdus) {
    // The phase bit of a CQE sent over a fabric is 0.
    if (p.type === PduType.CapsuleResp) expect(p.cqe.readUInt16LE(14) & 1, what).toBe(0);
  }
}

function cqeOf(p: C2HPdu | undefined): Cqe {
  if (!p || p.type !== PduType.CapsuleResp) {
    throw new Error(`expected a CapsuleResp, got ${p ? describePdu(p) : 'nothing'}`);
  }
  return readCqe(p.cqe);
}

/** Run `fn` over items with at most `n` at once. */
async function pool<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (i < items.length) await fn(items[i++]!);
    }),
  );
}

function icReq(over: { pfv?: number; hpda?: number } = {}, dg = DIGEST_MODES[0]!): Buffer {
  return encodeICReq({ hpda: 0, maxr2t: 0, ...dg, ...over });
}

/** A whole CapsuleCmd as one Buffer. */
function capsule(s: Buffer, data: Buffer | null, dg: Digests): Buffer {
  return Buffer.concat(encodeCapsuleCmd(s, data, dg));
}

// ---------------------------------------------------------------- setup

beforeAll(async () => {
  dir = tempDir('branchsan-robust-');
  exp = await startExport(path.join(dir, 'vol.img'));
  good = await NvmeController.connect({
    host: '127.0.0.1',
    port: exp.port,
    subnqn: NQN,
    hostnqn: GOOD_HOST,
    ioQueues: 2,
    queueSize: 32,
    hdgst: true,
    ddgst: true,
  });
  expect(good.ioQueueCount).toBe(2);
  workload = new Workload(await good.namespace(1), 3);
  workload.start();
}, 60_000);

afterAll(async () => {
  for (const h of open.splice(0)) h.close();
  await workload?.stop().catch(() => {});
  await good?.close(1000).catch(() => {});
  if (exp && exp.alive()) {
    exp.proc.kill('SIGTERM');
    const t = setTimeout(() => exp.proc.kill('SIGKILL'), 5000);
    await new Promise((r) => exp.proc.once('exit', r));
    clearTimeout(t);
  }
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
}, 30_000);

// ---------------------------------------------------------------- the cases

describe('before the IC exchange', () => {
  it('rejects bad ICReq fields with the exact TermReq and closes that connection', async () => {
    const cases: [string, Buffer, number, number][] = [
      ['PFV 1', icReq({ pfv: 1 }), Fes.UNSUPPORTED_PARAMETER, 8],
      ['HPDA 32', icReq({ hpda: 32 }), Fes.UNSUPPORTED_PARAMETER, 10],
      ['HPDA 255', icReq({ hpda: 255 }), Fes.UNSUPPORTED_PARAMETER, 10],
    ];
    const mutate = (what: string, off: number, v: number, fes: number, fei: number) => {
      const b = icReq();
      if (off === 4) b.writeUInt32LE(v, 4);
      else b[off] = v;
      cases.push([what, b, fes, fei]);
    };
    mutate('hlen 127', 2, 127, Fes.INVALID_HEADER_FIELD, 2);
    mutate('hlen 0', 2, 0, Fes.INVALID_HEADER_FIELD, 2);
    mutate('hlen 255', 2, 255, Fes.INVALID_HEADER_FIELD, 2);
    mutate('plen 129', 4, 129, Fes.INVALID_HEADER_FIELD, 4);
    mutate('plen 0', 4, 0, Fes.INVALID_HEADER_FIELD, 4);
    mutate('plen 2^32-1', 4, 0xffffffff, Fes.INVALID_HEADER_FIELD, 4);
    mutate('pdo 8', 3, 8, Fes.INVALID_HEADER_FIELD, 3);
    mutate('HDGSTF on an ICReq', 1, PduFlag.HDGST, Fes.INVALID_HEADER_FIELD, 1);
    mutate('DDGSTF on an ICReq', 1, PduFlag.DDGST, Fes.INVALID_HEADER_FIELD, 1);
    mutate('type 0x01 (ICResp)', 0, 0x01, Fes.INVALID_HEADER_FIELD, 0);
    mutate('type 0x7f', 0, 0x7f, Fes.INVALID_HEADER_FIELD, 0);
    // A command or data PDU before the IC exchange is a PDU sequence error.
    const flush = capsule(sqe(IO.FLUSH, 1), null, DIGEST_MODES[0]!);
    cases.push(['CapsuleCmd first', flush, Fes.PDU_SEQUENCE_ERROR, 0]);
    const h2c = Buffer.concat(
      encodeH2CData({ cccid: 1, ttag: 1, datao: 0, last: true }, Buffer.alloc(512), {
        hdgst: false,
        ddgst: false,
      }),
    );
    cases.push(['H2CData first', h2c, Fes.PDU_SEQUENCE_ERROR, 0]);
    for (const [what, bytes, fes, fei] of cases) {
      const h = await raw();
      h.send(bytes);
      await expectTerm(
        h,
        fes,
        fes === Fes.INVALID_HEADER_FIELD || fes === 6 ? fei : undefined,
      ).catch((e: Error) => {
        throw new Error(`${what}: ${e.message}`);
      });
    }
  });

  it('closes quietly on a truncated ICReq or an H2CTermReq, and answers a repeated ICReq with FES 2', async () => {
    const cut = await raw();
    cut.send(icReq().subarray(0, 64));
    const o = await cut.settle(SETTLE_MS, true);
    expect(o).toMatchObject({ closed: true, pdus: [], parseError: null });

    const term = await raw();
    term.send(encodeTermReq(PduType.H2CTermReq, Fes.INVALID_HEADER_FIELD, 0));
    expect(await term.settle(SETTLE_MS)).toMatchObject({ closed: true, pdus: [] });

    const twice = await raw();
    await twice.ic();
    twice.send(icReq());
    await expectTerm(twice, Fes.PDU_SEQUENCE_ERROR);
  });

  it('random bytes instead of an ICReq: a TermReq or a quiet close, never a hang (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 400 }), async (bytes) => {
        const h = await raw();
        h.send(Buffer.from(bytes));
        const o = await h.settle(SETTLE_MS, true);
        h.close();
        const what = `bytes ${Buffer.from(bytes.subarray(0, 16)).toString('hex')}`;
        expectSane(o, what);
        // The type byte alone decides the first verdict when it is not ICReq/H2CTermReq.
        const t = bytes[0]!;
        if (bytes.length >= 8 && t !== PduType.ICReq && t !== PduType.H2CTermReq) {
          const fes = t === PduType.CapsuleCmd || t === PduType.H2CData ? 2 : 1;
          expect(o.term, what).toMatchObject({ fes, fei: 0 });
          expect(o.pdus, what).toHaveLength(1);
        }
      }),
      { seed: SEED, numRuns: 40, endOnFailure: true },
    );
  });
});

describe('after a valid IC exchange', () => {
  it('random bytes after IC: valid responses or a TermReq and close (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...DIGEST_MODES),
        fc.uint8Array({ minLength: 1, maxLength: 600 }),
        async (dg, bytes) => {
          const h = await raw();
          await h.ic(dg);
          h.send(Buffer.from(bytes));
          const o = await h.settle(SETTLE_MS, true);
          h.close();
          const what = `dg ${JSON.stringify(dg)} bytes ${Buffer.from(bytes.subarray(0, 16)).toString('hex')}`;
          expectSane(o, what);
          const t = bytes[0]!;
          if (bytes.length >= 8 && ![0, 2, 4, 6].includes(t)) {
            expect(o.term, what).toMatchObject({ fes: 1, fei: 0 });
          }
          if (bytes.length >= 8 && t === PduType.ICReq) {
            expect(o.term, what).toMatchObject({ fes: 2 });
          }
        },
      ),
      { seed: SEED + 1, numRuns: 40, endOnFailure: true },
    );
  });

  it('every single-bit flip of a CapsuleCmd header gets the exact verdict (exhaustive)', async () => {
    // Two capsules valid on a fresh connection: an admin Connect with 1024 bytes
    // in-capsule (succeeds), and a Flush without data (Invalid Opcode before Connect).
    const bases = [
      {
        name: 'connect',
        sqe: connectSqe(7, 31, 0, 0),
        data: connectData({ subnqn: NQN, hostnqn: RAW_HOST }),
        ok: SC.SUCCESS,
      },
      { name: 'flush', sqe: sqe(IO.FLUSH, 7), data: null, ok: SC.INVALID_OPCODE | DNR },
    ];
    const cases: { dg: Digests; base: (typeof bases)[number]; byte: number; bit: number }[] = [];
    for (const dg of DIGEST_MODES)
      for (const base of bases)
        for (let byte = 0; byte < 8; byte++)
          for (let bit = 0; bit < 8; bit++) cases.push({ dg, base, byte, bit });
    const verdicts = new Map<string, number>();
    await pool(cases, 6, async ({ dg, base, byte, bit }) => {
      const pdu = capsule(base.sqe, base.data, dg);
      pdu[byte]! ^= 1 << bit;
      const want = flipVerdict(pdu, dg, base.data?.length ?? 0);
      const what = `${base.name} dg ${+dg.hdgst}${+dg.ddgst} byte ${byte} bit ${bit}: want ${JSON.stringify(want)}`;
      verdicts.set(want.kind, (verdicts.get(want.kind) ?? 0) + 1);
      const h = await RawHost.connect(exp.port);
      try {
        await h.ic(dg);
        h.received.length = 0; // judge only what answers the damaged capsule
        h.send(pdu);
        if (want.kind === 'term') {
          const o = await h.settle(SETTLE_MS);
          expect(o.closed, what).toBe(true);
          expect(o.pdus.map(describePdu), what).toEqual([
            `TermReq fes ${want.fes} fei ${want.fei ?? o.term?.fei}`,
          ]);
        } else if (want.kind === 'resp') {
          const c = cqeOf(await h.next(SETTLE_MS).catch(() => undefined));
          expect(c.cid, what).toBe(7);
          expect(c.status, what).toBe(want.status ?? base.ok);
          expectSane(await h.settle(SETTLE_MS, true), what);
        } else {
          // Waiting for the rest of the PDU it announced: our FIN must close it, silently.
          const o = await h.settle(SETTLE_MS, true);
          expect(o, what).toMatchObject({ closed: true, pdus: [], parseError: null });
        }
      } finally {
        h.close();
      }
    });
    // The model exercised every kind of verdict.
    expect([...verdicts.keys()].sort()).toEqual(['incomplete', 'resp', 'term']);
  }, 60_000);

  it('a header digest mismatch ends the connection with FES 3; a data digest mismatch is a retryable status', async () => {
    const dg = { hdgst: true, ddgst: true };
    const h = await raw();
    await h.ic(dg);
    const pdu = capsule(sqe(IO.FLUSH, 1), null, dg);
    pdu[72]! ^= 0xff; // the HDGST itself
    h.send(pdu);
    await expectTerm(h, Fes.HEADER_DIGEST_ERROR);

    // Header and HDGST fine, DDGST wrong: Transient Transport Error (no DNR: the host
    // may retry), and the connection goes on.
    const d = await raw();
    await d.ic(dg);
    const cd = connectData({ subnqn: NQN, hostnqn: RAW_HOST });
    const bad = capsule(connectSqe(3, 31, 0, 0), cd, dg);
    bad[bad.length - 1]! ^= 0x01;
    d.send(bad);
    expect(await d.nextCqe()).toMatchObject({ cid: 3, status: SC.TRANSIENT_TR_ERR });
    d.command(connectSqe(4, 31, 0, 0), cd);
    expect(await d.nextCqe()).toMatchObject({ cid: 4, status: SC.SUCCESS });
  });
});

/** Model of the receive checks of facts §1 for a damaged CapsuleCmd header (one bit). */
type Verdict =
  | { kind: 'term'; fes: number; fei?: number }
  | { kind: 'resp'; status?: number }
  | { kind: 'incomplete' };

function flipVerdict(pdu: Buffer, dg: Digests, dataLen: number): Verdict {
  const term = (fes: number, fei?: number): Verdict => ({ kind: 'term', fes, fei });
  const [type, flags, hlen, pdo] = [pdu[0]!, pdu[1]!, pdu[2]!, pdu[3]!];
  const plen = pdu.readUInt32LE(4);
  // What a controller may receive: hlen, header digest allowed, data allowed.
  const rules: Record<number, [number, boolean, boolean]> = {
    [PduType.ICReq]: [128, false, false],
    [PduType.H2CTermReq]: [24, false, false],
    [PduType.CapsuleCmd]: [72, true, true],
    [PduType.H2CData]: [24, true, true],
  };
  const rule = rules[type];
  if (!rule) return term(Fes.INVALID_HEADER_FIELD, 0);
  if (type === PduType.ICReq) return term(Fes.PDU_SEQUENCE_ERROR);
  if (hlen !== rule[0]) return term(Fes.INVALID_HEADER_FIELD, 2);
  const hd = rule[1] && dg.hdgst ? 4 : 0;
  const dd = rule[2] && dg.ddgst && pdo !== 0 ? 4 : 0;
  if ((flags & 3) !== ((hd ? PduFlag.HDGST : 0) | (dd ? PduFlag.DDGST : 0))) {
    return term(Fes.INVALID_HEADER_FIELD, 1);
  }
  if (hd) return term(Fes.HEADER_DIGEST_ERROR); // the flipped bit is under the digest
  const head = hlen;
  if (pdo === 0) return plen === head ? { kind: 'resp' } : term(Fes.INVALID_HEADER_FIELD, 4);
  if (pdo < head) return term(Fes.INVALID_HEADER_FIELD, 3);
  if (plen < pdo + dd) return term(Fes.INVALID_HEADER_FIELD, 4);
  // In-capsule data is bounded by IOCCSZ, an H2CData PDU's by MAXH2CDATA.
  const max = type === PduType.CapsuleCmd ? IN_CAPSULE_DATA_SIZE : MAXH2CDATA;
  if (plen - pdo - dd > max) return term(Fes.DATA_LIMIT_EXCEEDED);
  if (plen > pdu.length) return { kind: 'incomplete' };
  if (pdo === head && plen - pdo - dd === dataLen) return { kind: 'resp' }; // only a flag moved
  // The data section moved: its digest no longer matches, or its length is not the SGL's.
  return { kind: 'resp', status: dd ? SC.TRANSIENT_TR_ERR : SC.SGL_INVALID_DATA_LEN | DNR };
}

describe('H2CData against the R2T it answers', () => {
  const none = DIGEST_MODES[0]!;
  let nextSlba = RAW_AREA;

  /** A 16-block write via R2T on a fresh I/O queue; resolves with the queue and the R2T. */
  async function r2tWrite(dg: Digests = none) {
    const h = await rawIoQueue(dg);
    const slba = nextSlba;
    nextSlba += 16;
    h.command(rwSqe({ opcode: IO.WRITE, cid: 9, nsid: 1, slba, nlb: 16 }));
    const r2t = await h.nextOf(PduType.R2T);
    expect(r2t).toMatchObject({ cccid: 9, r2to: 0, r2tl: 8192 });
    return { h, r2t, slba };
  }

  function h2c(
    f: { cccid: number; ttag: number; datao: number; last: boolean },
    data: Buffer,
    dg: Digests = none,
  ): Buffer {
    return Buffer.concat(encodeH2CData(f, data, dg));
  }

  it('a write split over two H2CData PDUs lands, and reads back', async () => {
    for (const dg of DIGEST_MODES) {
      const { h, r2t, slba } = await r2tWrite(dg);
      const data = randomBytes(8192);
      h.h2c(9, r2t.ttag, 0, data.subarray(0, 4096), false);
      h.h2c(9, r2t.ttag, 4096, data.subarray(4096), true);
      expect(await h.nextCqe()).toMatchObject({ cid: 9, status: 0 });
      h.command(rwSqe({ opcode: IO.READ, cid: 10, nsid: 1, slba, nlb: 16 }));
      const d = await h.nextOf(PduType.C2HData);
      expect(d.ddgstError).toBe(false);
      expect(Buffer.from(d.data).equals(data)).toBe(true);
      expect(await h.nextCqe()).toMatchObject({ cid: 10, status: 0 });
    }
  });

  it('wrong TTAG, CCCID, DATAO, DATAL or LAST_PDU end the connection with the exact TermReq', async () => {
    const d = Buffer.alloc(8192, 0xa5);
    const cases: [string, (ttag: number) => Buffer, number, number?][] = [
      ['unknown TTAG', (t) => h2c({ cccid: 9, ttag: t + 1, datao: 0, last: true }, d), 1, 10],
      ['wrong CCCID', (t) => h2c({ cccid: 8, ttag: t, datao: 0, last: true }, d), 1, 8],
      ['DATAO 512', (t) => h2c({ cccid: 9, ttag: t, datao: 512, last: true }, d.subarray(512)), 4],
      [
        'DATAO+DATAL beyond the R2T',
        (t) => h2c({ cccid: 9, ttag: t, datao: 0, last: true }, Buffer.alloc(8704)),
        4,
      ],
      [
        'DATAL field not the data length',
        (t) => {
          const b = h2c({ cccid: 9, ttag: t, datao: 0, last: true }, d);
          b.writeUInt32LE(4096, 16);
          return b;
        },
        1,
        16,
      ],
      [
        'DATAL field 0',
        (t) => {
          const b = h2c({ cccid: 9, ttag: t, datao: 0, last: true }, d);
          b.writeUInt32LE(0, 16);
          return b;
        },
        1,
        16,
      ],
      [
        'LAST_PDU missing at the end',
        (t) => h2c({ cccid: 9, ttag: t, datao: 0, last: false }, d),
        1,
        1,
      ],
      [
        'LAST_PDU before the end',
        (t) => h2c({ cccid: 9, ttag: t, datao: 0, last: true }, d.subarray(0, 4096)),
        1,
        1,
      ],
      [
        'more data than MAXH2CDATA',
        (t) => h2c({ cccid: 9, ttag: t, datao: 0, last: true }, Buffer.alloc(MAXH2CDATA + 512)),
        Fes.DATA_LIMIT_EXCEEDED,
      ],
    ];
    for (const [what, build, fes, fei] of cases) {
      const { h, r2t } = await r2tWrite();
      h.send(build(r2t.ttag));
      await expectTerm(h, fes, fei).catch((e: Error) => {
        throw new Error(`${what}: ${e.message}`);
      });
    }
    // Unsolicited: no R2T outstanding on this connection at all.
    const h = await rawIoQueue();
    h.send(h2c({ cccid: 1, ttag: 1, datao: 0, last: true }, d));
    await expectTerm(h, Fes.INVALID_HEADER_FIELD, 10);
  });

  it('an H2CData header that fits no R2T gets its TermReq at once, before any of its data', async () => {
    // Before, the target took the data in first (up to MAXH2CDATA), and a peer that sent
    // the header alone held the connection until the memory guard's PEER_STALL_MS (60 s).
    const d = Buffer.alloc(8192, 0x5c);
    const cases: [string, (ttag: number) => Parameters<typeof h2c>[0], Buffer, number, number][] = [
      ['unknown TTAG', (t) => ({ cccid: 9, ttag: t + 1, datao: 0, last: true }), d, 1, 10],
      ['wrong CCCID', (t) => ({ cccid: 8, ttag: t, datao: 0, last: true }), d, 1, 8],
      ['DATAO 512', (t) => ({ cccid: 9, ttag: t, datao: 512, last: true }), d, 4, 0],
      [
        'beyond the R2T',
        (t) => ({ cccid: 9, ttag: t, datao: 0, last: true }),
        Buffer.alloc(MAXH2CDATA),
        4,
        0,
      ],
    ];
    for (const dg of DIGEST_MODES) {
      for (const [what, fields, data, fes, fei] of cases) {
        const { h, r2t, slba } = await r2tWrite(dg);
        const pdu = h2c(fields(r2t.ttag), data, dg);
        h.send(pdu.subarray(0, pdu[3])); // header and its digest, no data
        await expectTerm(h, fes, fei).catch((e: Error) => {
          throw new Error(`${what} dg ${+dg.hdgst}${+dg.ddgst}: ${e.message}`);
        });
        expect(h.received.at(-1)).toMatchObject({ header: pdu.subarray(0, 24) });
        // nothing of it reached the volume
        const back = await good.namespace(1).then((ns) => ns.read(slba, 16));
        expect(back.equals(Buffer.alloc(8192)), what).toBe(true);
      }
    }
  }, 60_000);

  it('a data digest error in H2CData fails that write (retryable) and the queue goes on', async () => {
    const dg = { hdgst: false, ddgst: true };
    const { h, r2t, slba } = await r2tWrite(dg);
    const pdu = h2c({ cccid: 9, ttag: r2t.ttag, datao: 0, last: true }, Buffer.alloc(8192, 1), dg);
    pdu[pdu.length - 1]! ^= 0x80;
    h.send(pdu);
    expect(await h.nextCqe()).toMatchObject({ cid: 9, status: SC.TRANSIENT_TR_ERR });
    h.command(rwSqe({ opcode: IO.READ, cid: 11, nsid: 1, slba, nlb: 16 }));
    expect((await h.nextOf(PduType.C2HData)).datal).toBe(8192);
    expect(await h.nextCqe()).toMatchObject({ cid: 11, status: 0 });
  });
});

describe('in-capsule data against IOCCSZ', () => {
  it('more in-capsule data than IOCCSZ announces: TermReq FES 5 once the header is in, nothing written; at the limit it lands', async () => {
    const slba = RAW_AREA + 24576;
    const inCapsule = (cid: number, len: number) =>
      rwSqe({ opcode: IO.WRITE, cid, nsid: 1, slba, nlb: len / BS, sgl: 0x01 });
    for (const dg of DIGEST_MODES) {
      const ok = await rawIoQueue(dg);
      const data = randomBytes(IN_CAPSULE_DATA_SIZE);
      ok.command(inCapsule(1, data.length), data);
      expect(await ok.nextCqe()).toMatchObject({ cid: 1, status: 0 });
      // 512 bytes over: the header (and its digest) alone gets the TermReq; before, the
      // target waited for the data, then answered SGL Offset Invalid and went on.
      const over = await rawIoQueue(dg);
      over.received.length = 0;
      const pdu = capsule(inCapsule(2, IN_CAPSULE_DATA_SIZE + BS), randomBytes(16896), dg);
      over.send(pdu.subarray(0, pdu[3]));
      await expectTerm(over, Fes.DATA_LIMIT_EXCEEDED, 0);
      const term = over.received.at(-1)!;
      expect(term.type === PduType.C2HTermReq && term.header.subarray(0, 72)).toEqual(
        pdu.subarray(0, 72),
      );
      // The most the parser frames (MAXH2CDATA, for H2CData), sent whole: the same.
      const whole = await rawIoQueue(dg);
      whole.send(capsule(inCapsule(3, MAXH2CDATA), Buffer.alloc(MAXH2CDATA, 0xee), dg));
      await expectTerm(whole, Fes.DATA_LIMIT_EXCEEDED, 0);
      // Neither wrote anything, and the queue beside them works on.
      ok.command(rwSqe({ opcode: IO.READ, cid: 4, nsid: 1, slba, nlb: data.length / BS }));
      expect(Buffer.from((await ok.nextOf(PduType.C2HData)).data).equals(data)).toBe(true);
      expect(await ok.nextCqe()).toMatchObject({ cid: 4, status: 0 });
    }
  }, 60_000);
});

describe('commands the target must refuse with a status', () => {
  it('out-of-range, unknown namespace, unknown opcode, SGL/NLB mismatch: exact status, queue stays up', async () => {
    const h = await rawIoQueue();
    const rd = (o: Partial<Parameters<typeof rwSqe>[0]>) =>
      rwSqe({ opcode: IO.READ, cid: 0, nsid: 1, slba: RAW_AREA, nlb: 8, ...o });
    const cases: [string, Buffer, Buffer | null, number][] = [
      ['read at NSZE', rd({ slba: NSZE, nlb: 1 }), null, SC.LBA_RANGE | DNR],
      ['read across the end', rd({ slba: NSZE - 1, nlb: 2 }), null, SC.LBA_RANGE | DNR],
      ['read at 2^40', rd({ slba: 2 ** 40 }), null, SC.LBA_RANGE | DNR],
      [
        'write across the end (in-capsule)',
        rwSqe({ opcode: IO.WRITE, cid: 0, nsid: 1, slba: NSZE - 4, nlb: 8, sgl: 0x01 }),
        Buffer.alloc(4096),
        SC.LBA_RANGE | DNR,
      ],
      [
        'write zeroes across the end',
        encodeSqe({ opcode: IO.WRITE_ZEROES, nsid: 1, cdw10: NSZE - 4, cdw12: 7 }),
        null,
        SC.LBA_RANGE | DNR,
      ],
      ['read nsid 2', rd({ nsid: 2 }), null, SC.INVALID_NS | DNR],
      ['read nsid 0', rd({ nsid: 0 }), null, SC.INVALID_NS | DNR],
      ['read nsid 0xFFFFFFFF', rd({ nsid: 0xffffffff }), null, SC.INVALID_NS | DNR],
      ['flush nsid 9', encodeSqe({ opcode: IO.FLUSH, nsid: 9 }), null, SC.INVALID_NS | DNR],
      ['opcode 0x03', rd({ opcode: 0x03 }), null, SC.INVALID_OPCODE | DNR],
      ['opcode 0x7e', rd({ opcode: 0x7e }), null, SC.INVALID_OPCODE | DNR],
      ['opcode 0xff', rd({ opcode: 0xff }), null, SC.INVALID_OPCODE | DNR],
      ['admin Identify on an I/O queue', rd({ opcode: 0x06 }), null, SC.INVALID_OPCODE | DNR],
      ['read SGL shorter than NLB', rd({ sglLength: 2048 }), null, SC.SGL_INVALID_DATA_LEN | DNR],
      [
        'read SGL longer than NLB',
        rd({ nlb: 1, sglLength: 4096 }),
        null,
        SC.SGL_INVALID_DATA_LEN | DNR,
      ],
      ['read SGL length 0', rd({ sglLength: 0 }), null, SC.SGL_INVALID_DATA_LEN | DNR],
      [
        'write in-capsule, SGL not NLB',
        rwSqe({
          opcode: IO.WRITE,
          cid: 0,
          nsid: 1,
          slba: RAW_AREA,
          nlb: 1,
          sgl: 0x01,
          sglLength: 4096,
        }),
        Buffer.alloc(4096),
        SC.SGL_INVALID_DATA_LEN | DNR,
      ],
      [
        'flush with a data SGL',
        encodeSqe({ opcode: IO.FLUSH, nsid: 1, sglLength: 512 }),
        null,
        SC.SGL_INVALID_DATA_LEN | DNR,
      ],
      ['read beyond MDTS', rd({ nlb: 4096 }), null, SC.INVALID_FIELD | DNR],
      [
        'fused bits',
        encodeSqe({ opcode: IO.FLUSH, nsid: 1, flags: 0x41 }),
        null,
        SC.INVALID_FIELD | DNR,
      ],
      [
        'PSDT 00 (PRPs)',
        encodeSqe({ opcode: IO.FLUSH, nsid: 1, flags: 0 }),
        null,
        SC.INVALID_FIELD | DNR,
      ],
      ['SGL type 0x20', rd({ sgl: 0x20 }), null, SC.SGL_INVALID_TYPE | DNR],
      [
        'read with in-capsule data',
        rd({ nlb: 1, sgl: 0x01 }),
        Buffer.alloc(512),
        SC.INVALID_FIELD | DNR,
      ],
      // In-capsule data goes host to controller only; nvmet_tcp_map_data refuses the
      // offset descriptor of any other command with Invalid Field, data or none with it.
      [
        'read with an in-capsule SGL and no data',
        rd({ nlb: 1, sgl: 0x01 }),
        null,
        SC.INVALID_FIELD | DNR,
      ],
      [
        'flush with in-capsule data',
        encodeSqe({ opcode: IO.FLUSH, nsid: 1, sglType: 0x01, sglLength: 512 }),
        Buffer.alloc(512),
        SC.INVALID_FIELD | DNR,
      ],
      [
        'write zeroes with in-capsule data',
        encodeSqe({
          opcode: IO.WRITE_ZEROES,
          nsid: 1,
          cdw10: RAW_AREA,
          sglType: 0x01,
          sglLength: 512,
        }),
        Buffer.alloc(512),
        SC.INVALID_FIELD | DNR,
      ],
      [
        'write zeroes with a data SGL',
        encodeSqe({ opcode: IO.WRITE_ZEROES, nsid: 1, cdw10: RAW_AREA, sglLength: 512 }),
        null,
        SC.SGL_INVALID_DATA_LEN | DNR,
      ],
      // An offset descriptor of length 0 names no data: the read's length check answers.
      [
        'read with an empty in-capsule SGL',
        rd({ nlb: 1, sgl: 0x01, sglLength: 0 }),
        null,
        SC.SGL_INVALID_DATA_LEN | DNR,
      ],
      [
        'a second Connect on the connected I/O queue',
        connectSqe(0, 31, 1, 0),
        connectData({ subnqn: NQN, hostnqn: RAW_HOST, cntlid: 1 }),
        SC.CMD_SEQ_ERROR | DNR,
      ],
    ];
    let cid = 100;
    for (const [what, s, data, status] of cases) {
      s.writeUInt16LE(++cid, 2);
      h.command(s, data);
      const c = await h.nextCqe();
      expect({ what, cid: c.cid, status: c.status }).toEqual({ what, cid, status });
    }
    // The queue still serves a good command.
    h.command(rwSqe({ opcode: IO.READ, cid: 7, nsid: 1, slba: NSZE - 8, nlb: 8 }));
    expect((await h.nextOf(PduType.C2HData)).datal).toBe(4096);
    expect(await h.nextCqe()).toMatchObject({ cid: 7, status: 0 });
    expect(h.isClosed).toBe(false);
  });

  it('random I/O commands with one defect each get exactly that status (property)', async () => {
    const h = await rawIoQueue();
    const IO_OPS = new Set<number>([
      IO.FLUSH,
      IO.WRITE,
      IO.READ,
      IO.COMPARE,
      IO.WRITE_ZEROES,
      IO.DSM,
    ]);
    const MAX_NLB = (1 << 20) / BS; // MDTS 1 MiB
    let cid = 0;
    const cmd = fc.oneof(
      fc.record({
        defect: fc.constant('none' as const),
        nlb: fc.integer({ min: 1, max: MAX_NLB }),
        at: fc.double({ min: 0, max: 1, noNaN: true }),
      }),
      fc.record({
        defect: fc.constant('lba' as const),
        nlb: fc.integer({ min: 1, max: MAX_NLB }),
        past: fc.oneof(fc.integer({ min: 1, max: MAX_NLB }), fc.integer({ min: 1, max: 2 ** 40 })),
      }),
      fc.record({
        defect: fc.constant('nsid' as const),
        nsid: fc.oneof(fc.constant(0), fc.integer({ min: 2, max: 0xffffffff })),
      }),
      fc.record({
        defect: fc.constant('opcode' as const),
        opcode: fc.integer({ min: 0, max: 255 }).filter((o) => !IO_OPS.has(o) && o !== 0x7f),
      }),
      fc.record({
        defect: fc.constant('sgl' as const),
        nlb: fc.integer({ min: 1, max: MAX_NLB }),
        delta: fc.integer({ min: -(1 << 20), max: 1 << 20 }).filter((d) => d !== 0),
      }),
      fc.record({
        defect: fc.constant('mdts' as const),
        nlb: fc.integer({ min: MAX_NLB + 1, max: 65536 }),
      }),
    );
    await fc.assert(
      fc.asyncProperty(cmd, fc.constantFrom(IO.READ, IO.WRITE, IO.COMPARE), async (c, op) => {
        cid = (cid + 1) & 0xffff;
        let s: Buffer;
        let status: number;
        let readLen = 0;
        switch (c.defect) {
          case 'none': {
            // Reads only: a good write would need its data sent.
            const slba = Math.floor(c.at * (NSZE - c.nlb));
            s = rwSqe({ opcode: IO.READ, cid, nsid: 1, slba, nlb: c.nlb });
            status = SC.SUCCESS;
            readLen = c.nlb * BS;
            break;
          }
          case 'lba':
            s = rwSqe({ opcode: op, cid, nsid: 1, slba: NSZE - c.nlb + c.past, nlb: c.nlb });
            status = SC.LBA_RANGE | DNR;
            break;
          case 'nsid':
            s = rwSqe({ opcode: op, cid, nsid: c.nsid, slba: 0, nlb: 8 });
            status = SC.INVALID_NS | DNR;
            break;
          case 'opcode':
            s = rwSqe({ opcode: c.opcode, cid, nsid: 1, slba: 0, nlb: 8 });
            status = SC.INVALID_OPCODE | DNR;
            break;
          case 'sgl': {
            const len = Math.max(0, c.nlb * BS + c.delta);
            const sglLength = len === c.nlb * BS ? len + 512 : len;
            s = rwSqe({ opcode: op, cid, nsid: 1, slba: 0, nlb: c.nlb, sglLength });
            status = SC.SGL_INVALID_DATA_LEN | DNR;
            break;
          }
          case 'mdts':
            s = rwSqe({ opcode: op, cid, nsid: 1, slba: 0, nlb: c.nlb });
            status = SC.INVALID_FIELD | DNR;
            break;
        }
        h.command(s);
        let got = 0;
        for (;;) {
          const p = await h.next(SETTLE_MS);
          if (p.type === PduType.C2HData) {
            expect(p.cccid).toBe(cid);
            expect(p.datao).toBe(got);
            got += p.datal;
            continue;
          }
          const cqe = cqeOf(p);
          expect({ defect: c.defect, cid: cqe.cid, status: cqe.status }).toEqual({
            defect: c.defect,
            cid,
            status,
          });
          break;
        }
        expect(got).toBe(readLen);
      }),
      { seed: SEED + 2, numRuns: 120, endOnFailure: true },
    );
    expect(h.isClosed).toBe(false);
  });
});

describe('admin commands', () => {
  it('random admin commands on an enabled controller: one completion each, data as long as asked (property)', async () => {
    // Every admin opcode but Async Event Request (held until an event, by design) and
    // Set Features KATO (a tiny KATO would rightly end this controller).
    const opcode = fc.oneof(
      fc.constantFrom(0x02, 0x06, 0x08, 0x09, 0x0a, 0x18, 0x00, 0x01, 0x04, 0x05, 0x0d, 0x10),
      fc.integer({ min: 0, max: 255 }).filter((o) => o !== 0x0c && o !== 0x7f),
    );
    const command = fc.record({
      opcode,
      nsid: fc.oneof(fc.constantFrom(0, 1, 2, 0xffffffff), fc.nat()),
      cdw10: fc.oneof(fc.integer({ min: 0, max: 0x1f }), fc.nat({ max: 0xffff }), fc.nat()),
      cdw11: fc.oneof(fc.constant(0), fc.nat({ max: 0xffff }), fc.nat()),
      cdw12: fc.oneof(fc.constant(0), fc.nat()),
      cdw14: fc.oneof(fc.constant(0), fc.nat()),
      sglLength: fc.oneof(fc.constantFrom(0, 16, 512, 4096, 8192), fc.nat({ max: 1 << 21 })),
    });
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 10 }), async (cmds) => {
        const h = await raw();
        await adminConnect(h, { subnqn: NQN, hostnqn: RAW_HOST });
        await enableController(h);
        h.received.length = 0;
        for (const [i, c] of cmds.entries()) {
          const cid = 0x100 + i;
          if (c.opcode === 0x09 && (c.cdw10 & 0xff) === 0x0f) c.cdw10 ^= 0x0f; // no KATO
          const s = encodeSqe({ ...c, cid });
          h.command(s);
          let got = 0;
          for (;;) {
            const p = await h.next(SETTLE_MS);
            const what = `${JSON.stringify(c)} -> ${describePdu(p)}`;
            if (p.type === PduType.C2HData) {
              expect(p.cccid, what).toBe(cid);
              got += p.datal;
              continue;
            }
            if (p.type === PduType.R2T) {
              expect(p.cccid, what).toBe(cid);
              h.h2c(cid, p.ttag, p.r2to, Buffer.alloc(p.r2tl), true);
              continue;
            }
            const cqe = cqeOf(p);
            expect(cqe.cid, what).toBe(cid);
            if (cqe.status === 0 && got > 0) expect(got, what).toBe(c.sglLength);
            if (cqe.status !== 0) expect(got, what).toBe(0);
            break;
          }
        }
        expect(h.isClosed).toBe(false);
        h.close();
      }),
      { seed: SEED + 5, numRuns: 40, endOnFailure: true },
    );
  }, 60_000);
});

describe('Connect', () => {
  it('refuses commands before Connect, bad Connects and repeated Connects with the exact status', async () => {
    const h = await raw();
    await h.ic();
    h.command(rwSqe({ opcode: IO.READ, cid: 1, nsid: 1, slba: 0, nlb: 1 }));
    expect(await h.nextCqe()).toMatchObject({ cid: 1, status: SC.INVALID_OPCODE | DNR });
    h.command(encodeSqe({ opcode: 0x06, cid: 2, cdw10: 1, sglLength: 4096 })); // Identify
    expect(await h.nextCqe()).toMatchObject({ cid: 2, status: SC.INVALID_OPCODE | DNR });
    h.command(encodeSqe({ opcode: 0x7f, fctype: 0x04, cid: 3 })); // Property Get
    expect(await h.nextCqe()).toMatchObject({ cid: 3, status: SC.INVALID_OPCODE | DNR });

    const cd = (o: { subnqn?: string; cntlid?: number } = {}) =>
      connectData({ subnqn: NQN, hostnqn: RAW_HOST, ...o });
    const bad: [string, Buffer, Buffer, number, number][] = [
      [
        'unknown subsystem',
        connectSqe(4, 31, 0),
        cd({ subnqn: 'nqn.2026-01.io.branchsan.test:nope' }),
        SC.CONNECT_INVALID_PARAM | DNR,
        (1 << 16) | 256,
      ],
      [
        'admin Connect with a CNTLID',
        connectSqe(5, 31, 0),
        cd({ cntlid: 1 }),
        SC.CONNECT_INVALID_PARAM | DNR,
        (1 << 16) | 16,
      ],
      ['SQSIZE 0', connectSqe(6, 0, 0), cd(), SC.CONNECT_INVALID_PARAM | DNR, 44],
      [
        'QID beyond the queues a controller may have',
        connectSqe(6, 31, 0xffff),
        cd({ cntlid: 1 }),
        SC.CONNECT_INVALID_PARAM | DNR,
        42,
      ],
      [
        'I/O queue of an unknown controller',
        connectSqe(7, 31, 1),
        cd({ cntlid: 0xffef }),
        SC.CONNECT_INVALID_PARAM | DNR,
        (1 << 16) | 16,
      ],
    ];
    for (const [what, s, data, status, dw0] of bad) {
      h.command(s, data);
      const c = await h.nextCqe();
      expect({ what, status: c.status, dw0: c.dw0 }).toEqual({ what, status, dw0 });
    }
    const recfmt = connectSqe(8, 31, 0);
    recfmt.writeUInt16LE(1, 40);
    h.command(recfmt, cd());
    expect(await h.nextCqe()).toMatchObject({ cid: 8, status: SC.CONNECT_FORMAT | DNR });
    h.command(connectSqe(9, 31, 0), Buffer.alloc(512)); // SGL says 1024, 512 sent
    expect(await h.nextCqe()).toMatchObject({ cid: 9, status: SC.SGL_INVALID_DATA_LEN | DNR });

    // The queue is still unconnected and usable: a good Connect succeeds ...
    h.command(connectSqe(10, 31, 0), cd());
    const ok = await h.nextCqe();
    expect(ok).toMatchObject({ cid: 10, status: 0 });
    const cntlid = ok.dw0 & 0xffff;
    // ... and a second one on the now-connected admin queue is a sequence error.
    h.command(connectSqe(11, 31, 0), cd());
    expect(await h.nextCqe()).toMatchObject({ cid: 11, status: SC.CMD_SEQ_ERROR | DNR });
    // Admin commands before CC.EN = 1, and I/O queues before it, too.
    h.command(encodeSqe({ opcode: 0x06, cid: 12, cdw10: 1, sglLength: 4096 }));
    expect(await h.nextCqe()).toMatchObject({ cid: 12, status: SC.CMD_SEQ_ERROR | DNR });
    const early = await raw();
    const e = await ioConnect(early, { subnqn: NQN, hostnqn: RAW_HOST, cntlid, qid: 1 });
    expect(e.status).toBe(SC.CMD_SEQ_ERROR | DNR);
    await enableController(h);
    // I/O queue 1 once, then again from another connection: that QID exists already.
    const q1 = await raw();
    expect((await ioConnect(q1, { subnqn: NQN, hostnqn: RAW_HOST, cntlid, qid: 1 })).status).toBe(
      0,
    );
    const q1b = await raw();
    const busy = await ioConnect(q1b, { subnqn: NQN, hostnqn: RAW_HOST, cntlid, qid: 1 });
    expect(busy.status).toBe(SC.CMD_SEQ_ERROR | DNR); // that QID exists already
    // Another host may not attach to this controller.
    const thief = await raw();
    const other = 'nqn.2014-08.org.nvmexpress:uuid:0000cccc-0000-4000-8000-000000000000';
    const t = await ioConnect(thief, { subnqn: NQN, hostnqn: other, cntlid, qid: 2 });
    expect(t).toMatchObject({ status: SC.CONNECT_INVALID_PARAM | DNR, dw0: (1 << 16) | 16 });
  });
});

describe('mutated sessions', () => {
  /** A valid session: IC, admin Connect, CC.EN, a CSTS read, an Identify. */
  function session(dg: Digests): Buffer {
    return Buffer.concat([
      icReq({}, dg),
      capsule(connectSqe(1, 31, 0, 0), connectData({ subnqn: NQN, hostnqn: RAW_HOST }), dg),
      capsule(
        encodeSqe({ opcode: 0x7f, fctype: 0x00, cid: 2, cdw11: 0x14, cdw12: 0x460001 }),
        null,
        dg,
      ),
      capsule(encodeSqe({ opcode: 0x7f, fctype: 0x04, cid: 3, cdw11: 0x1c }), null, dg),
      capsule(encodeSqe({ opcode: 0x06, cid: 4, nsid: 1, cdw10: 0, sglLength: 4096 }), null, dg),
      capsule(encodeSqe({ opcode: 0x06, cid: 5, cdw10: 1, sglLength: 4096 }), null, dg),
    ]);
  }

  const mutation = fc.oneof(
    fc.record({
      op: fc.constant('flip' as const),
      at: fc.nat(),
      bit: fc.integer({ min: 0, max: 7 }),
    }),
    fc.record({
      op: fc.constant('set' as const),
      at: fc.nat(),
      v: fc.integer({ min: 0, max: 255 }),
    }),
    fc.record({
      op: fc.constant('cut' as const),
      at: fc.nat(),
      n: fc.integer({ min: 1, max: 80 }),
    }),
    fc.record({
      op: fc.constant('insert' as const),
      at: fc.nat(),
      bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }),
    }),
    fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }),
  );

  type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

  function mutate(b: Buffer, muts: Mutation[]): Buffer {
    for (const m of muts) {
      if (b.length === 0) break;
      const at = m.at % b.length;
      if (m.op === 'flip') b[at]! ^= 1 << m.bit;
      else if (m.op === 'set') b[at] = m.v;
      else if (m.op === 'cut') b = Buffer.concat([b.subarray(0, at), b.subarray(at + m.n)]);
      else if (m.op === 'insert') b = Buffer.concat([b.subarray(0, at), m.bytes, b.subarray(at)]);
      else b = b.subarray(0, at);
    }
    return b;
  }

  it('any mutation of a valid session: valid PDUs back, a TermReq last, closed, never hung (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...DIGEST_MODES),
        fc.array(mutation, { minLength: 1, maxLength: 4 }),
        fc.boolean(),
        async (dg, muts, ourFin) => {
          const h = await raw();
          h.send(mutate(Buffer.from(session(dg)), muts));
          // Either we close at once (the target may be waiting for bytes), or we see
          // the target answer what it can and keep the connection open for more.
          const o = ourFin ? await h.settle(SETTLE_MS, true) : await sentinel(h, dg);
          h.close();
          expectSane(o, `${JSON.stringify(dg)} ${JSON.stringify(muts)}`);
        },
      ),
      { seed: SEED + 3, numRuns: 60, endOnFailure: true },
    );
  }, 60_000);
});

describe('mutated I/O on a connected queue', () => {
  /**
   * A valid stream of I/O capsules for a fresh I/O queue: an in-capsule write, a write
   * via R2T, a read, a flush, a write zeroes. `heads` lists the byte positions of their
   * headers (where mutations go), minus the LBA fields (SQE bytes 40..51): a damaged SLBA
   * could aim a write at the good host's blocks, which a second host is entitled to do
   * and which would prove nothing here.
   */
  function ioStream(slba: number, dg: Digests) {
    const parts: Buffer[] = [];
    const heads: number[] = [];
    let len = 0;
    const put = (b: Buffer) => {
      for (let i = 0; i < 72 + (dg.hdgst ? 4 : 0); i++) if (i < 48 || i >= 60) heads.push(len + i);
      parts.push(b);
      len += b.length;
    };
    const ff = Buffer.alloc(8192, 0xff); // DSM ranges read from it lie beyond the namespace
    const w = rwSqe({ opcode: IO.WRITE, cid: 1, nsid: 1, slba, nlb: 8, sgl: 0x01 });
    put(capsule(w, ff.subarray(0, 4096), dg));
    put(capsule(rwSqe({ opcode: IO.WRITE, cid: 2, nsid: 1, slba: slba + 8, nlb: 16 }), null, dg));
    const h2cAt = len;
    put(capsule(rwSqe({ opcode: IO.READ, cid: 3, nsid: 1, slba, nlb: 16 }), null, dg));
    put(capsule(encodeSqe({ opcode: IO.FLUSH, cid: 4, nsid: 1 }), null, dg));
    const wz = encodeSqe({ opcode: IO.WRITE_ZEROES, cid: 5, nsid: 1, cdw10: slba + 24, cdw12: 7 });
    put(capsule(wz, null, dg));
    return { bytes: Buffer.concat(parts), heads, h2cAt, data: ff };
  }

  const mutation = fc.record({
    /** Into a capsule header, or into the H2CData header. */
    h2c: fc.boolean(),
    at: fc.nat(),
    bit: fc.integer({ min: 0, max: 7 }),
    set: fc.option(fc.nat(255)),
  });
  type Mutation = typeof mutation extends fc.Arbitrary<infer T> ? T : never;

  function apply(b: Buffer, at: number, m: Mutation): void {
    if (m.set === null) b[at]! ^= 1 << m.bit;
    else b[at] = m.set;
  }

  it('damaged capsule and H2CData headers: sane answers, and only that connection closes (property)', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...DIGEST_MODES),
        fc.array(mutation, { minLength: 1, maxLength: 3 }),
        async (dg, muts) => {
          const slba = RAW_AREA + 4096 + (run++ % 256) * 64;
          const admin = await raw();
          const c = await adminConnect(admin, { subnqn: NQN, hostnqn: RAW_HOST, dg });
          await enableController(admin);
          const io = await raw();
          await ioConnect(io, { subnqn: NQN, hostnqn: RAW_HOST, cntlid: c.dw0, qid: 1, dg });
          io.received.length = 0;
          const { bytes, heads, h2cAt, data } = ioStream(slba, dg);
          for (const m of muts) if (!m.h2c) apply(bytes, heads[m.at % heads.length]!, m);
          // Up to the R2T write; then its data once its R2T (if any) came, then the rest.
          io.send(bytes.subarray(0, h2cAt));
          const r2t = await waitFor(io, (p) => p.type === PduType.R2T || isResp(p, 2), 5000);
          if (r2t?.type === PduType.R2T) {
            const n = Math.min(r2t.r2tl, data.length);
            const f = { cccid: r2t.cccid, ttag: r2t.ttag, datao: r2t.r2to, last: true };
            const pdu = Buffer.concat(encodeH2CData(f, data.subarray(0, n), dg));
            for (const m of muts) if (m.h2c) apply(pdu, m.at % (24 + (dg.hdgst ? 4 : 0)), m);
            io.send(pdu);
          }
          io.send(bytes.subarray(h2cAt));
          const o = await sentinel(io, dg);
          const what = `${JSON.stringify(dg)} ${JSON.stringify(muts)}`;
          expectSane(o, what);
          // The admin queue of the same controller is untouched.
          admin.command(encodeSqe({ opcode: 0x7f, fctype: 0x04, cid: 9, cdw11: 0x1c }));
          expect(await admin.nextCqe(), what).toMatchObject({ cid: 9, status: 0, dw0: 1 });
          admin.close();
          io.close();
        },
      ),
      { seed: SEED + 4, numRuns: 60, endOnFailure: true },
    );
  }, 60_000);

  it('more commands in flight than the queue holds: TermReq FES 5 and close', async () => {
    // I/O queue 1 has 32 entries (Connect SQSIZE 31). Writes whose data is never sent
    // stay in flight (waiting for their R2T data), so the 33rd overflows, deterministically.
    const h = await rawIoQueue();
    h.received.length = 0;
    for (let cid = 1; cid <= 33; cid++) {
      h.command(rwSqe({ opcode: IO.WRITE, cid, nsid: 1, slba: cid * 8, nlb: 8 }), null);
    }
    const o = await h.settle(SETTLE_MS);
    expect(o.closed).toBe(true);
    const pdus = o.pdus.map(describePdu);
    expect(pdus.at(-1)).toBe(`TermReq fes ${Fes.DATA_LIMIT_EXCEEDED} fei 0`);
    // the first writes' R2Ts (16 may hold one at once), nothing else
    expect(pdus.slice(0, -1)).toHaveLength(16);
    for (const p of pdus.slice(0, -1))
      expect(p).toMatch(/^R2T cccid \d+ ttag \d+ r2to 0 r2tl 4096$/);
  });

  it('a host that stops reading its socket does not hold up the others', async () => {
    const hog = await rawIoQueue();
    hog.socket.pause();
    for (let cid = 1; cid <= 31; cid++) {
      hog.command(rwSqe({ opcode: IO.READ, cid, nsid: 1, slba: RAW_AREA, nlb: 2048 }));
    }
    const before = workload.ops;
    const deadline = Date.now() + 20_000;
    while (workload.ops < before + 20 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(workload.ops).toBeGreaterThanOrEqual(before + 20);
    expect(workload.errors).toEqual([]);
    hog.close();
  });
});

const isResp = (p: C2HPdu, cid: number): boolean =>
  p.type === PduType.CapsuleResp && readCqe(p.cqe).cid === cid;

/**
 * End a random case without guessing timeouts: send one more command (an unknown opcode,
 * CID 0xBEEF) and wait until it is answered or the target closed; then close our side and
 * collect the outcome. A target that waits for bytes the damage announced swallows the
 * sentinel; our FIN then ends it.
 */
async function sentinel(h: RawHost, dg: Digests): Promise<Outcome> {
  if (!h.isClosed) h.send(capsule(encodeSqe({ opcode: 0x7e, cid: 0xbeef }), null, dg));
  await waitFor(h, (p) => isResp(p, 0xbeef), 500);
  return h.settle(SETTLE_MS, true);
}

/** The first PDU received that matches, waiting at most ms (or until closed), or null. */
async function waitFor(h: RawHost, match: (p: C2HPdu) => boolean, ms: number) {
  const end = Date.now() + ms;
  for (;;) {
    const p = h.received.find(match);
    if (p || h.isClosed || Date.now() > end) return p ?? null;
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('afterwards', () => {
  it('the process is alive, the good host saw no error, its data verifies, a fresh connection works', async () => {
    expect(exp.alive()).toBe(true);
    await workload.stop();
    expect(good.state).toBe('live');
    const slots = await workload.verifyAll();
    expect(workload.errors).toEqual([]);
    expect(slots).toBeGreaterThan(0);
    expect(workload.ops).toBeGreaterThan(0);
    await good.close();
    // No bug was caught by a safety net (an exception turned into a closed connection).
    const internal = exp
      .stderr()
      .split('\n')
      .filter((l) => /"level":"error"|exception while parsing|threw/.test(l));
    expect(internal).toEqual([]);

    const fresh = await NvmeController.connect({
      host: '127.0.0.1',
      port: exp.port,
      subnqn: NQN,
      ioQueues: 2,
    });
    try {
      const ns = await fresh.namespace(1);
      const data = randomBytes(64 * 1024);
      await ns.write(NSZE - 128, data, { fua: true });
      expect((await ns.read(NSZE - 128, 128)).equals(data)).toBe(true);
    } finally {
      await fresh.close();
    }
    expect(exp.alive()).toBe(true);
  });
});
