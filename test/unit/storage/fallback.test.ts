/**
 * Without the native addon (not built, or BRANCHSAN_NATIVE=off): capabilities
 * say no deallocate / write-zeroes offload, and both still produce zeroes by
 * writing them.
 */
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openFileBackend } from '../../../engine/src/storage/file.js';
import {
  deallocate,
  flush,
  prng,
  randomBuffer,
  read,
  scratchDir,
  write,
  writeZeroes,
} from './helpers.js';

const MiB = 1024 * 1024;
const scratch = scratchDir('fallback');
afterAll(() => scratch.cleanup());

describe('file backend without the native addon', () => {
  for (const how of ['option', 'env'] as const) {
    it(`declares no offloads and still zeroes (forced by ${how})`, async () => {
      const path = join(scratch.dir, `${how}.img`);
      if (how === 'env') process.env.BRANCHSAN_NATIVE = 'off';
      try {
        const b = await openFileBackend({
          path,
          sizeBytes: 4 * MiB,
          create: true,
          io: how === 'option' ? { native: false } : {},
        });
        expect(b.caps).toMatchObject({
          deallocate: false,
          writeZeroes: false,
          readZeroesAfterDeallocate: true,
        });
        expect(b.nativeNote).toMatch(/disabled/);
        expect(b.pointerIo).toBe(false); // every read and write goes through the slots
        const data = randomBuffer(prng(8), 2 * MiB);
        await write(b, 0, data);
        await deallocate(b, 0, MiB);
        await writeZeroes(b, MiB, 512 * 1024, true);
        await flush(b);
        const got = await read(b, 0, 2 * MiB);
        expect(got.subarray(0, 1.5 * MiB).equals(Buffer.alloc(1.5 * MiB))).toBe(true);
        expect(got.subarray(1.5 * MiB).equals(data.subarray(1.5 * MiB))).toBe(true);
        // Zeroes were written, not punched: the blocks stay allocated.
        expect(statSync(path).blocks).toBeGreaterThanOrEqual((2 * MiB) / 512);
        await b.close();
      } finally {
        delete process.env.BRANCHSAN_NATIVE;
      }
    });
  }

  it('names a missing addon file in the note and falls back', async () => {
    const b = await openFileBackend({
      path: join(scratch.dir, 'missing.img'),
      sizeBytes: MiB,
      create: true,
      io: { native: '/nonexistent/branchsan_native.node' },
    });
    expect(b.caps.deallocate).toBe(false);
    expect(b.nativeNote).toMatch(/not loaded/);
    await b.close();
  });
});
