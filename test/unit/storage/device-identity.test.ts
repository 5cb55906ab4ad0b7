/**
 * Which disk a block device is (device-identity.ts), on real devices (root: losetup,
 * dmsetup): a loop device by its backing file, a partition by its disk and where it
 * starts, a device-mapper device by its UUID or name; and an open's verify sees it
 * before the device is claimed. Skipped with the reason when the sandbox refuses.
 */
import {
  closeSync,
  mkdirSync,
  openSync,
  realpathSync,
  renameSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceNumber, openBlockBackend } from '../../../engine/src/storage/block.js';
import type { NamespaceRow } from '../../../engine/src/persistence/target-store.js';
import { verifyBacking } from '../../../engine/src/service/backing-check.js';
import {
  readDeviceIdentity,
  sameDevice,
  type DeviceIdentity,
} from '../../../engine/src/storage/device-identity.js';
import type { FdBackend } from '../../../engine/src/storage/file.js';
import { scratchDir, tryRun } from './helpers.js';

const MiB = 1024 * 1024;
const scratch = scratchDir('devid', '/tmp');
const image = join(scratch.dir, 'disk.img');
const dmName = `branchsan-devid-${process.pid}`;
let dev: string | null = null;
let refused = '';
const dms: string[] = [];
const loops: string[] = [];
const mounts: string[] = [];

/** An MBR with one partition: sectors 2048 to the end. */
function partitioned(file: string, sectors: number): void {
  const mbr = Buffer.alloc(512);
  const entry = 446;
  mbr[entry + 4] = 0x83; // Linux
  mbr.writeUInt32LE(2048, entry + 8);
  mbr.writeUInt32LE(sectors - 2048, entry + 12);
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  const fd = openSync(file, 'r+');
  writeSync(fd, mbr, 0, 512, 0);
  closeSync(fd);
}

async function identityOf(path: string): Promise<DeviceIdentity> {
  const { major, minor } = deviceNumber(statSync(path, { bigint: true }).rdev);
  return readDeviceIdentity(realpathSync(`/sys/dev/block/${major}:${minor}`));
}

beforeAll(() => {
  truncateSync((writeFileSync(image, ''), image), 16 * MiB);
  partitioned(image, (16 * MiB) / 512);
  const r = tryRun('losetup', ['-f', '--show', '-P', image]);
  if ('refused' in r) {
    refused = r.refused;
    console.warn(`SKIPPED device identity tests: losetup refused (${refused})`);
  } else dev = r.out;
});

afterAll(() => {
  for (const name of dms) tryRun('dmsetup', ['remove', name]);
  // a loop device on a file of a mounted file system keeps it busy; one the file system
  // is mounted from is let go at the unmount (detached while in use, it is cleared then)
  for (const loop of loops) tryRun('losetup', ['-d', loop]);
  for (const at of mounts) tryRun('umount', [at]);
  if (dev) tryRun('losetup', ['-d', dev]);
  scratch.cleanup();
});

