/**
 * Which disk a block device is, as sysfs tells it: what stays the same when its
 * /dev name does not (sdb becoming sda after a reboot, loop0 attached to another
 * file). The service records it when a namespace is added and compares it at every
 * open, so that a name that moved to another disk is not served as the old volume.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface DeviceIdentity {
  /** What is compared (sameDevice): the same disk (or loop backing file, or partition of it). */
  key: string;
  /** The same for a person: "WWID naa.5000…", "loop device on /var/tmp/a.img (inode 12)". */
  about: string;
  /** Nothing identifies the device (no WWID, serial, UUID): only its size can be compared. */
  weak: boolean;
}

/** The identity of the device whose sysfs directory (/sys/dev/block/MAJ:MIN, resolved) is `sys`. */
export async function readDeviceIdentity(sys: string): Promise<DeviceIdentity> {
  const partition = await readAttr(join(sys, 'partition'));
  if (partition === null) return wholeDevice(sys);
  // a partition has no identity of its own in sysfs: its disk's, its number and where it starts
  const disk = await wholeDevice(dirname(sys));
  const start = (await readAttr(join(sys, 'start'))) ?? '?';
  return {
    key: `${disk.key}/part${partition}@${start}`,
    about: `partition ${partition} (from sector ${start}) of ${disk.about}`,
    weak: disk.weak,
  };
}

async function wholeDevice(sys: string): Promise<DeviceIdentity> {
  const attr = (name: string) => readAttr(join(sys, name));
  const dmUuid = await attr('dm/uuid');
  if (dmUuid) return strong(`dm-uuid:${dmUuid}`, `device-mapper UUID ${dmUuid}`);
  const dmName = await attr('dm/name');
  if (dmName) return strong(`dm-name:${dmName}`, `device-mapper device ${dmName}`);
  const mdUuid = await attr('md/uuid');
  if (mdUuid) return strong(`md-uuid:${mdUuid}`, `MD RAID UUID ${mdUuid}`);
  const backing = await attr('loop/backing_file');
  if (backing) {
    const st = await stat(backing, { bigint: true }).catch(() => null);
    const [dev, ino] = st ? [String(st.dev), String(st.ino)] : ['?', '?'];
    const born = st && st.birthtimeNs > 0n ? String(st.birthtimeNs) : '-';
    const offset = (await attr('loop/offset')) ?? '0';
    const limit = (await attr('loop/sizelimit')) ?? '0';
    const range = offset === '0' && limit === '0' ? '' : `, offset ${offset}, size limit ${limit}`;
    return strong(
      `loopfile:${dev}:${ino}:${born}@${offset}+${limit}:${encodeURIComponent(backing)}`,
      `loop device on ${backing} (inode ${ino}${range})`,
    );
  }
  for (const name of ['wwid', 'device/wwid']) {
    const wwid = await attr(name);
    if (wwid) return strong(`wwid:${wwid}`, `WWID ${wwid}`);
  }
  for (const name of ['serial', 'device/serial']) {
    const serial = await attr(name);
    if (!serial) continue;
    const model = (await attr('device/model')) ?? '';
    const what = model ? `${model} serial number ${serial}` : `serial number ${serial}`;
    return strong(`serial:${model}:${serial}`, what);
  }
  const vpdSerial = unitSerialNumber(await readBinary(join(sys, 'device', 'vpd_pg80')));
  if (vpdSerial) {
    // a SCSI disk the kernel shows no WWID of (a QEMU scsi-hd without wwn=, many USB
    // and RAID bridges). Its page 83h is not read: the kernel makes device/wwid of
    // every designator there that names the disk; what it leaves (vendor-specific
    // ones, QEMU's is the drive's name in every VM; target ports) names no disk.
    const model = (await attr('device/model')) ?? '';
    const vendor = (await attr('device/vendor')) ?? '';
    const who = [vendor, model].filter((w) => w !== '').join(' ');
    return strong(
      `serial:${model}:${vpdSerial}`,
      `${who ? `${who} ` : ''}serial number ${vpdSerial}`,
    );
  }
  return {
    key: 'none',
    about: `${basename(sys)}, which has no WWID, serial number or UUID`,
    weak: true,
  };
}

/** Whether identities `was` and `now` name the same disk, loop backing file or partition. */
export function sameDevice(was: DeviceIdentity, now: DeviceIdentity): boolean {
  const [a, b] = [loopKey(was.key), loopKey(now.key)];
  if (a && b) return a.part === b.part && sameLoopFile(a, b);
  return comparable(was.key) === comparable(now.key);
}

