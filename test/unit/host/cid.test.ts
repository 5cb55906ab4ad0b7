import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CidAllocator, WaitQueue, cidTag } from '../../../engine/src/host/cid.js';

describe('CidAllocator', () => {
  it('hands out at most depth CIDs, with distinct tags', () => {
    const a = new CidAllocator(4);
    const cids = [a.alloc(), a.alloc(), a.alloc(), a.alloc()];
    expect(a.alloc()).toBe(-1);
    expect(new Set(cids.map(cidTag)).size).toBe(4);
    expect(a.inUse).toBe(4);
    a.release(cids[2]!);
    expect(a.inUse).toBe(3);
    expect(a.alloc()).not.toBe(-1);
  });

  it('changes the generation on reuse, so a stale CID is not found', () => {
    const a = new CidAllocator(1);
    const first = a.alloc();
    expect(a.lookup(first)).toBe(0);
    a.release(first);
    expect(a.lookup(first)).toBe(-1); // freed
    const second = a.alloc();
    expect(cidTag(second)).toBe(cidTag(first));
    expect(second).not.toBe(first);
    expect(a.lookup(first)).toBe(-1); // same tag, old generation
    expect(a.lookup(second)).toBe(0);
  });

  it('rejects unknown CIDs and double frees', () => {
    const a = new CidAllocator(8);
    expect(a.lookup(0x0fff)).toBe(-1);
    const c = a.alloc();
    a.release(c);
    expect(() => a.release(c)).toThrow(/not in use/);
  });

  it('validates the depth', () => {
    expect(() => new CidAllocator(0)).toThrow(RangeError);
    expect(() => new CidAllocator(4097)).toThrow(RangeError);
    expect(new CidAllocator(4096).depth).toBe(4096);
  });

  it('never has two live commands with the same CID or tag (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.array(fc.boolean(), { maxLength: 500 }),
        (depth, ops) => {
          const a = new CidAllocator(depth);
          const live: number[] = [];
          for (const alloc of ops) {
            if (alloc) {
              const c = a.alloc();
              if (live.length === depth) expect(c).toBe(-1);
              else {
                expect(live.map(cidTag)).not.toContain(cidTag(c));
                live.push(c);
              }
            } else if (live.length > 0) {
              a.release(live.shift()!);
            }
            expect(a.inUse).toBe(live.length);
            for (const c of live) expect(a.lookup(c)).toBe(cidTag(c));
          }
        },
      ),
    );
  });
});

describe('WaitQueue', () => {
  it('is a bounded FIFO', () => {
    const q = new WaitQueue<number>(3);
    expect(q.push(1)).toBe(true);
    expect(q.push(2)).toBe(true);
    expect(q.push(3)).toBe(true);
    expect(q.push(4)).toBe(false);
    expect(q.shift()).toBe(1);
    expect(q.push(4)).toBe(true);
    expect(q.drain()).toEqual([2, 3, 4]);
    expect(q.length).toBe(0);
    expect(q.shift()).toBeUndefined();
  });

  it('keeps order across growth and wrap-around (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.integer(), fc.constant(null)), { maxLength: 300 }),
        (ops) => {
          const q = new WaitQueue<number>(1000);
          const model: number[] = [];
          for (const op of ops) {
            if (op === null) expect(q.shift()).toBe(model.shift());
            else {
              q.push(op);
              model.push(op);
            }
            expect(q.length).toBe(model.length);
          }
          expect(q.drain()).toEqual(model);
        },
      ),
    );
  });

  it('removeWhere takes out the items it matches and keeps the others in order', () => {
    const q = new WaitQueue<number>(10);
    for (let i = 0; i < 7; i++) q.push(i);
    q.shift(); // the ring's head is not at 0
    expect(q.removeWhere((n) => n % 3 === 0)).toEqual([3, 6]);
    expect(q.length).toBe(4);
    expect(q.drain()).toEqual([1, 2, 4, 5]);
  });

  it('removeWhere keeps order with pushes and shifts around it, wrapped or not (property)', () => {
    const op = fc.oneof(
      fc.integer({ min: 0, max: 99 }),
      fc.constant('shift' as const),
      fc.integer({ min: 2, max: 5 }).map((m) => ({ m })),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        const q = new WaitQueue<number>(1000);
        let model: number[] = [];
        for (const o of ops) {
          if (o === 'shift') expect(q.shift()).toBe(model.shift());
          else if (typeof o === 'number') {
            q.push(o);
            model.push(o);
          } else {
            expect(q.removeWhere((n) => n % o.m === 0)).toEqual(model.filter((n) => n % o.m === 0));
            model = model.filter((n) => n % o.m !== 0);
          }
          expect(q.length).toBe(model.length);
        }
        expect(q.drain()).toEqual(model);
      }),
    );
  });
});
