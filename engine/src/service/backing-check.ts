/**
 * Whether what a namespace's path names now is what the namespace was added on: a
 * /dev/sdX or /dev/loopN name can move to another disk (a reboot, a disk added, a loop
 * device attached to another file), and a file can be cut short. Served anyway, hosts
 * would write their VMs into the wrong disk, or lose what lay past the new end. So the
 * open refuses it, and the namespace stays offline until the right disk is back at its
 * path or the new one is accepted (target.namespace.accept).
 */
import type { NamespaceRow } from '../persistence/target-store.js';
import { sameDevice, type DeviceIdentity } from '../storage/device-identity.js';
import type { OpenedBacking } from '../storage/file.js';
import { UserError } from '../util/errors.js';

/** An open refused because its disk or file is not the configured one. */
export class WrongBacking extends UserError {
  constructor(message: string, hint: string) {
    super(message, hint, 'conflict', 'backend.path');
    this.name = 'WrongBacking';
  }
}

/** The stored identity of a block namespace's device; null when none was recorded. */
export function storedDevice(ns: Pick<NamespaceRow, 'device'>): DeviceIdentity | null {
  if (!ns.device) return null;
  try {
    const d = JSON.parse(ns.device) as Partial<DeviceIdentity>;
    if (typeof d.key !== 'string' || typeof d.about !== 'string') return null;
    return { key: d.key, about: d.about, weak: d.weak === true };
  } catch {
    return null;
  }
}

/** The open's verify for namespace `ns` of `nqn`: throws WrongBacking on a mismatch. */
export function verifyBacking(nqn: string, ns: NamespaceRow): (o: OpenedBacking) => void {
  return (o) => {
    const which = `namespace ${ns.nsid} of ${nqn}`;
    const accept = `target.namespace.accept {"nqn": "${nqn}", "nsid": ${ns.nsid}}`;
    const was = storedDevice(ns);
    const now = o.device;
    // A disk recorded without an identity is known by its size only (below): a newer
    // kernel or driver that shows its WWID or serial must not take it offline.
    if (ns.backendKind === 'block' && was && !was.weak && now && !sameDevice(was, now)) {
      throw new WrongBacking(
        `${ns.path} is not the disk ${which} was added on: that was ${was.about}, and ${ns.path} is now ${now.about}. ` +
          'It is not served, so that hosts do not write to the wrong disk (a /dev name can move to another disk at a reboot, a loop device can be attached to another file).',
        `Make ${ns.path} name that disk again (for a loop device: attach its file again, \`losetup ${ns.path} FILE\`), or serve the namespace from where that disk is now: ${accept.slice(0, -1)}, "path": "/dev/disk/by-id/…"}. ` +
          `Only if ${ns.path} holds this volume's data now (copied to a new disk), accept it as it is: ${accept}.`,
      );
    }
    if (o.blockSize !== ns.blockSize) {
      // the same disk or file with other blocks (a loop device attached with another
      // --sector-size): every LBA a host sends would name other bytes than it wrote
      throw new WrongBacking(
        `${ns.path} has ${o.blockSize}-byte blocks, not the ${ns.blockSize}-byte blocks of ${which}: hosts would read and write all its data at the wrong places. ` +
          'It is not served.',
        `Make ${ns.path} have ${ns.blockSize}-byte blocks again (for a loop device: attach it with \`losetup --sector-size ${ns.blockSize}\`), or serve the namespace from a device that has: ${accept.slice(0, -1)}, "path": "/dev/…"}.`,
      );
    }
    if (ns.backendKind === 'block' && was?.weak && o.sizeBytes !== ns.sizeBytes) {
      throw new WrongBacking(
        `${ns.path} is ${o.sizeBytes} bytes, not the ${ns.sizeBytes} bytes of the disk ${which} was added on. ` +
          'That disk had no WWID, serial number or UUID, so its size is all that tells it from another: the check is weaker than for a disk with an identity. It is not served, so that hosts do not write to the wrong disk.',
        `Make ${ns.path} name that disk again, or serve the namespace from where it is now: ${accept.slice(0, -1)}, "path": "/dev/…"}. ` +
          `Only if ${ns.path} is that disk (resized on purpose), accept it as it is: ${accept}.`,
      );
    }
    if (ns.sizeBytes > 0 && o.sizeBytes < ns.sizeBytes) {
      const what = ns.backendKind === 'file' ? 'file' : 'device';
      throw new WrongBacking(
        `${ns.path} is ${o.sizeBytes} bytes, smaller than the ${ns.sizeBytes} bytes ${which} has: the ${what} shrank or was replaced. ` +
          'It is not served, since hosts would lose what lay past its new end.',
        ns.backendKind === 'file'
          ? `Put the volume's file back (from a backup), or grow it back if nothing was cut that mattered (\`truncate -s ${ns.sizeBytes} '${ns.path}'\`). To serve it at its new size all the same: ${accept}.`
          : `Make ${ns.path} name the volume's disk again (or grow it back to ${ns.sizeBytes} bytes). To serve it at its new size all the same: ${accept}.`,
      );
    }
  };
}
