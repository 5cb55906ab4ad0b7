/** The shape of a CLI command and the shared argument handling. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { UserError } from '../util/errors.js';
import { makeDirs } from '../util/paths.js';

export interface Command {
  readonly name: string;
  /** Full help: usage, options, examples. */
  readonly help: string;
  run(argv: string[]): Promise<number>;
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** A wrong command line: what is wrong, and where the command's options are told. */
export function usageError(command: string, message: string): UserError {
  return new UserError(
    `${command}: ${message}`,
    `Run \`branchsan ${command} --help\` to see its options.`,
    'usage',
  );
}

/**
 * parseArgs with errors a person can act on. On top of parseArgs' own checks:
 * - a negative number is taken as the value of the option before it (`--port -1`
 *   then fails the port check, rather than "argument is ambiguous");
 * - an empty value (`--host ""`, usually an unset shell variable) is refused: several
 *   options would read it as "use the default" or, for an address, "every interface";
 * - an option given twice with different values is refused, rather than the last
 *   one silently winning (the same value twice is fine; `multiple` options repeat).
 */
export function parseCommandArgs<O extends Options>(
  command: string,
  argv: string[],
  options: O,
  allowPositionals = false,
) {
  const usage = (message: string) => usageError(command, message);
  const args = joinNegativeValues(argv, options);
  const parse = () => {
    try {
      return parseArgs({ args, options, strict: true, allowPositionals, tokens: true });
    } catch (err) {
      throw usage((err as Error).message.replace(/\. To specify.*$/s, ''));
    }
  };
  const parsed = parse();
  const seen = new Map<string, string>();
  for (const t of parsed.tokens) {
    if (t.kind !== 'option' || t.value === undefined) continue;
    if (t.value === '') throw usage(`${t.rawName} needs a value, not an empty string.`);
    if ((options as Options)[t.name]?.multiple) continue;
    const before = seen.get(t.name);
    if (before !== undefined && before !== t.value) {
      throw usage(`${t.rawName} is given twice, as "${before}" and "${t.value}"; give it once.`);
    }
    seen.set(t.name, t.value);
  }
  return { values: parsed.values, positionals: parsed.positionals };
}

/** `--opt -5` → `--opt=-5` for options that take a value, so -5 is their value. */
function joinNegativeValues(argv: string[], options: Options): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const next = argv[i + 1];
    const takesValue = a.startsWith('--') && options[a.slice(2)]?.type === 'string';
    if (takesValue && next !== undefined && /^-\.?\d/.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else out.push(a);
  }
  return out;
}

export function parsePort(
  command: string,
  flag: string,
  value: string | undefined,
  fallback: number,
): number {
  if (value === undefined) return fallback;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= 0 && n <= 65535)) {
    throw new UserError(
      `${command}: --${flag} must be a port number 0-65535, not "${value}".`,
      undefined,
      'usage',
    );
  }
  return n;
}

