import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  c2hDataFrameSize,
  c2hDataHeadroom,
  encodeC2HData,
  frameC2HData,
  encodeCapsuleCmd,
  encodeCapsuleResp,
  encodeH2CData,
  encodeICReq,
  encodeICResp,
  encodeR2T,
  encodeTermReq,
  PduFlag,
  PduType,
  type DataPduOptions,
  type Digests,
  type Pdu,
} from '../../../engine/src/protocol/pdu.js';
import { hostParser } from '../../../engine/src/protocol/pdu-parser.js';
import {
  readCqe,
  setSgl,
  SGL_DATA_BLOCK_OFFSET,
  SGL_TRANSPORT_DATA_BLOCK,
  sglAddress,
  sglLength,
  sglType,
  sqePsdt,
  writeCqe,
} from '../../../engine/src/protocol/pdu-capsule.js';
import type { PduRole } from '../../../engine/src/protocol/pdu-parser.js';
import { bytewise, icFor, parseChunks, plain, splits } from './pdu-helpers.js';

const DIGESTS: Digests[] = [
  { hdgst: false, ddgst: false },
  { hdgst: true, ddgst: false },
  { hdgst: false, ddgst: true },
  { hdgst: true, ddgst: true },
];
const dgName = (d: Digests) => `hdgst=${+d.hdgst} ddgst=${+d.ddgst}`;

interface Case {
  name: string;
  role: PduRole;
  /** Encoded wire bytes of the PDU under test for these digests. */
  encode(o: DataPduOptions): Buffer;
  /** The decoded PDU the parser must hand out. */
  expected: Pdu;
}

const sqe = randomBytes(64);
const data4k = randomBytes(4096);
const odd = randomBytes(13);
const cqe = { dw0: 0xdeadbeef, dw1: 7, sqhd: 5, sqid: 1, cid: 0xa123, status: 0x4002 };
const cqeBytes = Buffer.alloc(16);
writeCqe(cqeBytes, 0, cqe);
const join = (b: Buffer[]) => Buffer.concat(b);

const CASES: Case[] = [
  {
    name: 'CapsuleCmd without data',
    role: 'controller',
    encode: (o) => join(encodeCapsuleCmd(sqe, null, o)),
    expected: { type: PduType.CapsuleCmd, sqe, data: null, ddgstError: false },
  },
  {
    name: 'CapsuleCmd with 4 KiB in-capsule data',
    role: 'controller',
    encode: (o) => join(encodeCapsuleCmd(sqe, data4k, o)),
    expected: { type: PduType.CapsuleCmd, sqe, data: data4k, ddgstError: false },
  },
  {
    name: 'CapsuleCmd with 13 bytes in-capsule data',
    role: 'controller',
    encode: (o) => join(encodeCapsuleCmd(sqe, odd, o)),
    expected: { type: PduType.CapsuleCmd, sqe, data: odd, ddgstError: false },
  },
  {
    name: 'H2CData (last)',
    role: 'controller',
    encode: (o) =>
      join(encodeH2CData({ cccid: 0x1234, ttag: 0xfffe, datao: 8192, last: true }, data4k, o)),
    expected: {
      type: PduType.H2CData,
      flags: PduFlag.LAST_PDU,
      cccid: 0x1234,
      ttag: 0xfffe,
      datao: 8192,
      datal: 4096,
      data: data4k,
      ddgstError: false,
      landed: false,
    },
  },
  {
    name: 'H2CData (13 bytes, not last)',
    role: 'controller',
    encode: (o) => join(encodeH2CData({ cccid: 1, ttag: 2, datao: 0, last: false }, odd, o)),
    expected: {
      type: PduType.H2CData,
      flags: 0,
      cccid: 1,
      ttag: 2,
      datao: 0,
      datal: 13,
      data: odd,
      ddgstError: false,
      landed: false,
    },
  },
  {
    name: 'H2CTermReq with a header copy',
    role: 'controller',
    encode: () => encodeTermReq(PduType.H2CTermReq, 1, 4, sqe),
    expected: { type: PduType.H2CTermReq, fes: 1, fei: 4, header: sqe },
  },
  {
    name: 'CapsuleResp',
    role: 'host',
    encode: (o) => encodeCapsuleResp(cqe, o.hdgst),
    expected: { type: PduType.CapsuleResp, cqe: cqeBytes },
  },
  {
    name: 'C2HData (last, success)',
    role: 'host',
    encode: (o) =>
      join(encodeC2HData({ cccid: 9, datao: 4096, last: true, success: true }, data4k, o)),
    expected: {
      type: PduType.C2HData,
      flags: PduFlag.LAST_PDU | PduFlag.SUCCESS,
      cccid: 9,
      datao: 4096,
      datal: 4096,
      data: data4k,
      ddgstError: false,
      landed: false,
    },
  },
  {
    name: 'C2HData (13 bytes)',
    role: 'host',
    encode: (o) => join(encodeC2HData({ cccid: 9, datao: 0, last: false }, odd, o)),
    expected: {
      type: PduType.C2HData,
      flags: 0,
      cccid: 9,
      datao: 0,
      datal: 13,
      data: odd,
      ddgstError: false,
      landed: false,
    },
  },
  {
    name: 'R2T',
    role: 'host',
    encode: (o) => encodeR2T({ cccid: 3, ttag: 77, r2to: 4096, r2tl: 1 << 20 }, o.hdgst),
    expected: { type: PduType.R2T, cccid: 3, ttag: 77, r2to: 4096, r2tl: 1 << 20 },
  },
  {
    name: 'C2HTermReq without a header copy',
    role: 'host',
    encode: () => encodeTermReq(PduType.C2HTermReq, 5, 0),
    expected: { type: PduType.C2HTermReq, fes: 5, fei: 0, header: Buffer.alloc(0) },
  },
];