describe('device identity', () => {
  it('of a loop device is its backing file’s inode and birth time', async (ctx) => {
    if (!dev) return ctx.skip();
    const id = await identityOf(dev);
    const st = statSync(image, { bigint: true });
    const born = st.birthtimeNs > 0n ? String(st.birthtimeNs) : '-';
    expect(id).toEqual({
      key: `loopfile:${st.dev}:${st.ino}:${born}@0+0:${encodeURIComponent(image)}`,
      about: `loop device on ${image} (inode ${st.ino})`,
      weak: false,
    });
  });

  it('of a partition is its disk’s, with its number and first sector', async (ctx) => {
    if (!dev) return ctx.skip();
    const part = `${dev}p1`;
    for (let i = 0; i < 50 && !tryStat(part); i++) await new Promise((r) => setTimeout(r, 20));
    if (!tryStat(part)) return ctx.skip(); // no partition nodes here (no devtmpfs)
    const disk = await identityOf(dev);
    expect(await identityOf(part)).toEqual({
      key: `${disk.key}/part1@2048`,
      about: `partition 1 (from sector 2048) of ${disk.about}`,
      weak: false,
    });
  });

  it('of a device-mapper device is its UUID, else its name', async (ctx) => {
    if (!dev) return ctx.skip();
    const table = `0 ${(16 * MiB) / 512} linear ${dev} 0`;
    const made = tryRun('dmsetup', [
      'create',
      dmName,
      '--uuid',
      `TEST-${dmName}`,
      '--table',
      table,
    ]);
    if ('refused' in made) return ctx.skip();
    dms.push(dmName);
    expect(await identityOf(`/dev/mapper/${dmName}`)).toEqual({
      key: `dm-uuid:TEST-${dmName}`,
      about: `device-mapper UUID TEST-${dmName}`,
      weak: false,
    });
    const plain = `${dmName}-nouuid`;
    if ('refused' in tryRun('dmsetup', ['create', plain, '--table', table])) return;
    dms.push(plain);
    expect((await identityOf(`/dev/mapper/${plain}`)).key).toBe(`dm-name:${plain}`);
  });

  it('reads what this kernel may not make, from sysfs laid out as Linux does', async () => {
    // a directory per device, with the attributes the kernel has for its kind
    const sys = (dev: string, attrs: Record<string, string>): string => {
      const d = join(scratch.dir, 'sys', dev);
      for (const [name, value] of Object.entries(attrs)) {
        mkdirSync(dirname(join(d, name)), { recursive: true });
        writeFileSync(join(d, name), `${value}\n`);
      }
      mkdirSync(d, { recursive: true });
      return d;
    };
    const nvme = sys('nvme0n1', { wwid: 'eui.0025388b91b6e4a1', 'device/serial': 'S4EWNX0R' });
    expect(await readDeviceIdentity(nvme)).toEqual({
      key: 'wwid:eui.0025388b91b6e4a1',
      about: 'WWID eui.0025388b91b6e4a1',
      weak: false,
    });
    const scsi = sys('sda', { 'device/wwid': 'naa.5000c500a1b2c3d4   ' });
    expect((await readDeviceIdentity(scsi)).key).toBe('wwid:naa.5000c500a1b2c3d4');
    const part = sys('sda/sda3', { partition: '3', start: '1054720' });
    expect(await readDeviceIdentity(part)).toEqual({
      key: 'wwid:naa.5000c500a1b2c3d4/part3@1054720',
      about: 'partition 3 (from sector 1054720) of WWID naa.5000c500a1b2c3d4',
      weak: false,
    });
    const lv = sys('dm-0', { 'dm/uuid': 'LVM-abc', 'dm/name': 'vg-lv' });
    expect((await readDeviceIdentity(lv)).key).toBe('dm-uuid:LVM-abc');
    const virtio = sys('vdb', { serial: 'vol-7', 'device/model': '' });
    expect(await readDeviceIdentity(virtio)).toEqual({
      key: 'serial::vol-7',
      about: 'serial number vol-7',
      weak: false,
    });
    // an empty serial identifies nothing: only the size can be compared then
    const bare = sys('vdc', { serial: '', size: '2048' });
    expect(await readDeviceIdentity(bare)).toEqual({
      key: 'none',
      about: 'vdc, which has no WWID, serial number or UUID',
      weak: true,
    });
  });

  it('is given to verify before the device is opened, and again once it is', async (ctx) => {
    if (!dev) return ctx.skip();
    const seen: (DeviceIdentity | undefined)[] = [];
    const b = (await openBlockBackend({
      path: dev,
      verify: (o) => void seen.push(o.device),
    })) as FdBackend;
    try {
      expect(seen).toHaveLength(2);
      expect(seen[1]).toEqual(await identityOf(dev));
      expect(b.device).toEqual(seen[1]);
    } finally {
      await b.close();
    }
    // refused before the open: the device is not claimed, so an exclusive open succeeds
    const refusal = new Error('not this disk');
    await expect(
      openBlockBackend({
        path: dev,
        verify: () => {
          throw refusal;
        },
      }),
    ).rejects.toBe(refusal);
    const again = await openBlockBackend({ path: dev });
    await again.close();
  });
});

