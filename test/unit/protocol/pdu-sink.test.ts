/**
 * The parser's DataSink: a data PDU that spans received chunks lands in the consumer's
 * buffer as it arrives (no buffer of the parser's, no second copy), with digests
 * checked over it; everything else parses exactly as without a sink.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  controllerParser,
  hostParser,
  PduError,
  type DataHeader,
  type PduParser,
} from '../../../engine/src/protocol/pdu-parser.js';
import {
  encodeC2HData,
  encodeCapsuleResp,
  encodeH2CData,
  encodeICReq,
  encodeICResp,
  Fes,
  OFF_DATAL,
  PduType,
  type Pdu,
} from '../../../engine/src/protocol/pdu.js';

const DIGESTS = [
  { hdgst: false, ddgst: false },
  { hdgst: true, ddgst: true },
];

function feedAll(p: PduParser, bytes: Buffer, sizes: number[]): Pdu[] {
  const out: Pdu[] = [];
  let off = 0;
  for (let i = 0; off < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, bytes.length - off);
    const err = p.feed(bytes.subarray(off, off + n), (pdu) => out.push(pdu));
    if (err) throw err;
    off += n;
  }
  return out;
}

/** A target parser past the IC exchange, with digests as given. */
function readyController(dg: { hdgst: boolean; ddgst: boolean }) {
  const p = controllerParser(8 << 20);
  p.feed(encodeICReq({ hpda: 0, maxr2t: 0, ...dg }), () => undefined);
  p.setDigests(dg.hdgst, dg.ddgst);
  return p;
}

/** A host parser past the IC exchange, with digests as given. */
function readyHost(dg: { hdgst: boolean; ddgst: boolean }) {
  const p = hostParser(1 << 20);
  p.feed(encodeICResp({ cpda: 0, maxh2cdata: 131072, ...dg }), () => undefined);
  p.setDigests(dg.hdgst, dg.ddgst);
  return p;
}

