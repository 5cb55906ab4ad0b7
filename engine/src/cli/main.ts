/**
 * `branchsan` command-line entry: dispatches to one command, prints user errors as
 * "what happened / what to do" without a stack trace, and returns the exit code.
 */
import { ApiError } from '../../../contract/api.js';
import { UserError } from '../util/errors.js';
import { productVersion } from '../util/paths.js';
import type { Command } from './command.js';
import { bench } from './bench.js';
import { diagnostics } from './diagnostics.js';
import { exportCommand } from './export.js';
import { passwd } from './passwd.js';
import { serve } from './serve.js';
import { service } from './service.js';
import { status } from './status.js';

const COMMANDS: Command[] = [serve, status, exportCommand, bench, passwd, diagnostics, service];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `BranchSAN ${productVersion()} - two-node mirrored NVMe/TCP storage for branch offices

Usage: branchsan <command> [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}

Run \`branchsan <command> --help\` for a command's options.`;
}

export async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    const topic = COMMANDS.find((c) => c.name === rest[0]);
    console.log(topic ? topic.help : usage());
    return 0;
  }
  if (name === '--version' || name === 'version') {
    console.log(productVersion());
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    console.error(`branchsan: unknown command "${name}".`);
    console.error(`Run \`branchsan help\` to see the commands.`);
    return 2;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    return report(err);
  }
}

function report(err: unknown): number {
  if (err instanceof UserError) {
    console.error(`branchsan: ${err.message}`);
    if (err.hint) console.error(err.hint);
    return err.code === 'usage' ? 2 : 1;
  }
  if (err instanceof ApiError) {
    console.error(`branchsan: ${err.message}`);
    if (err.data?.hint) console.error(err.data.hint);
    return 1;
  }
  const e = err as Error & { hint?: string };
  console.error(`branchsan: ${e?.message ?? String(err)}`);
  if (e?.hint) console.error(e.hint);
  else console.error('This looks like a bug in BranchSAN; please report it with the output above.');
  return 1;
}