/** A loop device's backing file as its key tells it (older engines: path, inode and range). */
interface LoopKey {
  dev: string;
  ino: string;
  /** Its birth time in ns; '-' when the file system keeps none (or an older engine's key). */
  born: string;
  /** Offset and size limit of the loop device into the file. */
  range: string;
  path: string;
  /** '/partN@START' of a partition of the loop device; '' for the whole device. */
  part: string;
}

function loopKey(key: string): LoopKey | null {
  const [, whole, part = ''] = /^(.*?)((?:\/part\d+@(?:\d+|\?))?)$/.exec(key)!;
  const now = /^loopfile:(\d+|\?):(\d+|\?):(\d+|-)@(\d+\+\d+):(.*)$/.exec(whole!);
  if (now) {
    const [, dev, ino, born, range, path] = now as unknown as string[];
    return { dev: dev!, ino: ino!, born: born!, range: range!, path: decode(path!), part };
  }
  const old = /^loop:(.*):(\d+|\?)@(\d+\+\d+)$/.exec(whole!);
  if (!old) return null;
  return { dev: '?', ino: old[2]!, born: '-', range: old[3]!, path: old[1]!, part };
}

/**
 * The same backing file, at the same place in it. A file is known by its inode and
 * birth time, so that it stays the volume when renamed or attached through another
 * mount of its directory (a bind mount), while an inode number that was freed and
 * given to a new file does not pass: the new one was born later. Its file system too,
 * or where the old one was: its device number can change at a reboot (disks found in
 * another order), and a copy of the file system (a snapshot) mounted elsewhere has the
 * same inodes and birth times. Without a birth time (a file system that keeps none, a
 * key of an older engine) or an inode (a path the engine cannot see, as in another
 * mount namespace) the path stands in as before: a renamed file is refused until
 * accepted. Left: an inode given to a new file within one tick of the file system's
 * clock (a few ms) has the old birth time, and passes under any name on that file
 * system (before: under the same name, at any time).
 */
function sameLoopFile(a: LoopKey, b: LoopKey): boolean {
  if (a.range !== b.range || a.ino !== b.ino) return false;
  if (a.born !== '-' && b.born !== '-') {
    return a.born === b.born && (a.dev === b.dev || a.path === b.path);
  }
  return a.path === b.path;
}

function decode(p: string): string {
  try {
    return decodeURIComponent(p);
  } catch {
    return p;
  }
}

/**
 * A key without what names the device rather than the volume: cryptsetup makes a
 * mapping's UUID CRYPT-<type>-<the volume's UUID>-<mapping name>, and the same volume
 * may be opened under another name (by hand, another crypttab). Types without a volume
 * UUID (plain, loop-AES, TrueCrypt) are known by their name only: kept whole.
 */
function comparable(key: string): string {
  const crypt = /^dm-uuid:(CRYPT-(?!(?:PLAIN|LOOPAES|TCRYPT)-)[A-Z0-9]+-[0-9a-fA-F]{32})-./.exec(
    key,
  );
  return crypt ? `dm-uuid:${crypt[1]!.toLowerCase()}` : key;
}

function strong(key: string, about: string): DeviceIdentity {
  return { key, about, weak: false };
}

/**
 * The serial number of a SCSI Unit Serial Number VPD page (80h: peripheral byte, page
 * code, 2-byte length, then ASCII, often padded with spaces); null when the page is
 * not that, or names nothing: empty, not printable, or one character over and over
 * (what some bridges answer for every disk).
 */
function unitSerialNumber(page: Buffer | null): string | null {
  if (!page || page.length < 4 || page[1] !== 0x80) return null;
  const length = page.readUInt16BE(2);
  if (page.length < 4 + length) return null;
  const serial = page
    .subarray(4, 4 + length)
    .toString('latin1')
    .replace(/^[\s\0]+|[\s\0]+$/g, '');
  if (serial === '' || !/^[\x21-\x7e][\x20-\x7e]*$/.test(serial)) return null;
  return /^(.)\1*$/.test(serial) ? null : serial;
}

async function readBinary(p: string): Promise<Buffer | null> {
  try {
    return await readFile(p);
  } catch {
    return null;
  }
}

/** A sysfs attribute, trimmed; null when absent, unreadable or empty. */
async function readAttr(p: string): Promise<string | null> {
  try {
    const v = (await readFile(p, 'utf8')).trim();
    return v === '' ? null : v;
  } catch {
    return null;
  }
}
