/**
 * The block-device backend: the same fd + worker engine as the file backend
 * (file.ts), with size, block size and discard support read from sysfs.
 *
 * Sysfs rather than ioctls so that opening works without the native addon; the
 * addon is still what makes discard (BLKDISCARD) and offloaded zeroing
 * (BLKZEROOUT) possible, so without it caps.deallocate is false.
 */
import * as fs from 'node:fs';
import type { BigIntStats } from 'node:fs';
import { readFile, realpath, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { BackendError } from './backend.js';
import { readDeviceIdentity, type DeviceIdentity } from './device-identity.js';
import {
  fdIdentity,
  openError,
  startBackend,
  type FdBackend,
  type FdTarget,
  type IoOptions,
  type OpenedBacking,
} from './file.js';

const openAsync = promisify(fs.open);
const closeAsync = promisify(fs.close);
const fstatAsync = (fd: number, o: { bigint: true }) =>
  new Promise<BigIntStats>((resolve, reject) =>
    fs.fstat(fd, o, (err, st) => (err ? reject(err) : resolve(st))),
  );

export interface BlockBackendOptions {
  /** /dev/sdX, /dev/nvme0n1p3, /dev/disk/by-id/… (symlinks are followed). */
  path: string;
  /** O_DIRECT: bypass the page cache (reads and writes go straight to the device). */
  direct?: boolean;
  readOnly?: boolean;
  /**
   * Claim the device with O_EXCL (default true): refused while mounted or claimed, and
   * nothing else may claim it while open. false is for the benchmark, which opens one
   * device three times (its local leg, the target, the floor) and guards it itself.
   */
  exclusive?: boolean;
  io?: IoOptions;
  /**
   * Called with the device's size and identity before it is opened and again once it
   * is (what the descriptor holds): throwing refuses it. The service compares them
   * with what was configured.
   */
  verify?: (opened: OpenedBacking) => void;
}

/** What sysfs says about a device. */
export interface BlockDeviceInfo {
  name: string;
  sizeBytes: number;
  logicalBlockSize: number;
  discard: boolean;
  writeBackCache: boolean;
  readOnly: boolean;
  /** The device number all of the above belongs to. */
  rdev: bigint;
  /** Its sysfs directory (/sys/dev/block/MAJ:MIN resolved). */
  sys: string;
}

/**
 * Reads the sysfs entry of the device `path` names, found by its device number
 * (/sys/dev/block/MAJ:MIN), not by its file name: a node named like another disk (a
 * container's --device /dev/sdb:/dev/sda, a node made with mknod) must not get that
 * disk's size or cache. A partition's queue/ is its parent disk's.
 */
export async function probeBlockDevice(path: string): Promise<BlockDeviceInfo> {
  let st: BigIntStats;
  try {
    st = await stat(path, { bigint: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new BackendError('unavailable', `${path} does not exist (${code ?? 'error'})`, code);
  }
  if (!st.isBlockDevice()) {
    throw new BackendError(
      'unavailable',
      `${path} is not a block device (use kind "file" for files)`,
    );
  }
  const { major, minor } = deviceNumber(st.rdev);
  let sys: string;
  try {
    sys = await realpath(sysfsLink(st.rdev));
  } catch (err) {
    throw new BackendError(
      'unavailable',
      `${path} is block device ${major}:${minor}, which the kernel does not list in /sys/dev/block (${(err as NodeJS.ErrnoException).code}): no such device here, or sysfs is not mounted`,
    );
  }
  return { ...(await readFigures(sys)), name: basename(sys), rdev: st.rdev, sys };
}

/** The device's entry in sysfs by number: /sys/dev/block/MAJ:MIN (a link to its directory). */
function sysfsLink(rdev: bigint): string {
  const { major, minor } = deviceNumber(rdev);
  return `/sys/dev/block/${major}:${minor}`;
}

/** What sysfs says now of the device whose sysfs directory is `sys`. */
async function readFigures(sys: string): Promise<Omit<BlockDeviceInfo, 'name' | 'rdev' | 'sys'>> {
  const queue = await firstExisting([join(sys, 'queue'), join(sys, '..', 'queue')]);
  const sectors = Number(await readSys(join(sys, 'size'))); // always 512-byte units
  return {
    sizeBytes: sectors * 512,
    logicalBlockSize: Number(await readSys(join(queue, 'logical_block_size'))),
    discard: Number(await readSys(join(queue, 'discard_max_bytes'), '0')) > 0,
    writeBackCache: (await readSys(join(queue, 'write_cache'), 'write back')) === 'write back',
    readOnly: (await readSys(join(sys, 'ro'), '0')) === '1',
  };
}

/** The size served (whole blocks), once the block size is one we serve and there is a block. */
export function servedSize(
  path: string,
  f: Pick<BlockDeviceInfo, 'sizeBytes' | 'logicalBlockSize'>,
): number {
  if (f.logicalBlockSize !== 512 && f.logicalBlockSize !== 4096) {
    throw new BackendError(
      'unavailable',
      `${path} has ${f.logicalBlockSize}-byte blocks; only 512 and 4096 are supported`,
    );
  }
  if (f.sizeBytes <= 0)
    throw new BackendError(
      'unavailable',
      `${path} has no capacity (empty loop device or removed medium?)`,
    );
  return f.sizeBytes - (f.sizeBytes % f.logicalBlockSize);
}

/** Linux's dev_t: 12 bits of major and 20 of minor, split as glibc's major()/minor() do. */
export function deviceNumber(rdev: bigint): { major: number; minor: number } {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & 0xfffff000n);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & 0xffffff00n);
  return { major: Number(major), minor: Number(minor) };
}

export async function openBlockBackend(opts: BlockBackendOptions): Promise<FdBackend> {
  const info = await probeBlockDevice(opts.path);
  // checked before the open too, so that a disk that is not the configured one is not
  // even claimed (O_EXCL) while it is tried again
  opts.verify?.({
    sizeBytes: servedSize(opts.path, info),
    blockSize: info.logicalBlockSize,
    device: await readDeviceIdentity(info.sys),
  });
  const readOnly = opts.readOnly === true || info.readOnly;
  const direct = opts.direct === true;
  const { O_RDONLY, O_RDWR, O_EXCL, O_DIRECT } = fs.constants;
  const base = (readOnly ? O_RDONLY : O_RDWR) | (direct ? O_DIRECT : 0);
  // O_EXCL on a block device refuses it while mounted or claimed by another
  // exclusive user. Only the first fd claims it: a second O_EXCL open would
  // conflict with our own claim.
  const claim = opts.exclusive === false ? 0 : O_EXCL;
  const fd = await openAsync(opts.path, base | claim).catch((err: NodeJS.ErrnoException) => {
    throw openError(opts.path, err);
  });
  try {
    // The path may have been replaced between the probe and the open: what the
    // descriptor opened must be the device the figures above describe.
    const opened = await fstatAsync(fd, { bigint: true });
    if (opened.rdev !== info.rdev) {
      throw new BackendError(
        'unavailable',
        `${opts.path} changed while it was being opened (it names another device now); add it again`,
      );
    }
    // read again with the device held open (a loop device keeps its backing file, size
    // and sector size meanwhile): what was read before the open may be of a loop
    // device attached again since, with another file, size limit or sector size
    const now = await readFigures(info.sys);
    const sizeBytes = servedSize(opts.path, now);
    const device: DeviceIdentity = await readDeviceIdentity(info.sys);
    opts.verify?.({ sizeBytes, blockSize: now.logicalBlockSize, device });
    const target: FdTarget = {
      kind: 'block',
      path: opts.path,
      fd,
      identity: await fdIdentity(fd),
      device,
      sysfs: { link: sysfsLink(info.rdev), dir: info.sys },
      direct,
      blockSize: now.logicalBlockSize,
      sizeBytes,
      readOnly,
      allowDeallocate: now.discard,
      // Discard is advisory on most devices: what a discarded block reads back
      // as is not promised, so we do not claim zeroes.
      readZeroesAfterDeallocate: false,
      // Through the page cache there is always a volatile cache; with O_DIRECT
      // only the device's own cache remains.
      volatileWriteCache: !direct || now.writeBackCache,
    };
    return await startBackend(target, opts.io);
  } catch (err) {
    await closeAsync(fd).catch(() => undefined);
    throw err;
  }
}

async function readSys(path: string, fallback?: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    if (fallback !== undefined) return fallback;
    throw new BackendError(
      'unavailable',
      `cannot read ${path} (${(err as NodeJS.ErrnoException).code}); is sysfs mounted?`,
    );
  }
}

async function firstExisting(paths: string[]): Promise<string> {
  for (const p of paths) {
    try {
      await stat(p);
      return p;
    } catch {
      /* next */
    }
  }
  return paths[0]!;
}