describe('PduParser data sink', () => {
  for (const dg of DIGESTS) {
    // Chunkings that split the header, the data and the digest in every place.
    for (const sizes of [[1], [7, 13], [4096], [65536], [23, 70000]]) {
      it(`C2HData lands in the sink's buffer (hdgst=${+dg.hdgst} ddgst=${+dg.ddgst}, chunks ${sizes.join('/')})`, () => {
        const p = readyHost(dg);
        const data = randomBytes(128 * 1024);
        const dest = Buffer.alloc(256 * 1024); // the read's buffer; this PDU is its 2nd half
        const seen: DataHeader[] = [];
        p.setDataSink((h) => {
          seen.push(h);
          return dest.subarray(h.datao, h.datao + h.datal);
        });
        const f = { cccid: 7, datao: 128 * 1024, last: true };
        const wire = Buffer.concat([
          ...encodeC2HData(f, data, dg),
          encodeCapsuleResp({ cid: 7, sqhd: 0, sqid: 1, status: 0, dw0: 0, dw1: 0 }, dg.hdgst),
        ]);
        const pdus = feedAll(p, wire, sizes);
        expect(pdus.map((x) => x.type)).toEqual([PduType.C2HData, PduType.CapsuleResp]);
        const d = pdus[0] as Extract<Pdu, { type: typeof PduType.C2HData }>;
        expect(d).toMatchObject({ cccid: 7, datao: 128 * 1024, datal: data.length });
        expect(d.ddgstError).toBe(false);
        expect(d.landed).toBe(true); // so the consumer copies nothing
        expect(d.data.buffer).toBe(dest.buffer); // the very buffer: no copy of the parser's
        expect(d.data.byteOffset).toBe(dest.byteOffset + 128 * 1024);
        expect(dest.subarray(128 * 1024).equals(data)).toBe(true);
        expect(dest.subarray(0, 128 * 1024).every((x) => x === 0)).toBe(true);
        const whole = sizes[0]! >= wire.length;
        expect(seen).toEqual(
          whole ? [] : [{ type: PduType.C2HData, cccid: 7, ttag: 0, datao: 131072, datal: 131072 }],
        );
        expect(p.buffered).toBe(0);
      });
    }
  }

  it('checks the data digest over the sink buffer', () => {
    const dg = { hdgst: true, ddgst: true };
    const p = readyHost(dg);
    const data = randomBytes(100_000);
    const dest = Buffer.alloc(data.length);
    p.setDataSink(() => dest);
    const wire = Buffer.concat(encodeC2HData({ cccid: 1, datao: 0, last: true }, data, dg));
    wire[wire.length - 1000]! ^= 0x01; // a payload byte, not the digest
    const [d] = feedAll(p, wire, [4000]) as Extract<Pdu, { type: typeof PduType.C2HData }>[];
    expect(d!.data.buffer).toBe(dest.buffer);
    expect(d!.ddgstError).toBe(true);
  });

  it('falls back to its own buffer when the sink says null or offers the wrong length', () => {
    for (const offer of [null, Buffer.alloc(10)]) {
      const p = readyHost({ hdgst: false, ddgst: false });
      p.setDataSink(() => offer);
      const data = randomBytes(70_000);
      const wire = Buffer.concat(
        encodeC2HData({ cccid: 2, datao: 0, last: true }, data, { hdgst: false, ddgst: false }),
      );
      const [d] = feedAll(p, wire, [1000]) as Extract<Pdu, { type: typeof PduType.C2HData }>[];
      expect(d!.data.equals(data)).toBe(true);
      expect(d!.data.buffer).not.toBe(offer?.buffer);
      expect(d!.landed).toBe(false); // the consumer must copy it
    }
  });

  it('reports a DATAL that disagrees with PLEN at once, before any data lands', () => {
    const p = readyHost({ hdgst: false, ddgst: false });
    let asked = 0;
    p.setDataSink((h) => (asked++, Buffer.alloc(h.datal)));
    const wire = Buffer.concat(
      encodeC2HData({ cccid: 3, datao: 0, last: true }, randomBytes(5000), {
        hdgst: false,
        ddgst: false,
      }),
    );
    wire.writeUInt32LE(4000, 16); // DATAL no longer matches PLEN
    const err = p.feed(wire.subarray(0, 1000), () => undefined);
    expect(err).toBeInstanceOf(PduError);
    expect(err).toMatchObject({ fes: Fes.INVALID_HEADER_FIELD, fei: OFF_DATAL });
    expect(err?.message).toMatch(/datal 4000/);
    expect(asked).toBe(0);
    expect(p.halted()).toBe(true);
  });

  // A header the consumer knows can never fit (an unknown command, data past its end)
  // ends the connection at once: before, the parser gathered all of PLEN (up to its
  // maxDataLength) only for the consumer to throw it away.
  for (const role of ['host', 'controller'] as const) {
    it(`fails at once on a header the sink refuses, with its FES and FEI (${role})`, () => {
      const dg = { hdgst: true, ddgst: true };
      const p = role === 'host' ? readyHost(dg) : readyController(dg);
      const refusal = { fes: Fes.DATA_OUT_OF_RANGE, fei: 0, why: 'past the end of the read' };
      p.setDataSink(() => refusal);
      const data = Buffer.alloc(512 * 1024); // under maxDataLength: the header checks out
      const f = { cccid: 5, datao: 0, last: true };
      const pdu =
        role === 'host' ? encodeC2HData(f, data, dg) : encodeH2CData({ ...f, ttag: 2 }, data, dg);
      const first = Buffer.concat([pdu[0]!, data.subarray(0, 65536)]);
      const seen: Pdu[] = [];
      const err = p.feed(first, (x) => seen.push(x));
      expect(err).toBeInstanceOf(PduError);
      expect(err).toMatchObject({ fes: Fes.DATA_OUT_OF_RANGE, fei: 0 });
      expect(err?.message).toMatch(/past the end of the read/);
      expect(err?.header.equals(pdu[0]!.subarray(0, 24))).toBe(true); // for the TermReq
      expect(seen).toEqual([]);
      expect(p.buffered).toBe(0); // nothing gathered
      expect(p.halted()).toBe(true);
      expect(p.feed(data.subarray(0, 1000), (x) => seen.push(x))).toBeNull();
    });
  }

  it('H2CData on the target side lands in the sink buffer too', () => {
    const p = controllerParser(1 << 20);
    p.feed(encodeICReq({ hpda: 0, hdgst: false, ddgst: false, maxr2t: 0 }), () => undefined);
    const data = randomBytes(128 * 1024);
    const dest = Buffer.alloc(data.length);
    const seen: DataHeader[] = [];
    p.setDataSink((h) => (seen.push(h), dest));
    const wire = Buffer.concat(
      encodeH2CData({ cccid: 4, ttag: 9, datao: 0, last: true }, data, {
        hdgst: false,
        ddgst: false,
      }),
    );
    const [d] = feedAll(p, wire, [65536]);
    expect(seen).toEqual([
      { type: PduType.H2CData, cccid: 4, ttag: 9, datao: 0, datal: data.length },
    ]);
    expect((d as { data: Buffer }).data.buffer).toBe(dest.buffer);
    expect(dest.equals(data)).toBe(true);
  });
});
