/** The factory: one spec shape per backend kind. */
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BackendError } from '../../../engine/src/storage/backend.js';
import { openBackend } from '../../../engine/src/storage/open.js';
import { failure, read, scratchDir, write } from './helpers.js';

const scratch = scratchDir('open');
afterAll(() => scratch.cleanup());

describe('openBackend', () => {
  it('opens memory, creates and reopens files, and rejects bad specs with BackendError', async () => {
    const mem = await openBackend({ kind: 'memory', sizeBytes: 1 << 20 });
    expect(mem.kind).toBe('memory');
    await mem.close();

    const path = join(scratch.dir, 'a.img');
    const created = await openBackend({
      kind: 'file',
      path,
      sizeBytes: 1 << 20,
      create: true,
      blockSize: 4096,
    });
    expect([created.kind, created.blockSize, created.sizeBytes]).toEqual(['file', 4096, 1 << 20]);
    await write(created, 4096, Buffer.alloc(4096, 5));
    await created.close();
    const reopened = await openBackend({ kind: 'file', path, blockSize: 4096 });
    expect((await read(reopened, 4096, 4096))[4095]).toBe(5);
    await reopened.close();

    const noSize = await failure(
      openBackend({ kind: 'file', path: join(scratch.dir, 'b.img'), create: true }),
    );
    expect(noSize).toBeInstanceOf(BackendError);
    expect(noSize.message).toMatch(/size undefined is not a positive multiple/);
    const notBlock = await failure(openBackend({ kind: 'block', path }));
    expect(notBlock.message).toMatch(/not a block device/);
  });
});
