/**
 * `branchsan` command-line entry: dispatches to one command, prints user errors as
 * "what happened / what to do" without a stack trace, and returns the exit code.
 */
import { ApiError } from '../../../contract/errors.js';
import { storageProblem, UserError } from '../util/errors.js';
import { dropStdout } from '../util/log.js';
import { productVersion } from '../util/paths.js';
import { adoptLauncher, settleStopSignals, type Command } from './command.js';

/**
 * Each command's module loads only when that command runs: a command pays for what
 * it uses (the CLI starts faster, and `bench` measures without the API schemas, the
 * database driver and the console in its heap).
 */
const COMMANDS: { name: string; summary: string; load(): Promise<Command> }[] = [
  {
    name: 'serve',
    summary: 'run the engine (the storage service) in the foreground',
    load: async () => (await import('./serve.js')).serve,
  },
  {
    name: 'status',
    summary: "show a running engine's status",
    load: async () => (await import('./status.js')).status,
  },
  {
    name: 'alerts',
    summary: "list a running engine's alerts, or acknowledge one",
    load: async () => (await import('./alerts.js')).alerts,
  },
  {
    name: 'events',
    summary: "show a running engine's event log, or follow it",
    load: async () => (await import('./events.js')).events,
  },
  {
    name: 'export',
    summary: 'serve one file or block device over NVMe/TCP at once (no wizard)',
    load: async () => (await import('./export.js')).exportCommand,
  },
  {
    name: 'probe',
    summary: 'check an NVMe/TCP target as a host sees it (discovery, namespaces, latency)',
    load: async () => (await import('./probe.js')).probe,
  },
  {
    name: 'bench',
    summary: 'measure NVMe/TCP against the local disk and the bare network',
    load: async () => (await import('./bench.js')).bench,
  },
  {
    name: 'passwd',
    summary: "set the web console's admin password",
    load: async () => (await import('./passwd.js')).passwd,
  },
  {
    name: 'diagnostics',
    summary: 'collect logs, configuration and events into one .tar.gz for support',
    load: async () => (await import('./diagnostics.js')).diagnostics,
  },
  {
    name: 'service',
    summary: 'start, stop, show or install the engine as a systemd service',
    load: async () => (await import('./service.js')).service,
  },
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `BranchSAN ${productVersion()} - two-node mirrored NVMe/TCP storage for branch offices

Usage: branchsan <command> [options]

Commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}

Run \`branchsan <command> --help\` (or \`branchsan help <command>\`) for a command's options,
and \`branchsan --version\` for the version.`;
}

/** Commands that run until stopped: their output is a log, which the log file also keeps. */
const LONG_RUNNING = new Set(['serve', 'export']);

export async function run(argv: string[]): Promise<number> {
  goOnWithoutOutput();
  adoptLauncher();
  const code = await runCommand(argv);
  // A one-shot command whose output could not be written did not do its job: a script
  // running `branchsan status --json > f` on a full disk must not see success.
  if (code === 0 && !LONG_RUNNING.has(argv[0] ?? '') && (await outputLost())) return 1;
  return code;
}

async function runCommand(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    if (rest[0] === undefined) {
      console.log(usage());
      return 0;
    }
    const topic = COMMANDS.find((c) => c.name === rest[0]);
    if (!topic) {
      console.error(`branchsan: help: unknown command "${rest[0]}".`);
      console.error(`Run \`branchsan help\` to see the commands.`);
      return 2;
    }
    console.log((await topic.load()).help);
    return 0;
  }
  if (name === '--version' || name === 'version') {
    console.log(productVersion());
    return 0;
  }
  const entry = COMMANDS.find((c) => c.name === name);
  if (!entry) {
    console.error(`branchsan: unknown command "${name}".`);
    console.error(`Run \`branchsan help\` to see the commands.`);
    return 2;
  }
  try {
    return await (await entry.load()).run(rest);
  } catch (err) {
    return report(err);
  } finally {
    await settleStopSignals(); // a stop signal's second copy must find its handler still there
  }
}

let outputGuarded = false;
/** Standard output failed other than by its reader leaving (EPIPE). */
let outputFailed = false;

/** Waits for what was written to stdout to be taken; says whether any of it was lost. */
async function outputLost(): Promise<boolean> {
  if (!outputFailed && process.stdout.writable) {
    await new Promise<void>((resolve) => process.stdout.write('', () => resolve()));
  }
  // a failed write's 'error' event comes a tick after its callback
  await new Promise((resolve) => setImmediate(resolve));
  return outputFailed;
}

/**
 * When the reader of stdout or stderr goes away (`branchsan serve | head -1`, a closed
 * terminal), writing there fails (EPIPE, EIO), and Node's default for that failure is
 * an uncaught exception: a stack trace, and an engine that dies because nobody reads
 * its log. Instead the loggers stop writing there (dropStdout: Node destroys a pipe,
 * but not a file) and the process carries on: the engine's log file still gets every
 * line. EPIPE is the reader's choice and goes unremarked, as in any Unix
 * tool; any other failure of stdout (a file on a full disk) is said on stderr, once,
 * and a one-shot command then exits 1 (run).
 */
function goOnWithoutOutput(): void {
  if (outputGuarded) return; // run() again in the same process
  outputGuarded = true;
  let said = false;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    dropStdout();
    if (err.code === 'EPIPE' || said) return;
    said = true;
    outputFailed = true;
    process.stderr.write(
      `branchsan: cannot write to standard output (${err.code ?? err.message}); going on without it: nothing more is printed there.\n`,
    );
  });
  process.stderr.on('error', () => undefined); // nowhere left to say it
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
  else if (['EACCES', 'EPERM'].includes((err as NodeJS.ErrnoException)?.code ?? '')) {
    console.error(
      "This user may not do that: run the command as root (sudo branchsan …) or as the engine service's user.",
    );
  } else if (storageProblem(err) !== null) {
    console.error(
      'A disk is full or failing: free space on the filesystem that holds the data directory (`df -h`), or check that disk, then try again.',
    );
  } else
    console.error('This looks like a bug in BranchSAN; please report it with the output above.');
  return 1;
}
