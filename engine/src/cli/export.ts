import dns from 'node:dns';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { nqnProblem } from '../core/index.js';
import { joinHostPort } from '../util/host-port.js';
import { stableIds, TargetRuntime } from '../service/target-runtime.js';
import type { IoTuning } from '../../../contract/api.js';
import { FdBackend } from '../storage/file.js';
import type { BackendSpec } from '../storage/open.js';
import { UserError } from '../util/errors.js';
import { createLogger, isLogLevel } from '../util/log.js';
import {
  directoryProblem,
  parseCommandArgs,
  parsePort,
  parseWholeNumber,
  stopSignal,
  type Command,
} from './command.js';
import { formatSize, parseSize } from './sizes.js';

export const exportCommand: Command = {
  name: 'export',
  help: `Usage: branchsan export PATH [options]

Serves PATH (a file or a block device) as namespace 1 of one NVMe subsystem over
NVMe/TCP, with a discovery controller on the same port, until Ctrl-C. Nothing is
stored: this is for evaluation and tests, like a one-line nvmetcli.

Options:
  --port N            TCP port                                       [4420]
  --host ADDR         listen address                            [127.0.0.1]
  --nqn NQN           subsystem NQN   [nqn.2026-01.io.branchsan:export-<name>]
  --create-size SIZE  create PATH as a sparse file of SIZE (e.g. 10G) first
  --block-size N      512 or 4096, for files                            [512]
  --allow-host NQN    only this host may connect (repeatable; default: any host)
  --log-level LEVEL   debug | info | warn | error                      [warn]

I/O tuning (the defaults suit a file in RAM or the page cache; see README):
  --no-inline-reads   send every read through the storage I/O thread, even one the
                      page cache holds (by default those are served on the event loop)
  --no-inline-writes  send every write through the storage I/O thread, even a lone one
                      to a file in RAM (by default those run on the event loop)
  --completion-spin-us N
                      µs the event loop polls for a lone I/O on a thread before it
                      sleeps, 0-1000 (0: never; lower it for a disk slower than that) [30]

Examples:
  branchsan export /var/tmp/vol.img --create-size 10G
  branchsan export /dev/nvme1n1 --host 0.0.0.0 --allow-host nqn.2014-08.org.nvmexpress:uuid:...`,
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      'export',
      argv,
      {
        port: { type: 'string' },
        host: { type: 'string' },
        nqn: { type: 'string' },
        'create-size': { type: 'string' },
        'block-size': { type: 'string' },
        'allow-host': { type: 'string', multiple: true },
        'log-level': { type: 'string' },
        'no-inline-reads': { type: 'boolean' },
        'no-inline-writes': { type: 'boolean' },
        'completion-spin-us': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      true,
    );
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    if (positionals.length !== 1) {
      throw new UserError(
        'export: give exactly one PATH to serve.',
        'Example: branchsan export /var/tmp/vol.img --create-size 10G',
        'usage',
      );
    }
    const target = path.resolve(positionals[0]!);
    const port = parsePort('export', 'port', values.port, 4420);
    const host = await listenAddress(values.host ?? '127.0.0.1');
    const nqn =
      values.nqn ??
      `nqn.2026-01.io.branchsan:export-${path.basename(target).replace(/[^A-Za-z0-9.-]/g, '-')}`;
    const hosts = values['allow-host'] ?? [];
    for (const [flag, n] of [['--nqn', nqn], ...hosts.map((h) => ['--allow-host', h])] as const) {
      const problem = nqnProblem(n);
      if (problem)
        throw new UserError(
          `export: ${flag} "${n}": ${problem}.`,
          'An NQN looks like nqn.2026-01.com.example:name.',
          'usage',
        );
    }
    const given = values['block-size'] ?? '512';
    // the digits themselves: Number() would take 0x200 or 5.12e2 too
    const blockSize = given === '512' ? 512 : given === '4096' ? 4096 : null;
    if (blockSize === null) {
      throw new UserError(
        `export: --block-size must be 512 or 4096, not "${values['block-size']}".`,
        undefined,
        'usage',
      );
    }
    const level = values['log-level'] ?? 'warn';
    if (!isLogLevel(level)) {
      throw new UserError(
        `export: unknown --log-level "${level}".`,
        'Use debug, info, warn or error.',
        'usage',
      );
    }
    const io = ioTuning(values);
    const spec = { ...backendSpec(target, values['create-size'], blockSize), io };
    if (spec.kind === 'file' && spec.create) warnIfOvercommitted(target, spec.sizeBytes!);
    const log = createLogger({ level, sink: process.stderr });
    // Caught from here on: a Ctrl-C while the target starts stops it once it has started.
    const stopping = stopSignal('export');
    const rt = new TargetRuntime(log);
    let created = false; // this run made the file (--create-size): it removes it on failure
    try {
      rt.addSubsystem({
        nqn,
        serial: serialFor(nqn),
        model: 'BranchSAN export',
        allowAnyHost: hosts.length === 0,
        hosts,
      });
      const backend = await rt.addNamespace(nqn, {
        nsid: 1,
        backend: spec,
        anaGroup: 1,
        ...stableIds(`${nqn}\0${target}`),
      });
      created = spec.kind === 'file' && spec.create === true;
      const bound = await rt.addPort({ portId: 1, host, port });
      printConnectHelp({
        tuned: Object.keys(io).length > 0 && backend instanceof FdBackend ? backend : null,
        target,
        size: backend.sizeBytes,
        blockSize: backend.blockSize,
        nqn,
        host,
        port: bound.port,
        hosts,
      });
    } catch (err) {
      await rt.close();
      // a file made by --create-size for a target that never started: without this,
      // the same command run again (say with a free port) says the file already exists.
      // Only one this run made: a failure to create it leaves what is at the path alone.
      if (created) fs.rmSync(target, { force: true });
      throw err;
    }
    await stopping;
    console.log('Stopping: disconnecting hosts and flushing.');
    await rt.close();
    return 0;
  },
};

