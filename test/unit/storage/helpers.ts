/** Promise wrappers and scratch files for the storage backend tests. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BackendError, BlockBackend } from '../../../engine/src/storage/backend.js';

export function read(b: BlockBackend, offset: number, length: number): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    b.read(offset, length, (e, d) => (e ? reject(e) : resolve(d!))),
  );
}

export function write(b: BlockBackend, offset: number, data: Buffer, fua = false): Promise<void> {
  return new Promise((resolve, reject) =>
    b.write(offset, data, fua, (e) => (e ? reject(e) : resolve())),
  );
}

export function flush(b: BlockBackend): Promise<void> {
  return new Promise((resolve, reject) => b.flush((e) => (e ? reject(e) : resolve())));
}

export function writeZeroes(
  b: BlockBackend,
  offset: number,
  length: number,
  fua = false,
): Promise<void> {
  return new Promise((resolve, reject) =>
    b.writeZeroes(offset, length, fua, (e) => (e ? reject(e) : resolve())),
  );
}

export function deallocate(b: BlockBackend, offset: number, length: number): Promise<void> {
  return new Promise((resolve, reject) =>
    b.deallocate(offset, length, (e) => (e ? reject(e) : resolve())),
  );
}

/** Resolves with the BackendError an operation fails with (rejects if it succeeds). */
export async function failure(p: Promise<unknown>): Promise<BackendError> {
  try {
    await p;
  } catch (err) {
    return err as BackendError;
  }
  throw new Error('expected the operation to fail');
}

/** A deterministic PRNG (xorshift32) so failures reproduce. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x100000000;
  };
}

export function randomBuffer(rand: () => number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) b[i] = (rand() * 256) | 0;
  return b;
}

/** A fresh directory under /dev/shm (tmpfs: fast, supports hole punching). */
export function scratchDir(
  prefix: string,
  base = '/dev/shm',
): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(base ?? tmpdir(), `branchsan-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Runs a command as root helpers do; returns null (with the reason) when refused. */
export function tryRun(cmd: string, args: string[]): { out: string } | { refused: string } {
  try {
    return {
      out: execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim(),
    };
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    return { refused: (e.stderr || e.message).trim() };
  }
}