/** Data PDUs report their raw flags, digest bits included. */
function withDigestFlags(p: Pdu, dg: Digests): Pdu {
  if (!('flags' in p)) return p;
  return { ...p, flags: p.flags | (dg.hdgst ? PduFlag.HDGST : 0) | (dg.ddgst ? PduFlag.DDGST : 0) };
}

function icExpected(role: PduRole, dg: Digests): Pdu {
  return role === 'controller'
    ? { type: PduType.ICReq, pfv: 0, hpda: 0, hdgst: dg.hdgst, ddgst: dg.ddgst, maxr2t: 0 }
    : {
        type: PduType.ICResp,
        pfv: 0,
        cpda: 0,
        hdgst: dg.hdgst,
        ddgst: dg.ddgst,
        maxh2cdata: 128 * 1024,
      };
}

describe('PDU round trips', () => {
  for (const dg of DIGESTS) {
    describe(dgName(dg), () => {
      for (const c of CASES) {
        const stream = Buffer.concat([icFor(c.role, dg), c.encode(dg)]);
        const want = plain([icExpected(c.role, dg), withDigestFlags(c.expected, dg)]);

        it(`${c.name}: whole, and split at every byte offset`, () => {
          expect(plain(parseChunks(c.role, [stream]))).toEqual({ pdus: want, error: null });
          for (const parts of splits(stream)) {
            const out = parseChunks(c.role, parts);
            if (out.error || out.pdus.length !== 2) expect(plain(out)).toEqual({ pdus: want });
            expect(plain(out.pdus)).toEqual(want);
          }
        });

        it(`${c.name}: byte by byte`, () => {
          expect(plain(parseChunks(c.role, bytewise(stream)))).toEqual({
            pdus: want,
            error: null,
          });
        });
      }

      for (const role of ['controller', 'host'] as const) {
        it(`${role}: every PDU of the role concatenated in one chunk, then split`, () => {
          const mine = CASES.filter((c) => c.role === role && !c.name.includes('TermReq'));
          const stream = Buffer.concat([icFor(role, dg), ...mine.map((c) => c.encode(dg))]);
          const want = plain([
            icExpected(role, dg),
            ...mine.map((c) => withDigestFlags(c.expected, dg)),
          ]);
          expect(plain(parseChunks(role, [stream]))).toEqual({ pdus: want, error: null });
          for (let cut = 1; cut < stream.length; cut += 97) {
            const out = parseChunks(role, [stream.subarray(0, cut), stream.subarray(cut)]);
            expect(plain(out)).toEqual({ pdus: want, error: null });
          }
        });
      }
    });
  }

  it('honours PDO padding (HPDA/CPDA alignment)', () => {
    for (const align of [8, 32, 128]) {
      const o = { hdgst: true, ddgst: true, align };
      const pieces = encodeC2HData({ cccid: 1, datao: 0, last: true }, odd, o);
      expect(pieces[0]![3]).toBe(Math.ceil(28 / align) * align);
      const stream = Buffer.concat([icFor('host', o), ...pieces]);
      for (const parts of splits(stream)) {
        const out = parseChunks('host', parts);
        expect(out.error).toBeNull();
        expect(plain(out.pdus[1])).toMatchObject({ data: odd.toString('hex'), ddgstError: false });
      }
    }
  });

  it('hands out views of the chunk when a PDU lies inside it', () => {
    const stream = Buffer.concat([
      icFor('controller', DIGESTS[0]!),
      ...encodeCapsuleCmd(sqe, data4k, DIGESTS[0]!),
    ]);
    const { pdus } = parseChunks('controller', [stream]);
    const cmd = pdus[1] as Extract<Pdu, { type: 4 }>;
    expect(cmd.data!.buffer).toBe(stream.buffer);
    expect(cmd.sqe.byteOffset).toBe(stream.byteOffset + 128 + 8);
  });

  it('data PDU encoders never copy the payload', () => {
    const dg = { hdgst: true, ddgst: true };
    const pieces = encodeH2CData({ cccid: 1, ttag: 1, datao: 0, last: true }, data4k, dg);
    expect(pieces).toHaveLength(3);
    expect(pieces[1]).toBe(data4k);
    expect(pieces[0]!.length).toBe(28);
    expect(pieces[2]!.length).toBe(4);
  });
});