describe('the backing file of a loop device', () => {
  // Before, a loop device's identity was its backing file's path and inode number: the
  // file renamed, or attached through another mount of its directory, was refused as
  // another disk; and a new file given the inode number of a deleted one under the same
  // name passed as the old volume.
  const attach = (file: string, ...opts: string[]): string | null => {
    const r = tryRun('losetup', [...opts, '-f', '--show', file]);
    if ('refused' in r) return null;
    loops.push(r.out);
    return r.out;
  };
  const detach = (loop: string): void => {
    tryRun('losetup', ['-d', loop]);
    loops.splice(loops.indexOf(loop), 1);
  };
  const newFile = (file: string): string => {
    truncateSync((writeFileSync(file, ''), file), 4 * MiB);
    return file;
  };
  /** A small ext4 file system of its own, mounted: inode numbers are handed out again there. */
  const fileSystem = (name: string, ...mkfs: string[]): string | null => {
    const img = newFile(join(scratch.dir, `${name}.fs`));
    truncateSync(img, 32 * MiB);
    if ('refused' in tryRun('mkfs.ext4', ['-q', ...mkfs, img])) return null;
    const loop = attach(img);
    if (!loop) return null;
    const at = join(scratch.dir, name);
    mkdirSync(at);
    if ('refused' in tryRun('mount', [loop, at])) return null;
    mounts.unshift(at);
    return at;
  };

  it('is the same file renamed, or attached through another mount of its directory', async (ctx) => {
    if (!dev) return ctx.skip();
    const dir = join(scratch.dir, 'vols');
    mkdirSync(dir);
    const file = newFile(join(dir, 'a.img'));
    const loop = attach(file)!;
    const was = await identityOf(loop);
    renameSync(file, join(dir, 'b.img'));
    const renamed = await identityOf(loop);
    expect(renamed.about).toContain(join(dir, 'b.img'));
    expect(sameDevice(was, renamed)).toBe(true);
    // a record of an older engine (path and inode) is its file under the same name only
    const older = { ...was, key: `loop:${file}:${statSync(join(dir, 'b.img')).ino}@0+0` };
    expect(sameDevice(older, was)).toBe(true);
    expect(sameDevice(older, renamed)).toBe(false);
    // and another file is another volume, also at the same place in it
    detach(loop);
    const other = attach(newFile(join(dir, 'c.img')))!;
    expect(sameDevice(renamed, await identityOf(other))).toBe(false);
    detach(other);
    const ranged = attach(join(dir, 'b.img'), '--offset', String(MiB))!;
    expect(sameDevice(renamed, await identityOf(ranged))).toBe(false);
    detach(ranged);

    const view = join(scratch.dir, 'view');
    mkdirSync(view);
    if ('refused' in tryRun('mount', ['--bind', dir, view])) return ctx.skip();
    mounts.unshift(view);
    const viaBind = attach(join(view, 'b.img'))!;
    const seen = await identityOf(viaBind);
    expect(seen.about).toContain(join(view, 'b.img'));
    expect(sameDevice(renamed, seen)).toBe(true);
    detach(viaBind);
  });

  it('is not a new file given the inode number of a deleted one', async (ctx) => {
    if (!dev) return ctx.skip();
    const fs = fileSystem('ext4');
    if (!fs) return ctx.skip();
    const file = newFile(join(fs, 'vol.img'));
    const first = statSync(file, { bigint: true });
    let loop = attach(file)!;
    const was = await identityOf(loop);
    detach(loop);
    unlinkSync(file);
    newFile(file);
    const second = statSync(file, { bigint: true });
    expect(second.ino).toBe(first.ino); // what ext4 does: the lowest free inode
    if (second.birthtimeNs === first.birthtimeNs) return ctx.skip(); // one clock tick
    loop = attach(file)!;
    expect(sameDevice(was, await identityOf(loop))).toBe(false);
    detach(loop);
  });

  it('without a birth time is known by its path too, as before', async (ctx) => {
    if (!dev) return ctx.skip();
    const fs = fileSystem('ext4-small-inodes', '-I', '128'); // no room for a birth time
    if (!fs) return ctx.skip();
    const file = newFile(join(fs, 'vol.img'));
    expect(statSync(file, { bigint: true }).birthtimeNs).toBe(0n);
    const loop = attach(file)!;
    const was = await identityOf(loop);
    expect(sameDevice(was, await identityOf(loop))).toBe(true);
    renameSync(file, join(fs, 'moved.img'));
    expect(sameDevice(was, await identityOf(loop))).toBe(false);
    detach(loop);
  });
});

