import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { crc32c } from '../../../engine/src/protocol/crc32c.js';
import {
  encodeC2HData,
  encodeCapsuleCmd,
  encodeCapsuleResp,
  encodeH2CData,
  encodeICReq,
  encodeR2T,
  encodeTermReq,
  PduType,
  type Digests,
} from '../../../engine/src/protocol/pdu.js';
import {
  controllerParser,
  PduError,
  type PduRole,
} from '../../../engine/src/protocol/pdu-parser.js';
import { icFor, parseChunks, splits } from './pdu-helpers.js';

const OFF = { dg: { hdgst: false, ddgst: false } };
const HD = { dg: { hdgst: true, ddgst: false } };
const DD = { dg: { hdgst: false, ddgst: true } };
const BOTH = { dg: { hdgst: true, ddgst: true } };

const sqe = randomBytes(64);
const data = randomBytes(300);
const cat = (b: Buffer[]) => Buffer.concat(b);
const cmd = (dg: Digests, d: Buffer | null = data) => cat(encodeCapsuleCmd(sqe, d, dg));
const h2c = (dg: Digests) =>
  cat(encodeH2CData({ cccid: 1, ttag: 2, datao: 0, last: true }, data, dg));

/** Apply fn to a copy of pdu, then re-seal its header digest so only fn's change is wrong. */
function mutate(pdu: Buffer, dg: Digests, fn: (b: Buffer) => void): Buffer {
  const b = Buffer.from(pdu);
  fn(b);
  const hlen = b[2]!;
  if (dg.hdgst && b[0] !== PduType.ICReq && b[0]! > 3 && b.length >= hlen + 4) {
    b.writeUInt32LE(crc32c(b.subarray(0, hlen)), hlen);
  }
  return b;
}

interface ErrCase {
  name: string;
  role?: PduRole;
  dgs: { dg: Digests }[];
  pdu: (dg: Digests) => Buffer;
  /** Omit the IC PDU in front (sequence errors). */
  noIc?: boolean;
  maxData?: number;
  fes: number;
  fei: number;
}

