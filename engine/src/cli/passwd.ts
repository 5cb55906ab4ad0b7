/**
 * `branchsan passwd`: sets the web console's admin password on the server itself.
 * Works whether or not the engine runs: the engine re-reads the password file, and
 * sessions opened with the old password end at their next request.
 */
import fs from 'node:fs';
import { PasswordFile, passwordProblem } from '../control/auth/password.js';
import { errorCode, isDiskFull, UserError } from '../util/errors.js';
import { directoryProblem, parseCommandArgs, requireDataDir, type Command } from './command.js';

export const passwd: Command = {
  name: 'passwd',
  help: `Usage: branchsan passwd --data DIR [--password-stdin]

Sets the admin password of the web console (stored as an scrypt hash in
DIR/secrets/console-password, mode 0600). Run it as the user the engine runs as
(root for the system service). Everyone signed in with the old password is signed out.

Options:
  --data DIR          the engine's data directory                 [required]
  --password-stdin    read the password from standard input (one line), for scripts

Examples:
  sudo branchsan passwd --data /var/lib/branchsan
  printf '%s\\n' "$PASSWORD" | branchsan passwd --data /var/lib/branchsan --password-stdin`,
  async run(argv) {
    const { values } = parseCommandArgs('passwd', argv, {
      data: { type: 'string' },
      'password-stdin': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    const dataDir = requireDataDir('passwd', values.data);
    // A mistyped --data would otherwise get a password of its own, and "set" would
    // be reported for a directory no engine reads.
    const problem = directoryProblem(dataDir);
    if (problem) {
      throw new UserError(
        `passwd: the data directory ${dataDir} ${problem}; nothing was changed.`,
        'Pass the directory the engine runs with (the systemd service uses /var/lib/branchsan). To set the password before the first start, create the directory first.',
      );
    }
    if (values['password-stdin'] && process.stdin.isTTY) {
      // Typed at a terminal it would be echoed, with no prompt and no end but Ctrl-D.
      throw new UserError(
        'passwd: --password-stdin reads a password piped in, but standard input is a terminal.',
        'Run it without --password-stdin to be asked for the password (it is not shown).',
        'usage',
      );
    }
    const password = values['password-stdin'] ? await readStdinLine() : await promptTwice();
    const weak = passwordProblem(password);
    if (weak) throw new UserError(`passwd: ${weak}`, 'Run it again with another password.');
    const file = PasswordFile.inDataDir(dataDir);
    try {
      await file.set(password);
    } catch (err) {
      throw unwritable(dataDir) ?? notWritten(file.file, dataDir, err);
    }
    console.log(
      'The web console admin password is set. Sessions signed in with an older password are signed out.',
    );
    return 0;
  },
};

/**
 * Why the password file could not be written, when the data directory is on a
 * read-only file system (which Node reports as ENOENT from a recursive mkdir).
 */
function unwritable(dataDir: string): UserError | null {
  try {
    fs.accessSync(dataDir, fs.constants.W_OK);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EROFS')
      return new UserError(
        `passwd: the data directory ${dataDir} is on a read-only file system; nothing was changed.`,
        'Remount it read-write, or pass the directory the engine runs with.',
      );
    return null; // EACCES and the like: the CLI's general hint (run it as root) fits
  }
}

/**
 * Why the password file could not be written (the write of its new copy, or the mkdir
 * of DATA/secrets, failed: the old password stays), with what to do; a UserError (what
 * is in the file's place) as it is.
 */
function notWritten(file: string, dataDir: string, err: unknown): unknown {
  if (err instanceof UserError) return err;
  const code = errorCode(err);
  if (isDiskFull(err))
    return new UserError(
      `passwd: the admin password could not be written to ${file}: its file system is full (${code}); nothing was changed.`,
      `Free space there (\`df -h ${dataDir}\` shows how much is left), then run branchsan passwd again.`,
    );
  if (code === 'EACCES' || code === 'EPERM') {
    const owner = fs.statSync(dataDir, { throwIfNoEntry: false });
    return new UserError(
      `passwd: this user (uid ${process.getuid?.() ?? '?'}) may not write the admin password file ${file} (${code}); nothing was changed.`,
      `Run it as root (sudo branchsan passwd --data ${dataDir}) or as the user the engine runs as${owner ? ` (the data directory's owner, uid ${owner.uid})` : ''}.`,
    );
  }
  if (code === 'EIO')
    return new UserError(
      `passwd: the admin password could not be written to ${file} (EIO: the disk failed the write).`,
      `Check that disk (dmesg for I/O errors), then run branchsan passwd again.`,
    );
  return err;
}

async function readStdinLine(): Promise<string> {
  let text = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin as AsyncIterable<string>) {
    text += chunk;
    if (text.length > 4096) break;
  }
  const line = text.replace(/\r?\n$/, '');
  if (line.includes('\n')) {
    throw new UserError(
      'passwd: standard input holds more than one line.',
      'Pipe exactly the password, followed by at most one newline.',
    );
  }
  return line;
}

async function promptTwice(): Promise<string> {
  if (!process.stdin.isTTY) {
    throw new UserError(
      'passwd: standard input is not a terminal, so the password cannot be asked for.',
      'Pipe it in with --password-stdin, or run the command in a terminal.',
      'usage',
    );
  }
  const first = await promptHidden('New admin password: ');
  const problem = passwordProblem(first);
  if (problem) throw new UserError(`passwd: ${problem}`, 'Run it again with another password.');
  const second = await promptHidden('Repeat it: ');
  if (first !== second) {
    throw new UserError('passwd: the two passwords differ; nothing was changed.', 'Run it again.');
  }
  return first;
}

/** Reads one line from the terminal without echoing it. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  stdin.setRawMode(true);
  stdin.setEncoding('utf8');
  stdin.resume();
  return new Promise((resolve, reject) => {
    let value = '';
    const done = (err?: Error) => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done();
        if (ch === '\u0003' || ch === '\u0004') {
          return done(new UserError('passwd: cancelled; nothing was changed.'));
        }
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.on('data', onData);
  });
}