describe('a SCSI disk without a WWID', () => {
  // Before, a SCSI disk that shows no WWID (a QEMU scsi-hd without wwn=, many USB and
  // RAID bridges) was known by its size only, though its Unit Serial Number VPD page
  // (80h) names it. This machine has no SCSI (no scsi_debug): sysfs as Linux lays it out.
  const disk = (name: string, pg80: Buffer | null, attrs: Record<string, string> = {}): string => {
    const d = join(scratch.dir, 'sys-scsi', name);
    mkdirSync(join(d, 'device'), { recursive: true });
    writeFileSync(join(d, 'device', 'model'), 'QEMU HARDDISK   \n');
    writeFileSync(join(d, 'device', 'vendor'), 'QEMU    \n');
    if (pg80) writeFileSync(join(d, 'device', 'vpd_pg80'), pg80);
    for (const [attr, value] of Object.entries(attrs)) writeFileSync(join(d, attr), value);
    return d;
  };
  /** A Unit Serial Number page: peripheral byte, page code, length, the serial. */
  const page80 = (serial: string, code = 0x80): Buffer => {
    const s = Buffer.from(serial, 'latin1');
    const head = Buffer.from([0, code, s.length >> 8, s.length & 0xff]);
    return Buffer.concat([head, s]);
  };

  it('is known by the serial number of its VPD page 80h', async () => {
    expect(await readDeviceIdentity(disk('sdb', page80('   vol-42 ')))).toEqual({
      key: 'serial:QEMU HARDDISK:vol-42',
      about: 'QEMU QEMU HARDDISK serial number vol-42',
      weak: false,
    });
    // a partition of it, as of any disk
    const part = join(disk('sdc', page80('vol-43')), 'sdc1');
    mkdirSync(part);
    writeFileSync(join(part, 'partition'), '1\n');
    writeFileSync(join(part, 'start'), '2048\n');
    expect((await readDeviceIdentity(part)).key).toBe('serial:QEMU HARDDISK:vol-43/part1@2048');
    // a WWID comes first
    const both = disk('sdd', page80('vol-44'));
    writeFileSync(join(both, 'device', 'wwid'), 'naa.6001405abcdef\n');
    expect((await readDeviceIdentity(both)).key).toBe('wwid:naa.6001405abcdef');
  });

  it('that names nothing there is still known by its size only', async () => {
    const none = (name: string, pg80: Buffer | null) =>
      readDeviceIdentity(disk(name, pg80)).then((id) => id.weak);
    expect(await none('sde', null)).toBe(true);
    expect(await none('sdf', page80(''))).toBe(true);
    expect(await none('sdg', page80('        \0\0'))).toBe(true);
    // what bridges answer for any disk: one character over and over
    expect(await none('sdh', page80('000000000000'))).toBe(true);
    expect(await none('sdi', page80('vol-45', 0x83))).toBe(true); // not page 80h
    expect(await none('sdj', page80('vol-\x0146'))).toBe(true); // not text
    expect(await none('sdk', page80('vol-47').subarray(0, 6))).toBe(true); // cut short
  });
});

