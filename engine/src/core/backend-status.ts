/**
 * Backend error kind -> NVMe status. The choice of DNR decides whether a Linux host
 * retries (up to 5 times) or fails the I/O at once; SCT 3 (path) statuses make a
 * multipath host try another path and re-read the ANA log.
 *
 * - out-of-range -> LBA Out of Range, DNR: the request cannot succeed anywhere.
 * - no-space     -> Capacity Exceeded, DNR: the backing store is full (thin/file backend).
 * - read-only    -> Namespace Is Write Protected, DNR.
 * - io           -> Unrecovered Read Error (reads, compare) or Write Fault (writes),
 *                   no DNR: a retry may pass, and the mirror may serve it from the peer.
 * - unavailable  -> ANA Transition (3/03), no DNR: the backend is fenced or not ready,
 *                   which is what a failover looks like from this path. A multipath host
 *                   fails over and re-reads the ANA log. NS Not Ready (0/82) would not
 *                   trigger failover: Linux retries it on the same path 5 times, then
 *                   fails the I/O (EIO), even with a healthy peer path.
 *                   With the log still optimized, Linux (multipath.c, 6.1) clears the
 *                   path's ANA_PENDING, requeues and resends at once, an I/O and a log
 *                   read per round with no delay, bound or ANATT timer, until the
 *                   backend is back (the real 6.1 host under QEMU: 2497 refused writes
 *                   and 818 ANA log reads in 4 s). So a backend that knows it is out
 *                   (BlockBackend.available false: its I/O threads being replaced) has
 *                   its namespace's group reported 'change' meanwhile, and back, each
 *                   with an ANA change event (Target.holdWhileOut): the host holds the
 *                   I/O until then (ANATT applies). Only when every namespace of the
 *                   group is out: in a group shared with a volume that serves (the
 *                   engine gives each volume its own), and for an 'unavailable' the
 *                   backend does not declare, this status still comes with the group
 *                   optimized, and the host resends as above. A backend closed while
 *                   its namespace is attached (BlockBackend.closed) has its group
 *                   reported inaccessible and its I/O answered ANA Inaccessible (3/02):
 *                   it will not be back by itself, so hosts go to another path or park
 *                   the I/O, with no ANATT to run out. A file backend whose device goes
 *                   away under it (ENXIO, ENODEV) closes itself that way too (file.ts).
 * - unsupported  -> Invalid Field, DNR: an operation the capabilities did not declare.
 * - anything else (a bug, not a BackendError) -> Internal Error.
 */
import type { BackendErrorKind } from '../storage/backend.js';
import { DNR, SC } from '../protocol/status.js';

export type IoDirection = 'read' | 'write';

export function backendStatus(err: Error, dir: IoDirection): number {
  const kind = (err as { kind?: BackendErrorKind }).kind;
  switch (kind) {
    case 'out-of-range':
      return SC.LBA_RANGE | DNR;
    case 'no-space':
      return SC.CAP_EXCEEDED | DNR;
    case 'read-only':
      return SC.NS_WRITE_PROTECTED | DNR;
    case 'io':
      return dir === 'read' ? SC.READ_ERROR : SC.WRITE_FAULT;
    case 'unavailable':
      return SC.ANA_TRANSITION;
    case 'unsupported':
      return SC.INVALID_FIELD | DNR;
    default:
      return SC.INTERNAL;
  }
}
