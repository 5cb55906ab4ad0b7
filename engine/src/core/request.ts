/**
 * Helpers that turn a handler into the seam's ParseResult while keeping the promise
 * "every command ends in exactly one completion": a thrown exception becomes
 * INTERNAL, a second completion is dropped, and a successful read must carry exactly
 * the parsed length.
 */
import { DNR, SC } from '../protocol/status.js';
import type { Completion, DataDirection, ParseResult } from './seam.js';

export type Handler = (data: Buffer | null, done: Completion) => void;

/** Complete at parse time. */
export function fail(status: number, dw0?: number): ParseResult {
  return dw0 === undefined ? { kind: 'error', status } : { kind: 'error', status, dw0 };
}

/** Frequent rejections, preallocated: parse must not allocate to say no. */
export const INVALID_FIELD = fail(SC.INVALID_FIELD | DNR);
export const INVALID_OPCODE = fail(SC.INVALID_OPCODE | DNR);
export const INVALID_NS = fail(SC.INVALID_NS | DNR);
export const SGL_LENGTH = fail(SC.SGL_INVALID_DATA_LEN | DNR);
export const CMD_SEQ = fail(SC.CMD_SEQ_ERROR | DNR);

export function execute(dir: DataDirection, length: number, handler: Handler): ParseResult {
  return {
    kind: 'exec',
    dir,
    length,
    exec(data: Buffer | null, done: Completion): void {
      const once = completeOnce(dir, length, done);
      try {
        handler(data, once);
      } catch {
        once(SC.INTERNAL);
      }
    },
  };
}

/** A command with no data that completes with `status`, `dw0` and `dw1` when executed. */
export function immediate(status: number, dw0 = 0, dw1 = 0): ParseResult {
  return execute('none', 0, (_d, done) => done(status, dw0, dw1));
}

/** A read-direction command of `length` bytes whose data is built when it executes. */
export function replyWith(length: number, build: () => Buffer): ParseResult {
  return execute('c2h', length, (_d, done) => done(SC.SUCCESS, 0, 0, build()));
}

function completeOnce(dir: DataDirection, length: number, done: Completion): Completion {
  let completed = false;
  return (status, dw0 = 0, dw1 = 0, readData) => {
    if (completed) return;
    completed = true;
    if (status !== SC.SUCCESS) return done(status, dw0 >>> 0, dw1 >>> 0);
    if (dir === 'c2h' && readData?.length !== length) return done(SC.INTERNAL);
    done(status, dw0 >>> 0, dw1 >>> 0, dir === 'c2h' ? readData : undefined);
  };
}
