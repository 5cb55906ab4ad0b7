/**
 * The closed loop and the I/O submitters of the storage micro-benchmark
 * (storage-bench.ts), apart from the script so that tests can drive them.
 *
 * Every method reads into one buffer per slot in flight, reused for each of that slot's
 * reads, as fio does: Buffer.allocUnsafe pools only sizes below 4 KiB, so a fresh 4 KiB
 * buffer per read is one malloc each (about 1 µs here), a cost one method would pay and
 * the others not.
 */
import * as fs from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { FdBackend } from '../storage/file.js';
import { LatencyRecorder } from './stats.js';

export const BS = 4096;

/**
 * Issues one I/O at a block index for in-flight slot `slot` (one I/O per slot at a
 * time); done(err, data) when it completes, with the slot's buffer for a read. A failed
 * I/O ends the measurement with that error (it is not a completion).
 */
export type Submit = (
  block: number,
  slot: number,
  done: (err?: Error | null, data?: Buffer) => void,
) => void;

export interface LoopResult {
  iops: number;
  meanUs: number;
  p99Us: number;
  /** I/Os completed before the measured window opened. */
  warmupIos: number;
}

export interface LoopOptions {
  seconds: number;
  blocks: number;
  /**
   * The window opens after this long and this many I/Os: the first I/Os of a method
   * run code V8 has not optimised yet, and a worker thread that has not run yet.
   */
  warmupSeconds: number;
  warmupIos: number;
}

/** Keeps qd I/Os outstanding (slots 0..qd-1) through a warm-up, then for o.seconds. */
export function run(submit: Submit, qd: number, o: LoopOptions): Promise<LoopResult> {
  return new Promise((resolve, reject) => {
    const lat = new LatencyRecorder();
    const warmEnd = performance.now() + o.warmupSeconds * 1000;
    let warmupIos = 0;
    let start = -1;
    let end = Infinity;
    let completed = 0;
    let outstanding = 0;
    let rnd = 0x9e3779b9;
    const nextBlock = () => {
      rnd ^= rnd << 13;
      rnd ^= rnd >>> 17;
      rnd ^= rnd << 5;
      return (rnd >>> 0) % o.blocks;
    };
    let finished = false;
    const one = (slot: number) => {
      const t0 = performance.now();
      outstanding++;
      submit(nextBlock(), slot, (err) => {
        const t1 = performance.now();
        outstanding--;
        if (finished) return;
        if (err) {
          finished = true;
          return reject(err);
        }
        if (start >= 0) {
          completed++;
          lat.recordNs((t1 - t0) * 1e6);
        } else if (++warmupIos >= o.warmupIos && t1 >= warmEnd) {
          start = t1;
          end = t1 + o.seconds * 1000;
        }
        if (t1 < end) one(slot);
        else if (outstanding === 0) {
          finished = true;
          resolve(summary(lat, completed, (t1 - start) / 1000, warmupIos));
        }
      });
    };
    for (let slot = 0; slot < qd; slot++) one(slot);
  });
}

function summary(
  lat: LatencyRecorder,
  completed: number,
  secs: number,
  warmupIos: number,
): LoopResult {
  const tenths = (ns: number) => Math.round(ns / 100) / 10; // µs, one decimal
  return {
    iops: Math.round(completed / secs),
    meanUs: tenths(lat.meanNs),
    p99Us: lat.count ? tenths(lat.percentilesNs([0.99])[0]!) : NaN,
    warmupIos,
  };
}

/** One buffer per slot, made on first use. */
function slotBuffers(): (slot: number) => Buffer {
  const bufs: Buffer[] = [];
  return (slot) => (bufs[slot] ??= Buffer.alloc(BS));
}

/** The worker-thread backend (file.ts); reads land in the slot's buffer. */
export function backendSubmit(b: FdBackend, op: string): Submit {
  const data = Buffer.alloc(BS, 3);
  const buf = slotBuffers();
  if (op === 'read') return (blk, slot, done) => b.read(blk * BS, BS, done, buf(slot));
  if (op === 'write') return (blk, _slot, done) => b.write(blk * BS, data, false, done);
  if (op === 'write-fua') return (blk, _slot, done) => b.write(blk * BS, data, true, done);
  // write followed by flush (fdatasync): the alternative way to honour FUA
  return (blk, _slot, done) =>
    b.write(blk * BS, data, false, (err) => (err ? done(err) : b.flush(done)));
}

/** Node's libuv thread pool (fs.read / fs.write); reads land in the slot's buffer. */
export function libuvSubmit(fd: number, op: string): Submit {
  const data = Buffer.alloc(BS, 3);
  const buf = slotBuffers();
  if (op === 'read') {
    return (blk, slot, done) => {
      const into = buf(slot);
      fs.read(fd, into, 0, BS, blk * BS, (err) => done(err, into));
    };
  }
  return (blk, _slot, done) => fs.write(fd, data, 0, BS, blk * BS, (err) => done(err));
}
