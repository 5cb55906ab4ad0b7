/**
 * `branchsan service`: the engine as a systemd service (build/linux/branchsan.service).
 * A thin wrapper over systemctl so an administrator need not know the unit's name,
 * plus `install`, which puts the unit in place and creates the admin group. Where
 * there is no systemd (containers, WSL without it) it says how to run the engine
 * in the foreground instead.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_ADMIN_GROUP } from '../control/auth/admin-group.js';
import { syncDirectory, writeFileSynced } from '../util/durable.js';
import { UserError } from '../util/errors.js';
import { productRoot } from '../util/paths.js';
import { parseCommandArgs, type Command } from './command.js';

export const UNIT_NAME = 'branchsan.service';
export const UNIT_DEST = `/etc/systemd/system/${UNIT_NAME}`;
const ACTIONS = ['start', 'stop', 'restart', 'status', 'install'] as const;
type Action = (typeof ACTIONS)[number];

/** The paths the shipped unit assumes (the .deb layout). */
const PACKAGED_NODE = '/usr/bin/node';
const PACKAGED_BIN = '/opt/BranchSAN/resources/engine/bin/branchsan.js';

/** A step: a command to run, or a file to write. */
export type Step =
  | { run: string[]; why: string; optional?: boolean }
  | { write: string; content: string; mode: number; why: string };

export function systemdAvailable(): boolean {
  // sd_booted(3): systemd is PID 1 exactly when this directory exists
  return fs.existsSync('/run/systemd/system') && onPath('systemctl');
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d && fs.existsSync(path.join(d, cmd)));
}

/**
 * The unit for this installation: the shipped one, with ExecStart pointed at this
 * node binary and this copy of BranchSAN when it is not the packaged layout.
 */
export function unitFor(unitText: string, nodePath: string, binPath: string): string {
  return unitText.replace(
    `ExecStart=${PACKAGED_NODE} ${PACKAGED_BIN}`,
    `ExecStart=${nodePath} ${binPath}`,
  );
}

export function planInstall(o: {
  unitText: string;
  nodePath: string;
  binPath: string;
  groupExists: boolean;
  group?: string;
}): Step[] {
  const group = o.group ?? DEFAULT_ADMIN_GROUP;
  const steps: Step[] = [];
  if (!o.groupExists) {
    steps.push({
      run: ['groupadd', '--system', group],
      why: `create the group ${group}: its members may manage the engine`,
    });
  }
  steps.push(
    {
      write: UNIT_DEST,
      content: unitFor(o.unitText, o.nodePath, o.binPath),
      mode: 0o644,
      why: 'install the unit',
    },
    { run: ['systemctl', 'daemon-reload'], why: 'make systemd read it' },
    { run: ['systemctl', 'enable', '--now', UNIT_NAME], why: 'start it now and at every boot' },
  );
  return steps;
}

export function planAction(action: Exclude<Action, 'install'>): Step[] {
  const args = action === 'status' ? ['status', UNIT_NAME, '--no-pager'] : [action, UNIT_NAME];
  return [{ run: ['systemctl', ...args], why: `${action} the engine service` }];
}

export const service: Command = {
  name: 'service',
  help: `Usage: branchsan service <start|stop|restart|status|install> [options]

Manages the engine as the systemd service ${UNIT_NAME}:
  start | stop | restart   systemctl <action> ${UNIT_NAME}
  status                   systemctl status ${UNIT_NAME}
  install                  create the ${DEFAULT_ADMIN_GROUP} group if missing, copy the unit
                           to ${UNIT_DEST}, reload systemd, enable and start it

Without systemd, run the engine in the foreground: branchsan serve --data DIR

Options:
  --unit FILE   the unit file to install          [build/linux/${UNIT_NAME}]
  --dry-run     print what would be done, change nothing`,
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      'service',
      argv,
      {
        unit: { type: 'string' },
        'dry-run': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      true,
    );
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    const action = positionals[0] as Action | undefined;
    if (!action || !ACTIONS.includes(action) || positionals.length > 1) {
      throw new UserError(
        !action
          ? 'service: say what to do: start, stop, restart, status or install.'
          : positionals.length > 1
            ? `service: give one action, not ${positionals.length} ("${positionals.join(' ')}").`
            : `service: unknown action "${action}"; use start, stop, restart, status or install.`,
        'Example: sudo branchsan service install',
        'usage',
      );
    }
    if (values.unit && action !== 'install') {
      throw new UserError('service: --unit is only for install.', undefined, 'usage');
    }
    const steps = action === 'install' ? installSteps(values.unit) : planAction(action);
    if (values['dry-run']) {
      for (const s of steps) console.log(describe(s));
      if (!systemdAvailable()) console.log('# note: systemd is not running on this machine');
      return 0;
    }
    if (!systemdAvailable()) {
      throw new UserError(
        'systemd not available: run `branchsan serve --data DIR` in the foreground instead.',
        'For example: branchsan serve --data /var/lib/branchsan (stop it with Ctrl+C or SIGTERM).',
        'unavailable',
      );
    }
    if (action === 'install' && process.getuid?.() !== 0) {
      throw new UserError(
        'service install needs root: it writes to /etc/systemd/system and may create a group.',
        'Run: sudo branchsan service install',
      );
    }
    return execute(steps);
  },
};