type FileOrBlockSpec = Exclude<BackendSpec, { kind: 'memory' }>;

/** The volume's io tuning the flags ask for ({}: the defaults). */
function ioTuning(values: {
  'no-inline-reads'?: boolean;
  'no-inline-writes'?: boolean;
  'completion-spin-us'?: string;
}): IoTuning {
  const spin = values['completion-spin-us'];
  return {
    ...(values['no-inline-reads'] ? { inlineReads: false } : {}),
    ...(values['no-inline-writes'] ? { inlineWrites: false } : {}),
    ...(spin === undefined
      ? {}
      : {
          completionSpinMicros: parseWholeNumber('export', 'completion-spin-us', spin, {
            min: 0,
            max: 1000,
            fallback: 0,
          }),
        }),
  };
}

function backendSpec(
  target: string,
  createSize: string | undefined,
  blockSize: 512 | 4096,
): FileOrBlockSpec {
  let st: fs.Stats | undefined;
  let missing = false;
  try {
    st = fs.statSync(target);
  } catch (err) {
    // ENOENT / ENOTDIR: not there (yet); anything else the backend reports when it opens it
    missing = ['ENOENT', 'ENOTDIR'].includes((err as NodeJS.ErrnoException).code ?? '');
  }
  if (st?.isBlockDevice()) {
    if (createSize)
      throw new UserError(
        'export: --create-size is for files, not block devices.',
        undefined,
        'usage',
      );
    return { kind: 'block', path: target };
  }
  if (st?.isDirectory()) {
    throw new UserError(
      `export: ${target} is a directory.`,
      'Give a file or a block device; to create a new file in it, name the file and add --create-size SIZE.',
    );
  }
  if (st && !st.isFile()) {
    throw new UserError(
      `export: ${target} is neither a regular file nor a block device.`,
      'Give a file (for example /var/tmp/vol.img) or a block device (for example /dev/nvme1n1).',
    );
  }
  if (createSize) {
    const sizeBytes = parseSize('export: --create-size', createSize);
    if (sizeBytes % blockSize !== 0) {
      throw new UserError(
        `export: --create-size must be a multiple of the ${blockSize}-byte block size.`,
        undefined,
        'usage',
      );
    }
    if (fs.existsSync(target)) {
      throw new UserError(
        `export: ${target} already exists.`,
        'Drop --create-size to serve the existing file, or choose a new path.',
        'usage',
      );
    }
    const link = danglingLink(target);
    if (link !== null) {
      throw new UserError(
        `export: ${target} is a symbolic link to ${link}, which does not exist.`,
        'Remove the link or choose another path to create the file at, or create the file it points to and drop --create-size.',
        'usage',
      );
    }
    const dir = path.dirname(target);
    const dirProblem = directoryProblem(dir);
    if (dirProblem) {
      throw new UserError(
        `export: cannot create ${target}: ${dir} ${dirProblem}.`,
        dirProblem === 'does not exist'
          ? `Create the directory first (mkdir -p '${dir}'), or choose another path.`
          : 'Choose another path.',
      );
    }
    const denied = notWritableDir(dir);
    if (denied) {
      // before: 'cannot open PATH (EACCES): … the engine service must be able to read and
      // write it', and to fix the owner of a file that was never made
      throw new UserError(
        `export: cannot create ${target}: this user (uid ${process.getuid?.() ?? '?'}) may not write in ${dir} (${denied}).`,
        'Run it as root (sudo branchsan export …), or choose a path in a directory you may write to.',
      );
    }
    return { kind: 'file', path: target, sizeBytes, create: true, blockSize };
  }
  if (missing) {
    throw new UserError(
      `export: ${target} does not exist.`,
      `Check the path, or add --create-size SIZE (for example --create-size 10G) to create it as a sparse file.`,
    );
  }
  return { kind: 'file', path: target, blockSize };
}