const ALL = [OFF, HD, DD, BOTH];
const CASES: ErrCase[] = [
  {
    name: 'unknown type',
    dgs: ALL,
    pdu: (dg) => mutate(cmd(dg), dg, (b) => (b[0] = 8)),
    fes: 1,
    fei: 0,
  },
  {
    name: 'C2H type sent to a controller',
    dgs: [OFF],
    pdu: () => encodeCapsuleResp({ dw0: 0, dw1: 0, sqhd: 0, sqid: 0, cid: 0, status: 0 }, false),
    fes: 1,
    fei: 0,
  },
  { name: 'hlen', dgs: ALL, pdu: (dg) => mutate(cmd(dg), dg, (b) => (b[2] = 64)), fes: 1, fei: 2 },
  {
    name: 'HDGST flag without digests',
    dgs: [OFF],
    pdu: (dg) => mutate(cmd(dg), dg, (b) => (b[1] = b[1]! | 1)),
    fes: 1,
    fei: 1,
  },
  {
    name: 'HDGST flag missing',
    dgs: [HD, BOTH],
    pdu: (dg) => mutate(cmd(dg), dg, (b) => (b[1] = b[1]! & ~1)),
    fes: 1,
    fei: 1,
  },
  {
    name: 'DDGST flag missing',
    dgs: [DD, BOTH],
    pdu: (dg) => mutate(h2c(dg), dg, (b) => (b[1] = b[1]! & ~2)),
    fes: 1,
    fei: 1,
  },
  {
    name: 'plen of a capsule without data',
    dgs: ALL,
    pdu: (dg) => mutate(cmd(dg, null), dg, (b) => b.writeUInt32LE(b.readUInt32LE(4) + 4, 4)),
    fes: 1,
    fei: 4,
  },
  {
    name: 'pdo inside the header',
    dgs: ALL,
    pdu: (dg) => mutate(cmd(dg), dg, (b) => (b[3] = 40)),
    fes: 1,
    fei: 3,
  },
  {
    name: 'plen below pdo',
    dgs: ALL,
    pdu: (dg) => mutate(cmd(dg), dg, (b) => b.writeUInt32LE(b[3]! - 1, 4)),
    fes: 1,
    fei: 4,
  },
  {
    name: 'H2CData without data (pdo 0)',
    dgs: [OFF, HD],
    pdu: (dg) => mutate(h2c(dg), dg, (b) => (b[3] = 0)),
    fes: 1,
    fei: 3,
  },
  {
    name: 'DATAL differs from the data',
    dgs: ALL,
    pdu: (dg) => mutate(h2c(dg), dg, (b) => b.writeUInt32LE(299, 16)),
    fes: 1,
    fei: 16,
  },
  { name: 'data beyond the maximum', dgs: ALL, maxData: 256, pdu: h2c, fes: 5, fei: 0 },
  { name: 'capsule before ICReq', dgs: [OFF], noIc: true, pdu: (dg) => cmd(dg), fes: 2, fei: 0 },
  {
    name: 'second ICReq',
    dgs: [OFF],
    pdu: () => encodeICReq({ hpda: 0, hdgst: false, ddgst: false, maxr2t: 0 }),
    fes: 2,
    fei: 0,
  },
  {
    name: 'ICReq plen',
    dgs: [OFF],
    noIc: true,
    pdu: () =>
      mutate(
        encodeICReq({ hpda: 0, hdgst: false, ddgst: false, maxr2t: 0 }),
        OFF.dg,
        (b) => (b[4] = 129),
      ),
    fes: 1,
    fei: 4,
  },
  {
    name: 'ICReq with a digest flag',
    dgs: [OFF],
    noIc: true,
    pdu: () =>
      mutate(
        encodeICReq({ hpda: 0, hdgst: true, ddgst: false, maxr2t: 0 }),
        OFF.dg,
        (b) => (b[1] = 1),
      ),
    fes: 1,
    fei: 1,
  },
  {
    name: 'ICReq pdo',
    dgs: [OFF],
    noIc: true,
    pdu: () =>
      mutate(
        encodeICReq({ hpda: 0, hdgst: false, ddgst: false, maxr2t: 0 }),
        OFF.dg,
        (b) => (b[3] = 8),
      ),
    fes: 1,
    fei: 3,
  },
  {
    name: 'TermReq plen over 152',
    dgs: [OFF, BOTH],
    pdu: () => mutate(encodeTermReq(PduType.H2CTermReq, 1, 0, sqe), OFF.dg, (b) => (b[4] = 200)),
    fes: 1,
    fei: 4,
  },
  {
    name: 'header digest',
    dgs: [HD, BOTH],
    pdu: (dg) => {
      const b = cmd(dg);
      b[20] = b[20]! ^ 1; // a byte of the SQE
      return b;
    },
    fes: 3,
    fei: 0,
  },
  {
    name: 'host: R2T with R2TL 0',
    role: 'host',
    dgs: ALL,
    pdu: (dg) => encodeR2T({ cccid: 1, ttag: 1, r2to: 0, r2tl: 0 }, dg.hdgst),
    fes: 1,
    fei: 16,
  },
  {
    name: 'host: C2HData SUCCESS without LAST_PDU',
    role: 'host',
    dgs: ALL,
    pdu: (dg) => cat(encodeC2HData({ cccid: 1, datao: 0, last: false, success: true }, data, dg)),
    fes: 1,
    fei: 1,
  },
  {
    name: 'host: CapsuleResp with a pdo',
    role: 'host',
    dgs: ALL,
    pdu: (dg) =>
      mutate(
        encodeCapsuleResp({ dw0: 0, dw1: 0, sqhd: 0, sqid: 0, cid: 0, status: 0 }, dg.hdgst),
        dg,
        (b) => (b[3] = 24),
      ),
    fes: 1,
    fei: 3,
  },
  { name: 'host: an H2C PDU', role: 'host', dgs: [OFF], pdu: (dg) => h2c(dg), fes: 1, fei: 0 },
];

