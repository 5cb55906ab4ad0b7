/**
 * NVMe Qualified Name checks (NVMe base spec, "NVM Subsystem NVMe Qualified Names"):
 * either nqn.yyyy-mm.<reverse domain>[:<anything>] or the UUID form
 * nqn.2014-08.org.nvmexpress:uuid:<uuid>; at most 223 bytes of UTF-8.
 */
import { DISCOVERY_NQN, NQN_MAX_BYTES } from '../protocol/opcodes.js';

export { DISCOVERY_NQN };

const UUID_PREFIX = 'nqn.2014-08.org.nvmexpress:uuid:';
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const LABEL = '[a-z0-9](?:[a-z0-9-]*[a-z0-9])?';
const DOMAIN_RE = new RegExp(`^nqn\\.(\\d{4})-(\\d{2})\\.${LABEL}(?:\\.${LABEL})*(?::.*)?$`, 'i');

/**
 * Whether `s` holds control characters (C0, DEL, C1). No NQN has them, and a name with
 * them, shown in an event, an alert, a mail subject or a log line, could forge lines.
 */
export function hasControlChars(s: string): boolean {
  return /[\u0000-\u001f\u007f-\u009f]/.test(s);
}

/** Why `nqn` is not a valid NQN, or null if it is. */
export function nqnProblem(nqn: string): string | null {
  const bytes = Buffer.byteLength(nqn, 'utf8');
  if (bytes === 0) return 'the NQN is empty';
  if (bytes > NQN_MAX_BYTES)
    return `the NQN is ${bytes} bytes long; at most ${NQN_MAX_BYTES} are allowed`;
  if (hasControlChars(nqn)) return 'the NQN contains control characters';
  if (nqn.startsWith(UUID_PREFIX)) {
    return UUID_RE.test(nqn.slice(UUID_PREFIX.length))
      ? null
      : `"${nqn}" uses the UUID form but the part after "${UUID_PREFIX}" is not a UUID`;
  }
  const m = DOMAIN_RE.exec(nqn);
  if (!m) {
    return `"${nqn}" is not of the form nqn.yyyy-mm.reverse.domain:name (for example nqn.2024-01.com.example:storage)`;
  }
  const month = Number(m[2]);
  if (month < 1 || month > 12) return `"${nqn}" has month ${m[2]}; use 01..12`;
  return null;
}

/** Throws an Error naming `what` (e.g. "subsystem NQN") if the NQN is invalid. */
export function assertNqn(nqn: string, what: string): void {
  const problem = nqnProblem(nqn);
  if (problem) throw new Error(`Invalid ${what}: ${problem}`);
}
