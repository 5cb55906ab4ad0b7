import { describe, expect, it } from 'vitest';
import { ReadBuffers, RecycledBuffers } from '../../../engine/src/util/read-buffers.js';

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

describe('RecycledBuffers', () => {
  it('hands a returned buffer to the next take of its length, and only of its length', () => {
    const rb = new RecycledBuffers(1 << 20);
    const a = rb.take(4096);
    const b = rb.take(4096);
    expect(b).not.toBe(a);
    rb.give(a);
    expect(rb.heldBytes).toBe(4096);
    const other = rb.take(8192);
    expect(other).not.toBe(a);
    expect(other.length).toBe(8192);
    expect(rb.take(4096)).toBe(a);
    expect(rb.heldBytes).toBe(0);
    expect(rb.take(4096)).not.toBe(a); // given once, handed out once
  });

  it('keeps no more than its bound; the rest is left to the GC', () => {
    const rb = new RecycledBuffers(3 * 4096);
    const bufs = Array.from({ length: 5 }, () => rb.take(4096));
    bufs.forEach((b) => rb.give(b));
    expect(rb.heldBytes).toBe(3 * 4096);
    const again = Array.from({ length: 5 }, () => rb.take(4096));
    expect(again.filter((b) => bufs.includes(b))).toHaveLength(3);
    rb.give(Buffer.alloc(0));
    expect(rb.heldBytes).toBe(0);
  });
});