/** Where the .deb puts the unit; one in /etc/systemd/system overrides it. */
const PACKAGE_UNIT = `/lib/systemd/system/${UNIT_NAME}`;

/**
 * The shipped unit: build/linux/ in the source tree, resources/linux/ beside
 * resources/engine/ in the packaged layout (build/electron-builder.yml).
 */
export function shippedUnit(root: string, exists = fs.existsSync): string {
  const candidates = [
    path.join(root, 'build', 'linux', UNIT_NAME),
    path.join(root, '..', 'linux', UNIT_NAME),
  ];
  return candidates.find((f) => exists(f)) ?? candidates[0]!;
}

function installSteps(unitFile?: string): Step[] {
  const root = productRoot();
  const src = path.resolve(unitFile ?? shippedUnit(root));
  let unitText: string;
  try {
    unitText = fs.readFileSync(src, 'utf8');
  } catch (err) {
    throw new UserError(
      `service: cannot read the unit file ${src} (${(err as NodeJS.ErrnoException).code}).`,
      unitFile
        ? 'Check the path given to --unit: it must name the unit file itself.'
        : 'Pass the unit with --unit FILE (it is build/linux/branchsan.service in the source tree).',
    );
  }
  // It replaces whatever unit is installed: refuse a file that is not one of ours.
  if (!/^\[Service\]/m.test(unitText) || !/^ExecStart=.*branchsan/m.test(unitText)) {
    throw new UserError(
      `service: ${src} is not a BranchSAN systemd unit (it has no [Service] section whose ExecStart runs branchsan).`,
      'Pass the unit shipped with BranchSAN (build/linux/branchsan.service), or a copy of it you edited.',
      'usage',
    );
  }
  const binPath = path.join(root, 'bin', 'branchsan.js');
  if (/^\/(root|home)(\/|$)/.test(root)) {
    console.error(
      `branchsan: warning: BranchSAN is under ${root}, which the unit hides from the service (ProtectHome=yes). Install it under /opt for the service to start.`,
    );
  }
  if (fs.existsSync(PACKAGE_UNIT)) {
    console.error(
      `branchsan: warning: the package already installed ${PACKAGE_UNIT}; the unit written to ${UNIT_DEST} overrides it until you delete that file.`,
    );
  }
  const groupExists =
    spawnSync('getent', ['group', DEFAULT_ADMIN_GROUP], { stdio: 'ignore' }).status === 0;
  return planInstall({ unitText, nodePath: process.execPath, binPath, groupExists });
}

/**
 * Puts `content` at `dest` whole or not at all: written beside it, synced, then renamed
 * over it. Written in place, a full disk or a crash would leave a cut-off unit (the
 * service then fails to start), and an installed unit that is a symbolic link (\`systemctl
 * link\`, the package's unit linked in) would have its target overwritten.
 */
export function writeUnit(dest: string, content: string, mode: number): void {
  const tmp = path.join(path.dirname(dest), `.${path.basename(dest)}.${process.pid}.tmp`);
  try {
    writeFileSynced(tmp, content, mode);
    fs.renameSync(tmp, dest);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new UserError(
      `service: cannot write ${dest} (${code}); the unit installed before, if any, is unchanged.`,
      code === 'ENOSPC' || code === 'EDQUOT'
        ? `Free space on the file system of ${path.dirname(dest)}, then run it again.`
        : `Check that ${path.dirname(dest)} exists and is writable, then run it again.`,
    );
  }
  syncDirectory(path.dirname(dest));
}

function describe(s: Step): string {
  return 'run' in s
    ? `${s.run.join(' ')}    # ${s.why}`
    : `write ${s.write} (mode ${s.mode.toString(8)})    # ${s.why}`;
}

function execute(steps: Step[]): number {
  for (const s of steps) {
    if ('write' in s) {
      writeUnit(s.write, s.content, s.mode);
      console.log(`wrote ${s.write}`);
      continue;
    }
    const r = spawnSync(s.run[0]!, s.run.slice(1), { stdio: 'inherit' });
    if (r.error) {
      throw new UserError(
        `service: cannot run ${s.run[0]}: ${(r.error as NodeJS.ErrnoException).code ?? r.error.message}.`,
        'Check that systemd and its tools are installed.',
      );
    }
    // status exits 3 for a stopped service: pass that on rather than call it a failure
    if (s.run[1] === 'status') return r.status ?? 1;
    if (r.status !== 0 && !s.optional) {
      throw new UserError(
        `service: \`${s.run.join(' ')}\` failed (exit ${r.status}) while trying to ${s.why}.`,
        `See: journalctl -u ${UNIT_NAME} -n 50`,
      );
    }
  }
  return 0;
}
