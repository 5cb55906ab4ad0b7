/**
 * The parser's hold() for a reader that reads every chunk into one buffer it reuses
 * (the target's connections): what a hold keeps of a chunk, and input that arrives
 * during it, must survive the next read into that buffer.
 */
import { describe, expect, it } from 'vitest';
import { controllerParser } from '../../../engine/src/protocol/pdu-parser.js';
import {
  encodeCapsuleCmd,
  encodeICReq,
  PduType,
  type Pdu,
} from '../../../engine/src/protocol/pdu.js';
import { sqe } from '../../helpers/raw-nvme.js';

const NO_DIGESTS = { hdgst: false, ddgst: false };

/** Capsules with cids `cids`, back to back. */
function capsules(...cids: number[]): Buffer {
  return Buffer.concat(cids.flatMap((cid) => encodeCapsuleCmd(sqe(0x18, cid), null, NO_DIGESTS)));
}

const cidOf = (pdu: Pdu): number =>
  pdu.type === PduType.CapsuleCmd ? pdu.sqe.readUInt16LE(2) : -1;

/**
 * A target parser past the IC exchange that reads chunks into one buffer it scribbles
 * over after each (as the next read would), and holds after the `holdAfter`th PDU.
 */
function holdingParser(holdAfter: number) {
  const p = controllerParser(1 << 20, 8192, true);
  p.feed(encodeICReq({ hpda: 0, maxr2t: 0, ...NO_DIGESTS }), () => undefined);
  const rx = Buffer.alloc(4096);
  const seen: number[] = [];
  const onPdu = (pdu: Pdu): void => {
    seen.push(cidOf(pdu));
    if (seen.length === holdAfter) p.hold();
  };
  const read = (bytes: Buffer): void => {
    bytes.copy(rx);
    expect(p.feed(rx.subarray(0, bytes.length), onPdu)).toBeNull();
    rx.fill(0xee); // the next read
  };
  return { p, seen, read, resume: () => p.resume(onPdu) };
}

describe('PduParser hold() with reused chunks', () => {
  it('copies what a hold keeps of a chunk and what arrives during it', () => {
    const { p, seen, read, resume } = holdingParser(1); // keeps the chunk's rest
    read(capsules(1, 2, 3));
    expect(seen).toEqual([1]);
    expect(p.holding).toBe(true);
    // Input during the hold queues behind what the hold kept.
    read(capsules(4));
    read(capsules(5));
    expect(seen).toEqual([1]);
    expect(resume()).toBeNull();
    expect(seen).toEqual([1, 2, 3, 4, 5]);
  });

  it('copies input that arrives during a hold asked at the very end of a chunk', () => {
    const { seen, read, resume } = holdingParser(2); // the chunk's last PDU: nothing kept
    read(capsules(1, 2));
    read(capsules(3));
    expect(resume()).toBeNull();
    expect(seen).toEqual([1, 2, 3]);
  });
});
