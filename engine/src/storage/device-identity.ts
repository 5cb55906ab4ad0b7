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
    // the file's inode too: another file put under the same name is another volume
    const ino = await stat(backing).then(
      (st) => String(st.ino),
      () => '?',
    );
    const offset = (await attr('loop/offset')) ?? '0';
    const limit = (await attr('loop/sizelimit')) ?? '0';
    const range = offset === '0' && limit === '0' ? '' : `, offset ${offset}, size limit ${limit}`;
    return strong(
      `loop:${backing}:${ino}@${offset}+${limit}`,
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
  return {
    key: 'none',
    about: `${basename(sys)}, which has no WWID, serial number or UUID`,
    weak: true,
  };
}

/** Whether identities `was` and `now` name the same disk, loop backing file or partition. */
export function sameDevice(was: DeviceIdentity, now: DeviceIdentity): boolean {
  return comparable(was.key) === comparable(now.key);
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

/** A sysfs attribute, trimmed; null when absent, unreadable or empty. */
async function readAttr(p: string): Promise<string | null> {
  try {
    const v = (await readFile(p, 'utf8')).trim();
    return v === '' ? null : v;
  } catch {
    return null;
  }
}