describe('a dm-crypt mapping', () => {
  // cryptsetup names a mapping's device-mapper UUID CRYPT-<type>-<volume UUID>-<mapping
  // name>; the same volume opened under another name (by hand, another crypttab) was
  // refused as another disk. This kernel has no device-mapper: sysfs as Linux lays it out.
  const luks = '0f1e2d3c4b5a69788796a5b4c3d2e1f0';
  const mapping = (name: string, uuid: string): Promise<DeviceIdentity> => {
    const d = join(scratch.dir, 'sys-crypt', name);
    mkdirSync(join(d, 'dm'), { recursive: true });
    writeFileSync(join(d, 'dm', 'uuid'), `${uuid}\n`);
    writeFileSync(join(d, 'dm', 'name'), `${name}\n`);
    return readDeviceIdentity(d);
  };

  it('is the same volume under another name, and not another volume under the same name', async () => {
    const vault = await mapping('vault', `CRYPT-LUKS2-${luks}-vault`);
    expect(vault.about).toBe(`device-mapper UUID CRYPT-LUKS2-${luks}-vault`);
    expect(sameDevice(vault, await mapping('luks-a', `CRYPT-LUKS2-${luks}-luks-a`))).toBe(true);
    const other = `CRYPT-LUKS2-${luks.replace('0f', '1f')}-vault`;
    expect(sameDevice(vault, await mapping('vault2', other))).toBe(false);
    // nor the same UUID as another kind of volume
    expect(sameDevice(vault, await mapping('bl', `CRYPT-BITLK-${luks}-vault`))).toBe(false);
    // a plain mapping has no UUID of its volume: its name is all there is
    const plainA = await mapping('pa', `CRYPT-PLAIN-${luks}-a`);
    expect(sameDevice(plainA, await mapping('pb', `CRYPT-PLAIN-${luks}-b`))).toBe(false);
    expect(sameDevice(plainA, await mapping('pa2', `CRYPT-PLAIN-${luks}-a`))).toBe(true);
  });

  it('recorded under one name is served under another', () => {
    const was = { key: `dm-uuid:CRYPT-LUKS2-${luks}-vault`, about: 'x', weak: false };
    const now = { key: `dm-uuid:CRYPT-LUKS2-${luks}-luks-${luks}`, about: 'y', weak: false };
    const ns: NamespaceRow = {
      nsid: 1,
      backendKind: 'block',
      path: '/dev/mapper/luks-x',
      sizeBytes: 8 * MiB,
      blockSize: 512,
      nguid: '0'.repeat(32),
      uuid: '00000000-0000-0000-0000-000000000000',
      anaGroup: 1,
      device: JSON.stringify(was),
      io: {},
    };
    const verify = verifyBacking('nqn.2026-01.com.example:crypt', ns);
    expect(() => verify({ sizeBytes: 8 * MiB, blockSize: 512, device: now })).not.toThrow();
    const other = { ...now, key: `dm-uuid:CRYPT-LUKS1-${luks}-vault` };
    expect(() => verify({ sizeBytes: 8 * MiB, blockSize: 512, device: other })).toThrow(
      'is not the disk namespace 1',
    );
  });
});

describe('the check once the device is open', () => {
  // Before, the check after the open was given the size and block size read before it:
  // a loop device attached again meanwhile (another size limit or sector size) was
  // checked, and served, with figures it no longer had.
  it('is given the size and block size of the device the descriptor holds', async (ctx) => {
    if (!dev) return ctx.skip();
    const file = join(scratch.dir, 'again.img');
    truncateSync((writeFileSync(file, ''), file), 16 * MiB);
    const r = tryRun('losetup', ['-f', '--show', file]);
    if ('refused' in r) return ctx.skip();
    const loop = r.out;
    loops.push(loop);
    const seen: { sizeBytes: number; blockSize: number }[] = [];
    const b = (await openBlockBackend({
      path: loop,
      verify: ({ sizeBytes, blockSize }) => {
        seen.push({ sizeBytes, blockSize });
        if (seen.length > 1) return;
        // between the check before the open and the open: the same name, other figures
        tryRun('losetup', ['-d', loop]);
        const again = tryRun('losetup', ['-b', '4096', '--sizelimit', String(4 * MiB), loop, file]);
        if ('refused' in again) throw new Error(again.refused);
      },
    })) as FdBackend;
    try {
      expect(seen).toEqual([
        { sizeBytes: 16 * MiB, blockSize: 512 },
        { sizeBytes: 4 * MiB, blockSize: 4096 },
      ]);
      expect([b.sizeBytes, b.blockSize]).toEqual([4 * MiB, 4096]);
    } finally {
      await b.close();
    }
  });
});

function tryStat(p: string): boolean {
  try {
    return statSync(p).isBlockDevice();
  } catch {
    return false;
  }
}
