/**
 * The in-place CapsuleCmd writer must produce exactly what the codec's allocating
 * encoder produces, and what the codec's own controller-side parser accepts.
 */
import { describe, expect, it } from 'vitest';
import { SLOT_HEADER_BYTES, ddgstView, writeCapsule } from '../../../engine/src/host/capsule.js';
import { fillConnect, fillRw, fillPropertySet } from '../../../engine/src/host/commands.js';
import { NvmeRequest } from '../../../engine/src/host/request.js';
import { crc32c } from '../../../engine/src/protocol/crc32c.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';
import { controllerParser } from '../../../engine/src/protocol/pdu-parser.js';
import {
  encodeCapsuleCmd,
  encodeICReq,
  type CapsuleCmdPdu,
} from '../../../engine/src/protocol/pdu.js';
import {
  cdwPair,
  decodeConnectData,
  sqeCid,
  sqeSglLength,
  sqeSglType,
} from '../../../engine/src/protocol/sqe.js';

function wire(req: NvmeRequest, cid: number, inCapsule: boolean, hdgst: boolean, ddgst: boolean) {
  const slot = Buffer.alloc(SLOT_HEADER_BYTES, 0xee); // garbage from a previous command
  const head = writeCapsule(slot, req, cid, inCapsule, hdgst, ddgst);
  const parts: Buffer[] = [slot.subarray(0, head)];
  if (inCapsule && req.dataOut) {
    parts.push(req.dataOut);
    if (ddgst) {
      ddgstView(slot).writeUInt32LE(crc32c(req.dataOut), 0);
      parts.push(ddgstView(slot));
    }
  }
  return Buffer.concat(parts);
}

const cases = [false, true].flatMap((hdgst) => [false, true].map((ddgst) => ({ hdgst, ddgst })));

describe('writeCapsule', () => {
  it.each(cases)('matches encodeCapsuleCmd (hdgst $hdgst, ddgst $ddgst)', ({ hdgst, ddgst }) => {
    const data = Buffer.from(Array.from({ length: 4096 }, (_, i) => i & 0xff));
    const req = fillRw(new NvmeRequest(), IO.WRITE, 1, 2 ** 40 + 5, 8, true);
    req.dataOut = data;
    const mine = wire(req, 0x3007, true, hdgst, ddgst);
    // Build the same SQE the codec's way: take ours (already checked below) and re-encode.
    const sqe = Buffer.from(mine.subarray(8, 72));
    const theirs = Buffer.concat(encodeCapsuleCmd(sqe, data, { hdgst, ddgst }));
    expect(mine.equals(theirs)).toBe(true);

    const noData = fillPropertySet(new NvmeRequest(), 0x14, 0x460001);
    const a = wire(noData, 5, false, hdgst, ddgst);
    const b = Buffer.concat(
      encodeCapsuleCmd(Buffer.from(a.subarray(8, 72)), null, { hdgst, ddgst }),
    );
    expect(a.equals(b)).toBe(true);
  });

  it.each(cases)(
    'is parsed back by the controller parser (hdgst $hdgst, ddgst $ddgst)',
    ({ hdgst, ddgst }) => {
      const req = fillConnect(new NvmeRequest(), {
        qid: 3,
        sqsize: 127,
        kato: 0,
        cntlid: 7,
        hostid: Buffer.alloc(16, 1),
        subnqn: 'nqn.sub',
        hostnqn: 'nqn.host',
      });
      const bytes = wire(req, 0x1234, true, hdgst, ddgst);
      const p = controllerParser(16384);
      expect(p.feed(encodeICReq({ hpda: 0, hdgst, ddgst, maxr2t: 0 }), () => {})).toBeNull();
      p.setDigests(hdgst, ddgst);
      const got: CapsuleCmdPdu[] = [];
      expect(p.feed(bytes, (pdu) => got.push(pdu as CapsuleCmdPdu))).toBeNull();
      expect(got).toHaveLength(1);
      const { sqe, data, ddgstError } = got[0]!;
      expect(ddgstError).toBe(false);
      expect(sqeCid(sqe)).toBe(0x1234);
      expect(sqe[1]).toBe(0x40); // PSDT 01b
      expect(sqe[4]).toBe(0x01); // fctype Connect
      expect(sqeSglType(sqe)).toBe(0x01);
      expect(sqeSglLength(sqe)).toBe(1024);
      expect(sqe.readUInt16LE(42)).toBe(3);
      expect(sqe.readUInt16LE(44)).toBe(127);
      expect(decodeConnectData(data!)).toMatchObject({
        cntlid: 7,
        subnqn: 'nqn.sub',
        hostnqn: 'nqn.host',
      });
    },
  );

  it('uses a transport SGL for R2T writes and reads', () => {
    const w = fillRw(new NvmeRequest(), IO.WRITE, 1, 0, 128);
    w.dataOut = Buffer.alloc(65536);
    const bytes = wire(w, 1, false, false, false);
    expect(bytes.length).toBe(72);
    expect(bytes[3]).toBe(0); // pdo: no data in the capsule
    expect(sqeSglType(bytes.subarray(8))).toBe(0x5a);
    expect(sqeSglLength(bytes.subarray(8))).toBe(65536);
    const r = fillRw(new NvmeRequest(), IO.READ, 1, 2 ** 33, 8);
    r.readLength = 4096;
    const rb = wire(r, 2, false, false, false).subarray(8);
    expect(sqeSglType(rb)).toBe(0x5a);
    expect(sqeSglLength(rb)).toBe(4096);
    expect(cdwPair(rb, 10)).toBe(2 ** 33);
  });
});