describe('malformed PDUs give the TermReq FES/FEI', () => {
  for (const c of CASES) {
    for (const { dg } of c.dgs) {
      it(`${c.name} (hdgst=${+dg.hdgst} ddgst=${+dg.ddgst})`, () => {
        const role = c.role ?? 'controller';
        const pdu = c.pdu(dg);
        const stream = c.noIc ? pdu : Buffer.concat([icFor(role, dg), pdu]);
        const whole = parseChunks(role, [stream], c.maxData);
        expect(whole.error).toBeInstanceOf(PduError);
        expect(whole.error).toMatchObject({ fes: c.fes, fei: c.fei });
        expect(whole.pdus.length).toBe(c.noIc ? 0 : 1);
        const hdr = whole.error!.header;
        expect(hdr.length).toBeLessThanOrEqual(128);
        expect(hdr.equals(pdu.subarray(0, hdr.length))).toBe(true);
        for (const parts of splits(stream)) {
          const out = parseChunks(role, parts, c.maxData);
          expect(out.error).toMatchObject({ fes: c.fes, fei: c.fei });
        }
      });
    }
  }

  it('a data digest mismatch is reported on the PDU, not as a fatal error', () => {
    for (const make of [cmd, h2c]) {
      const pdu = make(DD.dg);
      pdu[pdu.length - 1] = pdu[pdu.length - 1]! ^ 0xff;
      const out = parseChunks('controller', [icFor('controller', DD.dg), pdu]);
      expect(out.error).toBeNull();
      expect(out.pdus[1]).toMatchObject({ ddgstError: true });
      const bad = make(DD.dg);
      bad[bad.length - 10] = bad[bad.length - 10]! ^ 1; // a payload byte
      expect(parseChunks('controller', [icFor('controller', DD.dg), bad]).pdus[1]).toMatchObject({
        ddgstError: true,
      });
    }
  });

  it('in-capsule data over maxCapsuleDataLength is FES 5 from the header alone; H2CData of that size parses', () => {
    for (const { dg } of [OFF, HD, DD, BOTH]) {
      const big = randomBytes(1024);
      const parse = (pdu: Buffer, upTo: number) => {
        const parser = controllerParser(4096, 512);
        parser.feed(icFor('controller', dg), () => undefined);
        parser.setDigests(dg.hdgst, dg.ddgst);
        const pdus: unknown[] = [];
        return { err: parser.feed(pdu.subarray(0, upTo), (p) => pdus.push(p)), pdus };
      };
      const capsule = cat(encodeCapsuleCmd(sqe, big, dg));
      const { err } = parse(capsule, capsule[3]!); // header (and digest) only
      expect(err).toMatchObject({ fes: 5, fei: 0 });
      expect(err?.header.equals(capsule.subarray(0, 72))).toBe(true);
      expect(parse(cat(encodeCapsuleCmd(sqe, big.subarray(0, 512), dg)), 1e6).pdus).toHaveLength(1);
      const data = cat(encodeH2CData({ cccid: 1, ttag: 2, datao: 0, last: true }, big, dg));
      expect(parse(data, 1e6)).toMatchObject({ err: null, pdus: [{ type: PduType.H2CData }] });
    }
  });

  it('after an error the parser ignores further input', () => {
    const stream = Buffer.concat([
      icFor('controller', OFF.dg),
      mutate(cmd(OFF.dg), OFF.dg, (b) => (b[0] = 8)),
    ]);
    const out = parseChunks('controller', [stream, cmd(OFF.dg)]);
    expect(out.pdus).toHaveLength(1);
    expect(out.error?.fes).toBe(1);
  });
});

describe('parser robustness (fast-check)', () => {
  const roles = fc.constantFrom<PduRole>('controller', 'host');
  const digests = fc.record({ hdgst: fc.boolean(), ddgst: fc.boolean() });

  /** Cut buf at the given fractions. */
  function chop(buf: Buffer, cuts: number[]): Buffer[] {
    const at = [...new Set(cuts.map((f) => Math.floor(f * buf.length)))].sort((a, b) => a - b);
    const out: Buffer[] = [];
    let prev = 0;
    for (const a of at) {
      out.push(buf.subarray(prev, a));
      prev = a;
    }
    out.push(buf.subarray(prev));
    return out;
  }

  function neverThrows(role: PduRole, chunks: Buffer[]) {
    const out = parseChunks(role, chunks, 4096);
    if (out.error) {
      expect(out.error).toBeInstanceOf(PduError);
      expect(out.error.fes).toBeGreaterThanOrEqual(1);
      expect(out.error.fes).toBeLessThanOrEqual(6);
    }
  }

  it('random bytes after a valid IC PDU either parse or yield a PduError', () => {
    fc.assert(
      fc.property(
        roles,
        digests,
        fc.uint8Array({ maxLength: 2000 }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }),
        (role, dg, bytes, cuts) => {
          const stream = Buffer.concat([icFor(role, dg), Buffer.from(bytes)]);
          neverThrows(role, chop(stream, cuts));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('mutated valid streams either parse or yield a PduError', () => {
    const valid = (role: PduRole, dg: Digests) =>
      role === 'controller'
        ? [
            icFor(role, dg),
            cmd(dg),
            cmd(dg, null),
            h2c(dg),
            encodeTermReq(PduType.H2CTermReq, 1, 0),
          ]
        : [
            icFor(role, dg),
            encodeCapsuleResp({ dw0: 0, dw1: 0, sqhd: 0, sqid: 0, cid: 0, status: 0 }, dg.hdgst),
            ...encodeC2HData({ cccid: 1, datao: 0, last: true }, data, dg),
            encodeR2T({ cccid: 1, ttag: 1, r2to: 0, r2tl: 9 }, dg.hdgst),
          ];
    fc.assert(
      fc.property(
        roles,
        digests,
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }),
        (role, dg, edits, cuts) => {
          const stream = Buffer.concat(valid(role, dg));
          for (const [at, v] of edits) stream[at % stream.length] = v;
          neverThrows(role, chop(stream, cuts));
        },
      ),
      { numRuns: 3000 },
    );
  });
});
