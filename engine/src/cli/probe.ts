/** `branchsan probe`: an NVMe/TCP target as a host sees it (host/probe.ts does the work). */
import path from 'node:path';
import { nqnProblem } from '../core/index.js';
import { probeTargets, type MultiProbeReport, type ProbeProblem } from '../host/probe.js';
import { heldNote, holdCpuLatency } from '../service/cpu-latency.js';
import { errorCode, UserError } from '../util/errors.js';
import { readIfRegular } from '../util/secret-file.js';
import { joinHostPort } from '../util/host-port.js';
import { parseCommandArgs, parseWholeNumber, type Command } from './command.js';
import { formatSize } from './sizes.js';

const DEFAULT_PORT = 4420;
/** The host library's default I/O queue size: deeper would only wait in the library. */
const MAX_QD = 128;
/** Both nodes of a pair, and each with a second network, with room to spare. */
const MAX_ADDRESSES = 8;
/**
 * Where nvme-cli keeps this machine's host identity; probe uses the same one.
 * BRANCHSAN_NVME_DIR names another directory (tests; a host whose nvme-cli keeps it
 * elsewhere).
 */
const NVME_DIR = process.env.BRANCHSAN_NVME_DIR || '/etc/nvme';
const HOSTNQN_FILE = path.join(NVME_DIR, 'hostnqn');
const HOSTID_FILE = path.join(NVME_DIR, 'hostid');

