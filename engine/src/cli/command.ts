/** The shape of a CLI command and the shared argument handling. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UserError } from '../util/errors.js';

export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
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
