/** Stream builders and a collecting parse loop for the PDU codec tests. */
import {
  encodeICReq,
  encodeICResp,
  PduType,
  type Digests,
  type Pdu,
} from '../../../engine/src/protocol/pdu.js';
import { PduError, PduParser, type PduRole } from '../../../engine/src/protocol/pdu-parser.js';

export const MAX_DATA = 128 * 1024;

/** The IC PDU a peer of `role` receives first, asking for `dg`. */
export function icFor(role: PduRole, dg: Digests): Buffer {
  return role === 'controller'
    ? encodeICReq({ hpda: 0, hdgst: dg.hdgst, ddgst: dg.ddgst, maxr2t: 0 })
    : encodeICResp({ cpda: 0, hdgst: dg.hdgst, ddgst: dg.ddgst, maxh2cdata: MAX_DATA });
}

export interface ParseOutcome {
  pdus: Pdu[];
  error: PduError | null;
}

/**
 * Feed chunks to a fresh parser of `role`, enabling digests as the IC PDU asks (what a
 * transport does in its onPdu).
 */
export function parseChunks(role: PduRole, chunks: Buffer[], maxData = MAX_DATA): ParseOutcome {
  const parser = new PduParser({ role, maxDataLength: maxData });
  const pdus: Pdu[] = [];
  let error: PduError | null = null;
  const onPdu = (p: Pdu) => {
    if (p.type === PduType.ICReq || p.type === PduType.ICResp) parser.setDigests(p.hdgst, p.ddgst);
    pdus.push(p);
  };
  for (const c of chunks) {
    const e = parser.feed(c, onPdu);
    if (e) error ??= e;
  }
  return { pdus, error };
}

/** Buffers as hex so structural equality is about bytes, not memory. */
export function plain(p: unknown): unknown {
  if (Buffer.isBuffer(p)) return p.toString('hex');
  if (Array.isArray(p)) return p.map(plain);
  if (p && typeof p === 'object') {
    return Object.fromEntries(Object.entries(p).map(([k, v]) => [k, plain(v)]));
  }
  return p;
}

/** Every way to cut buf in two. */
export function* splits(buf: Buffer): Generator<Buffer[]> {
  for (let i = 0; i <= buf.length; i++) yield [buf.subarray(0, i), buf.subarray(i)];
}

export function bytewise(buf: Buffer): Buffer[] {
  return Array.from({ length: buf.length }, (_, i) => buf.subarray(i, i + 1));
}
