/**
 * A full file system, for real: a 1 MiB tmpfs holding a 4 MiB sparse volume.
 * Writing past the space must fail with 'no-space', keep earlier data intact,
 * and leave the backend (and the process) serving.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openFileBackend } from '../../../engine/src/storage/file.js';
import { failure, prng, randomBuffer, read, scratchDir, tryRun, write } from './helpers.js';

const scratch = scratchDir('enospc', '/tmp');
const mnt = join(scratch.dir, 'mnt');
let refused: string | null = null;

beforeAll(() => {
  mkdirSync(mnt);
  const r = tryRun('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
  if ('refused' in r) {
    refused = r.refused;
    console.warn(`SKIPPED ENOSPC test: cannot mount a tiny tmpfs (${refused})`);
  }
});

afterAll(() => {
  if (!refused) tryRun('umount', [mnt]);
  scratch.cleanup();
});

describe('file backend on a full file system', () => {
  it('reports no-space with advice, keeps earlier data, and keeps serving', async (ctx) => {
    if (refused) return ctx.skip();
    for (const native of [true, false]) {
      const path = join(mnt, `full-${native}.img`);
      const b = await openFileBackend({
        path,
        sizeBytes: 4 * 1024 * 1024,
        create: true,
        io: { native },
      });
      const rand = prng(42);
      const chunk = 64 * 1024;
      const written: Buffer[] = [];
      let err = null;
      for (let off = 0; off < b.sizeBytes; off += chunk) {
        const data = randomBuffer(rand, chunk);
        err = await write(b, off, data, off % (2 * chunk) === 0).then(
          () => null,
          (e: unknown) => e,
        );
        if (err) break;
        written.push(data);
      }
      expect(err, 'the 1 MiB file system should fill up').not.toBeNull();
      const e = await failure(Promise.reject(err));
      expect(e.kind).toBe('no-space');
      expect(e.errno).toBe('ENOSPC');
      expect(e.message).toMatch(new RegExp(`backing file ${path}.*\\(ENOSPC\\).*free space`));
      expect(written.length).toBeGreaterThan(4);
      for (const [i, data] of written.entries()) {
        expect((await read(b, i * chunk, chunk)).equals(data)).toBe(true);
      }
      // Still serving: another full-disk write fails the same way, reads work.
      expect((await failure(write(b, b.sizeBytes - chunk, Buffer.alloc(chunk, 1)))).kind).toBe(
        'no-space',
      );
      await b.close();
      tryRun('rm', ['-f', path]);
    }
  });
});
