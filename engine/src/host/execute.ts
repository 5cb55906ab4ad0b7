/**
 * The promise layer over the callback core: one closure and one promise per command.
 * Status errors become NvmeStatusError, transport outcomes stay HostError.
 */
import { ADMIN, FABRICS_OPCODE, FCTYPE, IO } from '../protocol/opcodes.js';
import { NvmeStatusError } from './errors.js';
import type { NvmeRequest } from './request.js';

/** Anything that takes a request and calls its onDone once (a queue, a controller). */
export interface Submitter {
  submit(req: NvmeRequest): void;
}

/** Submit and wait; resolves with the request (dw0/dw1/data filled in). */
export function execute(target: Submitter, req: NvmeRequest, what?: string): Promise<NvmeRequest> {
  return new Promise<NvmeRequest>((resolve, reject) => {
    req.onDone = (r) => {
      if (r.error) reject(r.error);
      else if (r.status !== 0) reject(new NvmeStatusError(r.status, what ?? describe(r), r.dw0));
      else resolve(r);
    };
    target.submit(req);
  });
}

const FABRICS_NAMES = new Map<number, string>(
  Object.entries(FCTYPE).map(([k, v]) => [v, `fabrics ${k}`] as [number, string]),
);

/** A short description for error messages, built only when an error happens. */
export function describe(req: NvmeRequest): string {
  if (req.opcode === FABRICS_OPCODE && req.fctype >= 0) {
    return FABRICS_NAMES.get(req.fctype) ?? `fabrics 0x${req.fctype.toString(16)}`;
  }
  return `opcode 0x${req.opcode.toString(16)} nsid ${req.nsid}`;
}

/** Opcode → name, from an opcode table's keys (KEEP_ALIVE → "keep alive"). */
function namesOf(table: Record<string, number>): Map<number, string> {
  return new Map(Object.entries(table).map(([k, v]) => [v, k.toLowerCase().replace(/_/g, ' ')]));
}

const IO_NAMES = namesOf(IO).set(IO.DSM, 'dataset management');
const ADMIN_NAMES = namesOf(ADMIN);

/**
 * The command's name and opcode for an error message ("write (opcode 0x1)"): an I/O
 * command's on an I/O queue, an admin command's on the admin queue (the same opcode
 * means another command on each).
 */
export function commandName(req: NvmeRequest, adminQueue: boolean): string {
  if (req.isFabrics) return describe(req);
  const name = (adminQueue ? ADMIN_NAMES : IO_NAMES).get(req.opcode) ?? 'command';
  return `${name} (opcode 0x${req.opcode.toString(16)})`;
}
