import { describe, expect, it } from 'vitest';
import { ReadBuffers } from '../../../engine/src/util/read-buffers.js';

describe('ReadBuffers', () => {
  it('hands out disjoint, 8-byte aligned views of the exact length', () => {
    const rb = new ReadBuffers();
    const bufs = Array.from({ length: 200 }, (_, i) => rb.take(512 * ((i % 8) + 1) + (i % 3)));
    bufs.forEach((b, i) => {
      expect(b.length).toBe(512 * ((i % 8) + 1) + (i % 3));
      expect(b.byteOffset % 8).toBe(0);
      b.fill(i & 0xff);
    });
    // Writing every buffer did not disturb any other: no two views overlap.
    bufs.forEach((b, i) => expect(b.every((x) => x === (i & 0xff))).toBe(true));
  });

  it('gives large reads a buffer of their own', () => {
    const rb = new ReadBuffers();
    const big = rb.take(128 * 1024);
    expect(big.length).toBe(128 * 1024);
    expect(big.buffer.byteLength).toBeGreaterThanOrEqual(128 * 1024);
  });
});
