import fs from 'node:fs';
import path from 'node:path';
import { ApiError, ErrorCode } from '../../../contract/errors.js';
import { buildDiagnosticsBundle, bundleName } from '../service/diagnostics.js';
import { engineSocketPath } from '../service/instance-lock.js';
import { UserError } from '../util/errors.js';
import { insideDir } from '../util/paths.js';
import { connectSocket } from './api-client.js';
import {
  directoryProblem,
  parseCommandArgs,
  prepareOutFile,
  requireDataDir,
  type Command,
} from './command.js';

export const diagnostics: Command = {
  name: 'diagnostics',
  help: `Usage: branchsan diagnostics --data DIR [--socket PATH] [--out FILE] [--offline] [--wait SEC]

Writes a diagnostics bundle: the engine's logs, its configuration, recent events
and alerts, metric history and system facts. Passwords, tokens and keys are
removed. When the engine is running it builds the bundle (adding who is connected
right now); otherwise, or when it does not answer in time (--wait), the bundle
is built from DIR directly.

Options:
  --data DIR     the engine's data directory                   [required]
  --socket PATH  the engine's API socket  [the running engine's, found in DIR]
  --out FILE     where to write it  [./branchsan-diagnostics-HOST-TIME.tar.gz]
  --offline      do not ask the running engine; read DIR only
  --wait SEC     how long the running engine may take to answer      [120]

Example:
  sudo branchsan diagnostics --data /var/lib/branchsan --out /tmp/diag.tar.gz`,
  async run(argv) {
    const { values } = parseCommandArgs('diagnostics', argv, {
      data: { type: 'string' },
      socket: { type: 'string' },
      out: { type: 'string' },
      offline: { type: 'boolean' },
      wait: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    const waitSec = values.wait === undefined ? 120 : Number(values.wait);
    if (!(waitSec > 0 && waitSec <= 3600)) {
      throw new UserError(
        `diagnostics: --wait must be a number of seconds above 0, at most 3600, not "${values.wait}".`,
        'Example: --wait 30',
        'usage',
      );
    }
    const dataDir = requireDataDir('diagnostics', values.data);
    const problem = directoryProblem(dataDir);
    if (problem) {
      throw new UserError(
        `diagnostics: the data directory ${dataDir} ${problem}.`,
        'Pass the directory the engine runs with (the systemd service uses /var/lib/branchsan).',
      );
    }
    const out = path.resolve(values.out ?? bundleName());
    if (await insideDir(out, dataDir)) {
      // It could replace the database or a key, and the next bundle would hold this one.
      throw new UserError(
        `diagnostics: --out ${values.out ?? out} is inside the data directory ${dataDir}.`,
        'Write the bundle somewhere else, for example --out /tmp/diag.tar.gz.',
        'usage',
      );
    }
    prepareOutFile('diagnostics', out, bundleName(), 0o750);
    let r: { path: string; sizeBytes: number };
    let viaEngine = false;
    try {
      const fromRunning = values.offline
        ? null
        : await fromEngine(values.socket ?? engineSocketPath(dataDir), out, waitSec * 1000);
      viaEngine = fromRunning !== null;
      r = fromRunning ?? (await buildDiagnosticsBundle({ dataDir, outFile: out }));
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { dest?: string };
      if (e.code && [e.path, e.dest].some((p) => p?.startsWith(out))) {
        throw new UserError(
          `diagnostics: cannot write ${out} (${e.code}).`,
          'Choose another --out FILE, in a directory with free space that you may write to.',
        );
      }
      throw err;
    }
    console.log(
      `Diagnostics bundle written: ${r.path} (${Math.ceil(r.sizeBytes / 1024)} KiB, ${viaEngine ? 'from the running engine' : `read from ${dataDir}`}).`,
    );
    console.log(
      'Passwords, tokens and keys are removed from it; attach it to your support request.',
    );
    const unreadable = viaEngine ? null : unreadableDir(dataDir);
    if (unreadable) {
      console.error(
        `branchsan: warning: you may not read ${dataDir} (${unreadable}), so the bundle holds only system facts: no configuration, events or logs, and the running engine (if any) was not found.\n` +
          `Run it as root for a full bundle: sudo branchsan diagnostics --data ${dataDir}`,
      );
    }
    return 0;
  },
};

/** The errno that keeps this user from listing `dir`, or null when it can. */
function unreadableDir(dir: string): string | null {
  try {
    fs.accessSync(dir, fs.constants.R_OK | fs.constants.X_OK);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'EACCES';
    return code === 'ENOENT' ? null : code;
  }
}

/** Asks a running engine for a bundle and copies it to out; null when no engine answers. */
async function fromEngine(
  socket: string,
  out: string,
  waitMs: number,
): Promise<{ path: string; sizeBytes: number } | null> {
  let client;
  try {
    client = await connectSocket(socket, waitMs);
  } catch {
    return null; // not running (or not reachable): build it from the directory instead
  }
  try {
    const r = await client.call('diagnostics.bundle', {});
    if (path.resolve(r.path) !== out) fs.copyFileSync(r.path, out);
    return { path: out, sizeBytes: fs.statSync(out).size };
  } catch (err) {
    // A hung (or dying) engine is when a bundle is needed most: build it from the directory.
    if (!(err instanceof ApiError) || err.code !== ErrorCode.Unavailable) throw err;
    process.stderr.write(
      `branchsan: diagnostics: ${err.message} Building the bundle from the data directory instead.\n`,
    );
    return null;
  } finally {
    client.close();
  }
}
