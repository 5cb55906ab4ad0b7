/** The shape of a CLI command and the shared argument handling. */
import os from 'node:os';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UserError } from '../util/errors.js';

export interface Command {
  readonly name: string;
  /** Full help: usage, options, examples. */
  readonly help: string;
  run(argv: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** parseArgs with errors a person can act on. */
export function parseCommandArgs<O extends Options>(
  command: string,
  argv: string[],
  options: O,
  allowPositionals = false,
) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals });
  } catch (err) {
    throw new UserError(
      `${command}: ${(err as Error).message.replace(/\. To specify.*$/s, '')}`,
      `Run \`branchsan ${command} --help\` to see its options.`,
      'usage',
    );
  }
}

export function parsePort(
  command: string,
  flag: string,
  value: string | undefined,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new UserError(
      `${command}: --${flag} must be a port number 0-65535, not "${value}".`,
      undefined,
      'usage',
    );
  }
  return n;
}

/** The --data DIR every engine-side command needs, or a usage error naming the command. */
export function requireDataDir(command: string, value: string | undefined): string {
  if (!value) {
    throw new UserError(
      `${command}: --data DIR is required.`,
      `Example: branchsan ${command} --data /var/lib/branchsan`,
      'usage',
    );
  }
  return path.resolve(value.replace(/^~(?=\/|$)/, os.homedir()));
}
