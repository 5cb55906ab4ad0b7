import { joinHostPort } from './host-port.js';

/**
 * A failure a person can act on: what happened, and what to do next.
 * The CLI prints these without a stack trace; the API maps them to error codes.
 */
export class UserError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
    readonly code: string = 'user-error',
    readonly field?: string,
  ) {
    super(message);
    this.name = 'UserError';
  }
}

/** The `code` of an error (Node's errno name, SQLite's result code), or ''. */
export function errorCode(err: unknown): string {
  return String((err as { code?: unknown } | null)?.code ?? '');
}

/** The file system refused a write for want of space or quota (ENOSPC, EDQUOT, SQLITE_FULL). */
export function isDiskFull(err: unknown): boolean {
  const code = errorCode(err);
  return code === 'ENOSPC' || code === 'EDQUOT' || code.startsWith('SQLITE_FULL');
}

/**
 * What `err` says about the storage under the data directory (full, read-only, failing:
 * the kernel's ENOSPC, EDQUOT, EROFS, EIO or SQLite's FULL, READONLY, IOERR codes),
 * which freeing space or fixing the disk cures; null for anything else.
 */
export function storageProblem(err: unknown): string | null {
  const code = errorCode(err);
  if (isDiskFull(err)) return 'the data directory is full';
  if (code.startsWith('SQLITE_READONLY') || code === 'EROFS')
    return 'the data directory is read-only';
  if (code.startsWith('SQLITE_IOERR') || code === 'EIO')
    return `the data directory could not be written (${code})`;
  return null;
}

/**
 * Runs a write that a full or failing data disk may refuse and that the caller can do
 * without (an event, a marker): false, after a warning saying what was not done and
 * why, when the disk refused it. Any other error is a bug and is thrown.
 */
export function whereStorageAllows(
  log: { warn(msg: string, fields?: Record<string, unknown>): void } | undefined,
  what: string,
  write: () => unknown,
  fields: Record<string, unknown> = {},
): boolean {
  try {
    write();
    return true;
  } catch (err) {
    const why = storageProblem(err);
    if (why === null) throw err;
    log?.warn(`could not ${what}: ${why}`, { ...fields, err });
    return false;
  }
}

/**
 * A socket that could not listen on host:port: the error to show, with what to do
 * for the usual causes.
 */
export function cannotListen(
  what: 'nvme-tcp' | 'console',
  host: string,
  port: number,
  err: unknown,
): UserError {
  const code = errorCode(err);
  const names = ` (\`ss -ltnp 'sport = :${port}'\` names it`;
  const fix =
    what === 'nvme-tcp'
      ? {
          holder: `${names}; one with no process named is the kernel's nvmet target)`,
          port: 'choose another port',
          high: 'choose a port above 1023',
          host: 'use one of its interface addresses or 0.0.0.0',
        }
      : {
          holder: `${names})`,
          port: 'give the engine another --console-port (0 picks a free one)',
          high: 'give the engine a --console-port above 1023',
          host: 'give --console-host one of its interface addresses, or 0.0.0.0',
        };
  const hint =
    code === 'EADDRINUSE'
      ? `Another program uses that port${fix.holder}: stop it, or ${fix.port}.`
      : code === 'EADDRNOTAVAIL'
        ? `That address is not on this machine (or not yet, while its network comes up): ${fix.host}.`
        : code === 'EACCES'
          ? `Ports below 1024 need more privilege than the engine has: ${fix.high}.`
          : code === 'ENOTFOUND'
            ? `${host} is neither an address nor a name that resolves: ${fix.host} (\`ip -br addr\` lists them).`
            : code === 'EAI_AGAIN'
              ? `The name ${host} could not be resolved now (DNS did not answer): check the DNS servers in /etc/resolv.conf, or ${fix.host}.`
              : 'Check the address and port.';
  return new UserError(
    `Cannot listen ${what === 'nvme-tcp' ? 'for NVMe/TCP' : 'for the web console'} on ${joinHostPort(host, port)}: ${code || (err as Error).message}.`,
    hint,
    'conflict',
    what === 'nvme-tcp' ? 'port' : 'consolePort',
  );
}