/**
 * Why this process may not make a file in `dir` (its errno, owner and mode), or null
 * when it may. A read-only file system is left to the create, which says so.
 */
function notWritableDir(dir: string): string | null {
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EACCES' && code !== 'EPERM') return null;
    const st = fs.statSync(dir, { throwIfNoEntry: false });
    return st
      ? `${code}: it belongs to uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)}`
      : code;
  }
}

/** Where `target` points when it is a symbolic link whose target is missing, else null. */
function danglingLink(target: string): string | null {
  try {
    return fs.lstatSync(target).isSymbolicLink() ? fs.readlinkSync(target) : null;
  } catch {
    return null;
  }
}

/** The file is sparse, so it may be larger than the free space: say so, it is not an error. */
function warnIfOvercommitted(target: string, sizeBytes: number): void {
  let free: number;
  try {
    const s = fs.statfsSync(path.dirname(target));
    free = s.bavail * s.bsize;
  } catch {
    return;
  }
  if (sizeBytes <= free) return;
  process.stderr.write(
    `branchsan: export: note: ${formatSize(sizeBytes)} is more than the ${formatSize(free)} free on the file system of ${target}. ` +
      'The file is sparse, so this works until hosts have written that much; then their writes fail.\n',
  );
}

/** A serial number (≤ 20 chars) that stays the same for the same NQN. */
function serialFor(nqn: string): string {
  let h = 0;
  for (const c of nqn) h = (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0;
  return `BSAN${h.toString(16).padStart(8, '0')}`;
}

function printConnectHelp(o: {
  /** The served volume, when its I/O was tuned: the summary says what it got. */
  tuned: FdBackend | null;
  target: string;
  size: number;
  blockSize: number;
  nqn: string;
  host: string;
  port: number;
  hosts: string[];
}): void {
  const addr = o.host === '0.0.0.0' || o.host === '::' ? firstAddress() : o.host;
  console.log(
    `Serving ${o.target} (${formatSize(o.size)}, ${o.blockSize}-byte blocks) over NVMe/TCP`,
  );
  console.log(
    `  subsystem ${o.nqn}, namespace 1, on ${joinHostPort(o.host, o.port)} (discovery on the same port)`,
  );
  if (isLoopback(o.host)) {
    console.log(
      '  listening on loopback only: other machines cannot connect (add --host 0.0.0.0, or an address of this machine, for them)',
    );
  }
  if (o.tuned) {
    const { inlineReads, inlineWrites, completionSpinMicros } = o.tuned;
    const where = (loop: boolean) => (loop ? 'on the event loop' : 'on the I/O thread');
    console.log(
      `  I/O: cached reads ${where(inlineReads !== null)}${inlineReads ? ` (${inlineReads})` : ''}, ` +
        `lone writes ${where(inlineWrites)}, completion poll ${completionSpinMicros} µs`,
    );
  }
  console.log(
    o.hosts.length
      ? `  allowed hosts: ${o.hosts.join(', ')}`
      : '  any host may connect (use --allow-host to restrict)',
  );
  console.log('On a Linux host (nvme-cli), as root:');
  console.log('  modprobe nvme-tcp');
  console.log(`  nvme discover -t tcp -a ${addr} -s ${o.port}`);
  console.log(`  nvme connect -t tcp -a ${addr} -s ${o.port} -n ${o.nqn}`);
  const asHost = o.hosts.length ? ` --hostnqn ${o.hosts[0]}` : '';
  console.log(`To check it from any machine with BranchSAN (reads only):`);
  console.log(`  branchsan probe ${joinHostPort(addr, o.port)}${asHost}`);
  console.log('Press Ctrl-C to stop.');
}

/**
 * The address --host names: it is what the discovery log advertises as TRADDR, which
 * hosts connect to and which must be an address (a name there is refused by hosts, and
 * its address family would be guessed). 'localhost' is 127.0.0.1, as for the console.
 */
async function listenAddress(host: string): Promise<string> {
  if (net.isIP(host) !== 0) return host;
  if (host.toLowerCase() === 'localhost') return '127.0.0.1';
  try {
    return (await dns.promises.lookup(host)).address;
  } catch (err) {
    throw new UserError(
      `export: --host ${host} is not an address of this machine, and no name that resolves (${(err as NodeJS.ErrnoException).code ?? 'error'}).`,
      'Give an address of this machine (`ip -br addr` lists them), or 0.0.0.0 for all of them.',
      'usage',
    );
  }
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function firstAddress(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '<this-server-address>';
}