describe('C2HData framed in place', () => {
  const join = (b: Buffer[]) => Buffer.concat(b);
  for (const hdgst of [false, true]) {
    for (const ddgst of [false, true]) {
      for (const align of [4, 8, 128]) {
        it(`is byte for byte encodeC2HData (hdgst ${hdgst}, ddgst ${ddgst}, alignment ${align})`, () => {
          const o: DataPduOptions = { hdgst, ddgst, align };
          for (const [data, flags] of [
            [randomBytes(4096), { last: true, success: true }],
            [randomBytes(13), { last: false }],
            [randomBytes(512), { last: true }],
          ] as const) {
            const frame = Buffer.alloc(c2hDataFrameSize(data.length, o), 0xee); // dirty
            data.copy(frame, c2hDataHeadroom(o));
            const f = { cccid: 0x1234, datao: 8192, ...flags };
            expect(frameC2HData(frame, f, o)).toEqual(join(encodeC2HData(f, data, o)));
          }
        });
      }
    }
  }
});

describe('golden bytes', () => {
  it('ICReq', () => {
    const b = encodeICReq({ hpda: 0, hdgst: true, ddgst: false, maxr2t: 0 });
    expect(b.toString('hex')).toBe(
      '0000800080000000' + '0000' + '00' + '01' + '00000000' + '00'.repeat(112),
    );
  });

  it('ICResp', () => {
    const b = encodeICResp({ cpda: 0, hdgst: true, ddgst: true, maxh2cdata: 0x20000 });
    expect(b.toString('hex')).toBe(
      '0100800080000000' + '0000' + '00' + '03' + '00000200' + '00'.repeat(112),
    );
  });

  // Read of 8 blocks at LBA 0, NSID 1, CID 0x1234, transport SGL of 4096 bytes.
  const readSqe = Buffer.alloc(64);
  readSqe[0] = 0x02;
  readSqe.writeUInt16LE(0x1234, 2);
  readSqe.writeUInt32LE(1, 4);
  setSgl(readSqe, SGL_TRANSPORT_DATA_BLOCK, 4096);
  readSqe.writeUInt32LE(7, 48);
  const SQE_HEX =
    '02403412' +
    '01000000' +
    '00'.repeat(16) +
    '00'.repeat(8) +
    '00100000' +
    '0000005a' +
    '00000000' +
    '00000000' +
    '07000000' +
    '00'.repeat(12);

  it('CapsuleCmd without digests', () => {
    const b = Buffer.concat(encodeCapsuleCmd(readSqe, null, { hdgst: false, ddgst: false }));
    expect(b.toString('hex')).toBe('04004800' + '48000000' + SQE_HEX);
  });

  it('CapsuleCmd with header digest, and in-capsule data with data digest', () => {
    const b = Buffer.concat(encodeCapsuleCmd(readSqe, null, { hdgst: true, ddgst: true }));
    expect(b.toString('hex')).toBe('04014800' + '4c000000' + SQE_HEX + '8db34cc1');
    const data = Buffer.from('123456789');
    const w = Buffer.concat(encodeCapsuleCmd(readSqe, data, { hdgst: false, ddgst: true }));
    // pdo 72, plen 72 + 9 + 4; DDGST = CRC32C("123456789") = 0xE3069283, little endian.
    expect(w.toString('hex')).toBe(
      '04024848' + '55000000' + SQE_HEX + data.toString('hex') + '839206e3',
    );
  });

  it('CapsuleResp', () => {
    const b = encodeCapsuleResp(
      { dw0: 1, dw1: 0, sqhd: 2, sqid: 0, cid: 0x1234, status: 0x4002 },
      false,
    );
    expect(b.toString('hex')).toBe(
      '05001800' + '18000000' + '01000000' + '00000000' + '0200' + '0000' + '3412' + '0480',
    );
  });
});

describe('SQE and CQE helpers', () => {
  it('reads the SGL descriptor and PSDT', () => {
    const s = Buffer.alloc(64);
    setSgl(s, SGL_DATA_BLOCK_OFFSET, 8192, 0x1_0000_0004);
    expect(sqePsdt(s)).toBe(1);
    expect(sglType(s)).toBe(0x01);
    expect(sglLength(s)).toBe(8192);
    expect(sglAddress(s)).toBe(0x1_0000_0004);
  });

  it('CQE round trip, status shifted past the phase bit', () => {
    const b = Buffer.alloc(16);
    writeCqe(b, 0, cqe);
    expect(b.readUInt16LE(14)).toBe(0x4002 << 1);
    expect(readCqe(b)).toEqual(cqe);
  });
});

describe('host parser', () => {
  it('accepts C2H PDUs only', () => {
    const p = hostParser(4096);
    const err = p.feed(icFor('controller', DIGESTS[0]!), () => {});
    expect(err).toMatchObject({ fes: 1, fei: 0 });
  });
});
