/**
 * The block-device backend against a real loop device (root only). When the
 * sandbox refuses losetup the tests are skipped with the reason printed.
 */
import {
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { basename, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { BlockBackend } from '../../../engine/src/storage/backend.js';
import {
  deviceNumber,
  openBlockBackend,
  probeBlockDevice,
} from '../../../engine/src/storage/block.js';
import type { FdBackend } from '../../../engine/src/storage/file.js';
import { openBackend } from '../../../engine/src/storage/open.js';
import {
  deallocate,
  failure,
  flush,
  prng,
  randomBuffer,
  read,
  scratchDir,
  tryRun,
  write,
  writeZeroes,
} from './helpers.js';
import { NATIVE_BUILT } from '../../helpers/engine.js';

const MiB = 1024 * 1024;
const scratch = scratchDir('block', '/tmp');
const image = join(scratch.dir, 'disk.img');
let dev: string | null = null;
let refused = '';
const opened: BlockBackend[] = [];
/** Opens and remembers, so a failed test cannot leave the device claimed. */
async function openDev(opts: Parameters<typeof openBlockBackend>[0]): Promise<BlockBackend> {
  const b = await openBlockBackend(opts);
  opened.push(b);
  return b;
}
afterEach(async () => {
  await Promise.all(opened.splice(0).map((b) => b.close()));
});

beforeAll(() => {
  truncateSync((writeFileSync(image, ''), image), 32 * MiB);
  const r = tryRun('losetup', ['-f', '--show', image]);
  if ('refused' in r) {
    refused = r.refused;
    console.warn(`SKIPPED block-device tests: losetup refused (${refused})`);
  } else dev = r.out;
});

afterAll(() => {
  if (dev) tryRun('losetup', ['-d', dev]);
  scratch.cleanup();
});

describe('block device backend (loop device)', () => {
  it('reads size, block size and discard support from sysfs', async (ctx) => {
    if (!dev) return ctx.skip();
    const info = await probeBlockDevice(dev);
    expect(info).toMatchObject({ sizeBytes: 32 * MiB, logicalBlockSize: 512, readOnly: false });
    const b = await openBackend({ kind: 'block', path: dev });
    expect(b.kind).toBe('block');
    expect(b.sizeBytes).toBe(32 * MiB);
    expect(b.caps.deallocate).toBe(NATIVE_BUILT && info.discard);
    expect(b.caps.readZeroesAfterDeallocate).toBe(false);
    await b.close();
  });

  const modes = [
    { name: 'page cache', direct: false, native: true },
    { name: 'page cache, no addon', direct: false, native: false },
    { name: 'O_DIRECT', direct: true, native: true },
    { name: 'O_DIRECT, no addon: alignment probed', direct: true, native: false },
  ];
  for (const { name, direct, native } of modes) {
    it(`writes, reads, flushes, zeroes and discards (${name})`, async (ctx) => {
      if (!dev) return ctx.skip();
      const b = await openDev({ path: dev, direct, io: { native } });
      if (!native) expect(b.caps.deallocate).toBe(false);
      // Cached reads run inline only with NOWAIT (the addon), never on a guess: the
      // device node lives on devtmpfs, which must not pass for a file in RAM.
      const inline = (b as FdBackend).inlineReads;
      expect(inline).toBe(!direct && native && NATIVE_BUILT ? 'nowait' : null);
      const data = randomBuffer(prng(direct ? 2 : 1), 256 * 1024);
      await write(b, 4096, data);
      await write(b, 8 * MiB, data, true);
      await flush(b);
      expect((await read(b, 4096, data.length)).equals(data)).toBe(true);
      expect((await read(b, 8 * MiB, data.length)).equals(data)).toBe(true);
      await writeZeroes(b, 8 * MiB, 64 * 1024, true);
      expect((await read(b, 8 * MiB, 64 * 1024)).equals(Buffer.alloc(64 * 1024))).toBe(true);
      await deallocate(b, 16 * MiB, MiB); // advisory: only checks that it is accepted
      expect((await failure(read(b, 32 * MiB, 512))).kind).toBe('out-of-range');
      await b.close();
      // Survives close and reopen.
      const again = await openDev({ path: dev, direct, io: { native } });
      expect((await read(again, 4096 + 512, 4096)).equals(data.subarray(512, 4608))).toBe(true);
      await again.close();
    });
  }

  it("sizes a device by its number, not by a node's name that another disk has", async (ctx) => {
    // A container's --device /dev/loopN:/dev/vda, or a node made with mknod: before, the
    // name was looked up in /sys/class/block and the other disk's size and cache served.
    if (!dev) return ctx.skip();
    const { major, minor } = deviceNumber(statSync(dev, { bigint: true }).rdev);
    const other = readdirSync('/sys/class/block').find((n) => !n.startsWith('loop'));
    if (!other) return ctx.skip(); // no other disk to be named after
    const nodes = join(scratch.dir, 'nodes');
    mkdirSync(nodes, { recursive: true });
    const alias = join(nodes, other);
    const made = tryRun('mknod', [alias, 'b', String(major), String(minor)]);
    if ('refused' in made) return ctx.skip();
    expect(Number(readFileSync(`/sys/class/block/${other}/size`, 'utf8')) * 512).not.toBe(32 * MiB);
    expect(await probeBlockDevice(alias)).toMatchObject({
      name: basename(dev),
      sizeBytes: 32 * MiB,
    });
    const b = await openDev({ path: alias });
    expect(b.sizeBytes).toBe(32 * MiB);
  });

  it('splits device numbers as glibc does', () => {
    expect(deviceNumber(0x0801n)).toEqual({ major: 8, minor: 1 }); // sda1
    expect(deviceNumber(0x10300n)).toEqual({ major: 259, minor: 0 }); // nvme0n1
    // makedev(0x1003, 0x12345): minor's high bits sit at 20..31, major's at 44 and up
    expect(deviceNumber(0x1000_1230_0345n)).toEqual({
      major: 0x1003,
      minor: 0x12345,
    });
  });

  it('refuses a second exclusive user and a regular file', async (ctx) => {
    if (!dev) return ctx.skip();
    const b = await openDev({ path: dev });
    const busy = await failure(openBlockBackend({ path: dev }));
    expect(busy.message).toMatch(/EBUSY.*in use/);
    await b.close();
    expect((await failure(openBlockBackend({ path: image }))).message).toMatch(
      /not a block device/,
    );
  });
});
