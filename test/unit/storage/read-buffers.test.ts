import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  IDLE_RELEASE_MS,
  ReadBuffers,
  RecycledBuffers,
  sweepIdleBuffers,
} from '../../../engine/src/util/read-buffers.js';

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

describe('RecycledBuffers when idle', () => {
  afterEach(() => vi.useRealTimers());

  it('keeps its buffers while they are taken, and lets go after a sweep period without a take', () => {
    const rb = new RecycledBuffers(1 << 20);
    const a = rb.take(4096);
    rb.give(a);
    sweepIdleBuffers(); // taken since the last sweep: kept
    expect(rb.heldBytes).toBe(4096);
    expect(rb.take(4096)).toBe(a);
    rb.give(a);
    sweepIdleBuffers();
    expect(rb.heldBytes).toBe(4096);
    sweepIdleBuffers(); // a whole period without a take
    expect(rb.heldBytes).toBe(0);
    expect(rb.take(4096)).not.toBe(a);
  });

  it('is swept by a timer of its own', () => {
    // Let every pool earlier tests left go, so the sweeper stops and restarts under fake timers.
    for (let i = 0; i < 3; i++) sweepIdleBuffers();
    vi.useFakeTimers();
    const rb = new RecycledBuffers(1 << 20);
    rb.give(rb.take(8192));
    vi.advanceTimersByTime(IDLE_RELEASE_MS);
    expect(rb.heldBytes).toBe(8192); // the take came after the last sweep
    vi.advanceTimersByTime(IDLE_RELEASE_MS);
    expect(rb.heldBytes).toBe(0);
    expect(vi.getTimerCount()).toBe(0); // nothing held anywhere: no timer left either
  });
});