export const probe: Command = {
  name: 'probe',
  help: `Usage: branchsan probe HOST[:PORT]... [--nqn NQN] [--hostnqn NQN] [--hostid UUID]
                       [--seconds N] [--qd N] [--digests] [--no-cpu-latency] [--json]

Checks an NVMe/TCP target the way a host sees it: reads the discovery log at
HOST:PORT, connects to each NVMe subsystem it lists for this host, identifies the
controller and every namespace (size, block size, NGUID, ANA state), and reads random
4 KiB blocks from each for a moment, one at a time by default, to show the latency a
VM would see. It only reads: probing a volume in use changes nothing on it. Works against any
NVMe/TCP target (BranchSAN, the Linux kernel's, SPDK).

Give every node of a pair (up to 8 addresses) to check the paths as a multipath host
would: a namespace reached through several paths must be the same disk on each
(byte-identical NGUID, EUI64, UUID, format and size), and one path should be ANA
optimized.

Options:
  --nqn NQN       probe this subsystem at each HOST:PORT directly, without discovery
  --hostnqn NQN   the host NQN to connect as       [${HOSTNQN_FILE}, else a new one]
  --hostid UUID   the host identifier              [${HOSTID_FILE}, else a new one]
  --seconds N     seconds of reads per namespace; 0 skips the read test     [1]
  --qd N          reads in flight at a time (1-128), for the IOPS a path carries [1];
                  fewer if the controller's I/O queue holds fewer (the report says so)
  --digests       use header and data digests (CRC32C)
  --no-cpu-latency
                  let this machine's CPUs sleep deeply during the read test; by
                  default probe holds a 0 µs CPU wake-up latency request (PM QoS,
                  root only) as a host tuned for storage latency does, and as
                  \`branchsan bench\` does: a VM's CPU waking from a deep sleep can
                  add 50 µs or more to every read
  --json          one JSON object on stdout

PORT defaults to ${DEFAULT_PORT}; an IPv6 address goes in brackets: [fd00::1]:4420.
Exit status: 0 when everything answered, 1 when the report names a problem (each
with what to do), 2 for a mistake in the command line.

Examples:
  branchsan probe 192.0.2.10
  branchsan probe 192.0.2.10 192.0.2.11
  branchsan probe 192.0.2.10:4420 --nqn nqn.2026-01.io.branchsan:vol1 --seconds 5`,
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      'probe',
      argv,
      {
        nqn: { type: 'string' },
        hostnqn: { type: 'string' },
        hostid: { type: 'string' },
        seconds: { type: 'string' },
        qd: { type: 'string' },
        digests: { type: 'boolean' },
        'no-cpu-latency': { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      true,
    );
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    if (positionals.length === 0 || positionals.length > MAX_ADDRESSES) {
      throw new UserError(
        positionals.length === 0
          ? 'probe: give the target address, HOST or HOST:PORT.'
          : `probe: give at most ${MAX_ADDRESSES} target addresses, not ${positionals.length}.`,
        'Example: branchsan probe 192.0.2.10:4420 (or both nodes of a pair: branchsan probe 192.0.2.10 192.0.2.11)',
        'usage',
      );
    }
    const addresses = positionals.map(parseAddress);
    const spelled = addresses.map((a) => joinHostPort(a.host.toLowerCase(), a.port));
    const twice = spelled.find((a, i) => spelled.indexOf(a) !== i);
    if (twice) {
      // Two controllers through one address are two paths to one node, not a pair:
      // the cross-path checks would pass and prove nothing.
      throw new UserError(
        `probe: ${twice} is given twice.`,
        'Give each node of a pair once: branchsan probe 192.0.2.10 192.0.2.11',
        'usage',
      );
    }
    const seconds = values.seconds === undefined ? 1 : Number(values.seconds);
    if (!(seconds >= 0 && seconds <= 600)) {
      throw new UserError(
        `probe: --seconds must be a number from 0 to 600, not "${values.seconds}".`,
        undefined,
        'usage',
      );
    }
    const qd = parseWholeNumber('probe', 'qd', values.qd, { min: 1, max: MAX_QD, fallback: 1 });
    for (const flag of ['nqn', 'hostnqn'] as const) {
      const problem = values[flag] === undefined ? null : nqnProblem(values[flag]);
      if (problem) {
        throw new UserError(
          `probe: --${flag} "${values[flag]}": ${problem}.`,
          'An NQN looks like nqn.2014-08.org.nvmexpress:uuid:… or nqn.2026-01.com.example:name.',
          'usage',
        );
      }
    }
    const hostid = values.hostid ?? readIdentityFile(HOSTID_FILE, 'hostid');
    if (hostid !== undefined && !/^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$/i.test(hostid)) {
      throw new UserError(
        `probe: the host identifier "${hostid}"${values.hostid ? '' : ` (from ${HOSTID_FILE})`} is not a UUID.`,
        'Give one with --hostid, for example the output of `uuidgen`.',
        'usage',
      );
    }
    const hostnqn = values.hostnqn ?? validNqn(readIdentityFile(HOSTNQN_FILE, 'hostnqn'));
    let cpuLatency = values['no-cpu-latency']
      ? 'not requested (--no-cpu-latency)'
      : 'not requested (no read test: --seconds 0)';
    let hold: { close(): void } | null = null;
    if (!values['no-cpu-latency'] && seconds > 0) {
      try {
        hold = holdCpuLatency(0);
        cpuLatency = heldNote('during the read test');
      } catch (err) {
        cpuLatency = `not held: ${(err as Error).message}`;
      }
    }
    let probed: MultiProbeReport;
    try {
      probed = await probeTargets(addresses, {
        subnqn: values.nqn,
        hostnqn,
        hostid,
        readSeconds: seconds,
        readQd: qd,
        digests: values.digests ?? false,
      });
    } finally {
      hold?.close();
    }
    const report = { ...probed, cpu_latency_request: cpuLatency };
    if (values.json) {
      console.log(JSON.stringify(report, null, 2));
      return report.ok ? 0 : 1;
    }
    const only = report.targets.length === 1 ? report.targets[0]! : null;
    if (only?.problem) throw new UserError(only.problem.error, only.problem.hint);
    printReport(report);
    return report.ok ? 0 : 1;
  },
};

/** HOST, HOST:PORT, [V6] or [V6]:PORT; a bare IPv6 address (two colons or more) is a host. */
function parseAddress(text: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\](?::(.*))?$/.exec(text) ?? /^([^:]+)(?::(.*))?$/.exec(text);
  const bareV6 = !m && (text.match(/:/g) ?? []).length >= 2;
  const host = bareV6 ? text : m?.[1];
  if (!host || /[[\]]/.test(host)) {
    throw new UserError(
      `probe: "${text}" is not a target address.`,
      'Give HOST or HOST:PORT, for example 192.0.2.10:4420 or [fd00::1]:4420.',
      'usage',
    );
  }
  const given = bareV6 ? undefined : m?.[2];
  const port = given === undefined ? DEFAULT_PORT : /^\d+$/.test(given) ? Number(given) : NaN;
  if (!(port >= 1 && port <= 65535)) {
    throw new UserError(
      `probe: the port in "${text}" must be a number from 1 to 65535.`,
      `Example: branchsan probe ${joinHostPort(host, DEFAULT_PORT)}`,
      'usage',
    );
  }
  return { host, port };
}