/** A whole-number option from min to max, `fallback` when it is absent; else a usage error. */
export function parseWholeNumber(
  command: string,
  flag: string,
  value: string | undefined,
  range: { min: number; max: number; fallback: number },
): number {
  if (value === undefined) return range.fallback;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(n >= range.min && n <= range.max)) {
    throw usageError(
      command,
      `--${flag} must be a whole number from ${range.min} to ${range.max}, not "${value}".`,
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

/** A repeat of the stop signal later than this after the first ends the process at once. */
const REPEAT_GRACE_MS = 2_000;

/**
 * The signals that ask a long-running command to stop cleanly: Ctrl-C, `kill` or a
 * service manager, and a hangup (an SSH session that drops, a terminal closed).
 */
const STOP_SIGNALS: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/**
 * bin/branchsan.js re-runs the long-running commands as its child and passes its own
 * pid in this variable (the name is spelled out there too).
 */
const LAUNCHER_PID_ENV = 'BRANCHSAN_LAUNCHER_PID';
/** How often a command run by the launcher checks that the launcher is still there. */
const LAUNCHER_POLL_MS = 1_000;

let launcherPid: number | undefined;

/**
 * How long a command lingers after the last stop signal before its process ends. One
 * Ctrl-C or group SIGTERM arrives twice (see onStopRequest): once from the terminal or
 * the killer, and once more as the launcher forwards its copy, a few milliseconds
 * later. When the clean stop is quicker than that (an engine with no hosts stops in
 * 2 ms), the copy landed while Node was tearing the process down, after it had put
 * the default signal action back: the process died of it, and the launcher reported
 * a clean stop as a death by SIGTERM.
 */
const STOP_SETTLE_MS = 200;
/** When the last stop signal arrived (0: none yet). */
let lastStopAt = 0;

/** Resolves once no stop signal has arrived for STOP_SETTLE_MS (at once if none came). */
export async function settleStopSignals(): Promise<void> {
  for (;;) {
    const wait = lastStopAt + STOP_SETTLE_MS - Date.now();
    if (lastStopAt === 0 || wait <= 0) return;
    await new Promise((r) => setTimeout(r, wait));
  }
}

/**
 * Takes the launcher's pid from the environment, once, as the CLI starts; and takes
 * it out of the environment, so that processes this one starts do not inherit it.
 */
export function adoptLauncher(env: NodeJS.ProcessEnv = process.env): void {
  const value = env[LAUNCHER_PID_ENV];
  if (value === undefined) return;
  delete env[LAUNCHER_PID_ENV];
  const pid = Number(value);
  if (Number.isInteger(pid) && pid > 1) launcherPid = pid;
}

/**
 * Calls onStop once, at the first request to stop: SIGINT, SIGTERM or SIGHUP, or the
 * launcher gone (below). Until the returned function is called it goes on catching
 * those signals, so that the clean stop which follows is not cut short by a second
 * one. One Ctrl-C (or hangup) often arrives twice: the terminal signals the whole
 * process group, the launcher (bin/branchsan.js) and this process, and the launcher
 * forwards its copy too (`timeout` and some supervisors also signal both). With
 * Node's default action restored, that copy killed the process mid-stop. A repeat
 * more than REPEAT_GRACE_MS after the first is a person insisting: the process ends
 * at once.
 *
 * When the launcher itself is killed outright (SIGKILL, the OOM killer), nothing
 * forwards a signal, and this process would go on holding its port, lock and files
 * with no one to stop it: the launcher is checked every LAUNCHER_POLL_MS (an unref'd
 * timer, so it never keeps the process alive), and its loss stops the command as a
 * hangup does: SIGHUP is "the controlling process is gone".
 */
export function onStopRequest(command: string, onStop: (sig: NodeJS.Signals) => void): () => void {
  let firstAt = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    lastStopAt = Date.now();
    if (!firstAt) {
      firstAt = Date.now();
      onStop(sig);
    } else if (Date.now() - firstAt > REPEAT_GRACE_MS) {
      process.stderr.write(
        `branchsan: ${command}: ${sig} again: exiting now, before the clean stop finished.\n`,
      );
      process.exit(128 + (os.constants.signals[sig] ?? 0));
    }
  };
  for (const sig of STOP_SIGNALS) process.on(sig, onSignal);
  const launcher = launcherPid;
  let poll: NodeJS.Timeout | undefined;
  if (launcher !== undefined) {
    poll = setInterval(() => {
      // the parent of an orphan is init (or a subreaper): never the launcher again
      if (process.ppid === launcher) return;
      clearInterval(poll);
      if (firstAt) return; // already stopping
      process.stderr.write(
        `branchsan: ${command}: its launcher (pid ${launcher}) is gone; stopping cleanly, as on SIGHUP.\n`,
      );
      onSignal('SIGHUP');
    }, LAUNCHER_POLL_MS).unref();
  }
  return () => {
    for (const sig of STOP_SIGNALS) process.off(sig, onSignal);
    clearInterval(poll);
  };
}

/**
 * Resolves at the first request to stop (SIGINT, SIGTERM, SIGHUP, or the launcher
 * gone), and goes on catching those signals for the rest of the process's life; see
 * onStopRequest.
 */
export function stopSignal(command: string): Promise<NodeJS.Signals> {
  return new Promise((resolve) => onStopRequest(command, resolve));
}

/** Why `dir` cannot be used as a directory ('does not exist', 'is not a directory'), or null. */
export function directoryProblem(dir: string): 'does not exist' | 'is not a directory' | null {
  try {
    return fs.statSync(dir).isDirectory() ? null : 'is not a directory';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' || code === 'ENOTDIR' ? 'does not exist' : null;
  }
}

/**
 * Checks an `--out FILE` before any work: it must not be a directory, and its
 * directory is made now (so a long run never fails at the end, losing its result).
 * `example` is a file name to suggest inside a directory given by mistake.
 */
export function prepareOutFile(command: string, out: string, example: string, mode?: number): void {
  const file = path.resolve(out);
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) {
    throw new UserError(
      `${command}: --out ${out} is a directory.`,
      `Name a file, for example --out ${path.join(out, example)}`,
      'usage',
    );
  }
  const dir = path.dirname(file);
  try {
    makeDirs(dir, mode);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UserError(
      code === 'EEXIST' || code === 'ENOTDIR'
        ? `${command}: cannot write --out ${out}: part of ${dir} is a file, not a directory.`
        : `${command}: cannot create the directory ${dir} for --out (${code}).`,
      'Choose another --out FILE.',
    );
  }
}
