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

/**
 * Whether `err` says the storage under a file is full or failing (the kernel's ENOSPC,
 * EDQUOT, EROFS, EIO, or SQLite's FULL and IOERR codes), which freeing space or fixing
 * the disk cures, rather than a fault of ours.
 */
export function isStorageTrouble(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return (
    ['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'SQLITE_FULL', 'SQLITE_READONLY'].includes(code) ||
    code.startsWith('SQLITE_IOERR')
  );
}