/**
 * nvme-cli's host identity file, or undefined when there is none (the library makes one
 * up). Opened without blocking and read only if a regular file (readIfRegular): a named
 * pipe there would hold probe in open() for good. One that cannot be read is refused,
 * not passed over: probing as a made-up host would report what another host sees.
 */
function readIdentityFile(file: string, flag: 'hostnqn' | 'hostid'): string | undefined {
  const what = flag === 'hostnqn' ? 'host NQN' : 'host identifier';
  const orGive = `give the ${what} with --${flag}`;
  const remake = flag === 'hostnqn' ? `nvme gen-hostnqn > ${file}` : `uuidgen > ${file}`;
  let got: { text: string | null; stats: { isDirectory(): boolean } | null };
  try {
    got = readIfRegular(file);
  } catch (err) {
    const code = errorCode(err) || (err as Error).message;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    if (code === 'ENXIO')
      got = { text: null, stats: null }; // a socket: open() refuses it
    else
      throw new UserError(
        `probe: this machine's ${what} file ${file} could not be read (${code}).`,
        `Check it (ls -l ${file}) and run probe as a user who may read it, or ${orGive}.`,
      );
  }
  if (got.text === null) {
    const what2 = got.stats?.isDirectory()
      ? 'a directory'
      : 'a special file (a named pipe, socket or device)';
    throw new UserError(
      `probe: this machine's ${what} file ${file} is ${what2}, not a regular file.`,
      `Put nvme-cli's ${what} there (as root: rm -r ${file} && ${remake}), or ${orGive}.`,
    );
  }
  return got.text.trim() || undefined;
}

function validNqn(nqn: string | undefined): string | undefined {
  return nqn !== undefined && nqnProblem(nqn) === null ? nqn : undefined;
}

function printReport(r: MultiProbeReport & { cpu_latency_request: string }): void {
  let problems = 0;
  const problem = (indent: string, p: ProbeProblem) => {
    problems++;
    console.log(`${indent}PROBLEM: ${p.error}`);
    console.log(`${indent}  What to do: ${p.hint}`);
  };
  console.log(`Host NQN ${r.hostnqn}; CPU wake-up latency request: ${r.cpu_latency_request}`);
  for (const t of r.targets) {
    console.log(`Probed ${t.address}`);
    if (t.problem) problem('  ', t.problem);
    for (const s of t.subsystems) {
      console.log(`Subsystem ${s.subnqn} at ${s.address}`);
      const c = s.controller;
      if (c) {
        console.log(
          `  controller ${c.cntlid}: ${c.model}, serial ${c.serial}, firmware ${c.firmware}, ` +
            `largest transfer ${c.max_transfer_bytes ? formatSize(c.max_transfer_bytes) : 'not limited'}`,
        );
      }
      if (s.problem) problem('  ', s.problem);
      for (const n of s.namespaces) {
        const ana = n.ana_state === 'n/a' ? 'no ANA' : `ANA ${n.ana_state} (group ${n.ana_group})`;
        const id = n.nguid ? `, NGUID ${n.nguid}` : n.uuid ? `, UUID ${n.uuid}` : '';
        const size =
          n.size_bytes === null ? '' : `${formatSize(n.size_bytes)}, ${n.block_size}-byte blocks, `;
        console.log(`  namespace ${n.nsid}: ${size}${ana}${id}`);
        const test = n.read_test;
        if (test) {
          console.log(
            `    ${formatSize(test.bytes_per_read)} random reads at QD${test.qd}: ${test.iops}/s, latency µs ` +
              `mean ${test.lat_us.mean}, p50 ${test.lat_us.p50}, p99 ${test.lat_us.p99}, max ${test.lat_us.max} (${test.reads} reads)`,
          );
          if (test.qd < test.qd_asked) {
            console.log(
              `    (QD${test.qd}, not the ${test.qd_asked} asked: the controller's I/O queue holds ${test.qd} command${test.qd === 1 ? '' : 's'} at a time)`,
            );
          }
        }
        if (n.problem) problem('    ', n.problem);
      }
    }
  }
  for (const p of r.paths) {
    const list = p.paths.map((x) => `${x.address} ${x.ana_state}`).join(', ');
    console.log(`Paths to namespace ${p.nsid} of ${p.subnqn}: ${list}`);
    if (p.problem) problem('  ', p.problem);
    else console.log('  the same namespace on every path, and one of them optimized');
  }
  console.log(problems ? `${problems} problem(s) found.` : 'No problems found.');
}
