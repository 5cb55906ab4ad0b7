import fs from 'node:fs';
import os from 'node:os';
import { abandonBenchmark, formatTable, runBenchmark } from '../bench/run.js';
import { UserError } from '../util/errors.js';
import {
  directoryProblem,
  onStopRequest,
  parseCommandArgs,
  prepareOutFile,
  type Command,
} from './command.js';

export const bench: Command = {
  name: 'bench',
  help: `Usage: branchsan bench [--json] [--quick] [--seconds N] [--rounds N] [--out FILE]
                       [--disk-dir DIR | --device DEV [--device-writes]]
                       [--no-cpu-latency] [--no-inline-reads] [--no-inline-writes]

Runs, in one process tree and one run, these patterns (QD is per queue):
  4 KiB random read and random write   QD1 with 1 I/O queue; QD32 with 1 and 2
  128 KiB sequential read and write    QD8 with 1 I/O queue
QD1 measures one I/O at a time: a second queue would put a second one in flight.
128 KiB with 2 queues is left out to keep a full run under 3 minutes. Legs:
  local     the target's backend driven directly: a file in /dev/shm and one on
            disk, both through the page cache as the target serves them (no
            O_DIRECT: the disk's numbers are of its cached file, not the device);
            or, with --device, a block device, as the target serves one
  remote    the same pattern through BranchSAN's NVMe/TCP target on loopback, with
            the host library in a separate process
  floor     a bare TCP request/response between the same processes, moving the
            bytes NVMe/TCP moves per I/O in one exchange
  floor+io  the floor with its server doing the same backend I/O (4 KiB patterns,
            RAM-backed file, or the --device): no NVMe/TCP, so remote against it is
            BranchSAN's own cost, and its ratio to local is the best any target
            could reach here
It reports IOPS, MB/s (MB = 10^6 bytes), latency in µs (mean, p50, p99, p99.9),
CPU per I/O, and remote as a ratio of local. Each pattern runs in rounds that
interleave the legs (this machine's speed drifts), after an unmeasured warm-up of
each leg; every leg reports its median round (the mean of the two middle ones for
an even count), and the JSON keeps each round's IOPS and remote/local ratio. A
pattern whose round ratios are more than 15% apart gets a "noisy:" line under the
table: run it again before comparing that ratio. Progress goes to stderr.

Options:
  --json          one JSON object on stdout (the table goes to stderr)
  --quick         only the 4 KiB patterns, on the RAM-backed file, shorter rounds
  --disk-dir DIR  where the on-disk benchmark file goes        [system temp dir,
                  or /var/tmp when that is in RAM (tmpfs)]; not with --quick
  --device DEV    measure the block device DEV instead of the two files (the
                  rows' backend is "device"): random offsets over its whole
                  capacity, through the page cache as the target serves a block
                  device. Only the read patterns: reads change nothing on it, and
                  it may be in use. With --quick, only the 4 KiB patterns. Reads
                  of blocks never written can be faster than of data on a thin or
                  flash device
  --device-writes with --device, run the write patterns too: THEY OVERWRITE THE
                  DEVICE'S DATA. Refused while the device is mounted or held
                  (RAID, LVM, an engine serving it); no one can mount or claim it
                  during the run
  --seconds N     measured seconds per leg and round            [0.75; quick 0.5]
  --rounds N      rounds per pattern                            [3]
  --out FILE      also write the JSON report to FILE
  --no-cpu-latency
                  let the CPUs sleep deeply during the run; by default the bench
                  holds a 0 µs CPU wake-up latency request (PM QoS, root only), as
                  the engine does while I/O flows
  --no-inline-reads
                  send every read through the storage I/O thread, even one the
                  page cache holds (by default those are served on the event
                  loop); local and remote alike, for comparisons
  --no-inline-writes
                  send every write through the storage I/O thread, even a lone
                  one to the RAM-backed file (by default those run on the event
                  loop); local and remote alike, for comparisons`,
  async run(argv) {
    const { values } = parseCommandArgs('bench', argv, {
      json: { type: 'boolean' },
      quick: { type: 'boolean' },
      'disk-dir': { type: 'string' },
      device: { type: 'string' },
      'device-writes': { type: 'boolean' },
      seconds: { type: 'string' },
      rounds: { type: 'string' },
      out: { type: 'string' },
      'no-cpu-latency': { type: 'boolean' },
      'no-inline-reads': { type: 'boolean' },
      'no-inline-writes': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    const seconds = values.seconds === undefined ? undefined : Number(values.seconds);
    if (seconds !== undefined && !(seconds > 0 && seconds <= 60)) {
      console.error('branchsan: bench: --seconds must be a number of seconds between 0 and 60.');
      return 2;
    }
    const rounds = values.rounds === undefined ? undefined : Number(values.rounds);
    if (rounds !== undefined && !(Number.isInteger(rounds) && rounds >= 1 && rounds <= 20)) {
      console.error('branchsan: bench: --rounds must be a whole number from 1 to 20.');
      return 2;
    }
    // Checked before the run, which takes minutes: not after it, losing the results.
    if (values['disk-dir'] && values.quick) {
      // quick measures the RAM-backed file only: the disk's rows would silently be absent
      throw new UserError(
        'bench: --disk-dir has no effect with --quick, which measures only the RAM-backed file.',
        'Drop --quick to measure the disk too (a full run, about 3 minutes), or drop --disk-dir.',
        'usage',
      );
    }
    if (values['disk-dir']) checkDiskDir(values['disk-dir']);
    if (values['device-writes'] && values.device === undefined) {
      throw new UserError(
        'bench: --device-writes needs --device DEV, the block device whose data the write patterns may overwrite.',
        'Add --device DEV, or drop --device-writes (the files the benchmark makes always get the writes).',
        'usage',
      );
    }
    if (values.device !== undefined && values['disk-dir']) {
      throw new UserError(
        'bench: --device and --disk-dir each name what to measure; give one.',
        'Drop --disk-dir to measure the device, or --device to measure the file systems.',
        'usage',
      );
    }
    if (values.out) {
      prepareOutFile('bench', values.out, 'bench.json');
      checkOutWritable(values.out);
    }
    // Ctrl-C, SIGTERM or a hangup mid-run (or the launcher gone): the run's own cleanup
    // is never reached, so remove its files (RAM in /dev/shm) and stop its peer process
    // here, then exit as signalled. The handlers stay installed for the whole run: a
    // Ctrl-C often arrives twice (the launcher forwards its copy), and the second one,
    // with no handler left, killed the process mid-cleanup, leaving the files behind.
    const interrupted = (sig: NodeJS.Signals) => {
      process.stderr.write(`[bench] ${sig}: stopped; removing the benchmark files\n`);
      abandonBenchmark();
      process.exit(128 + (os.constants.signals[sig] ?? 0));
    };
    const stopCatching = onStopRequest('bench', interrupted);
    // A crash mid-run (an uncaught exception) skips the run's cleanup too.
    process.once('exit', abandonBenchmark);
    const report = await runBenchmark({
      quick: values.quick ?? false,
      ...(values['disk-dir'] ? { diskDir: values['disk-dir'] } : {}),
      ...(values.device !== undefined ? { device: values.device } : {}),
      deviceWrites: values['device-writes'] ?? false,
      ...(seconds ? { seconds } : {}),
      ...(rounds ? { rounds } : {}),
      cpuLatency: !values['no-cpu-latency'],
      inlineReads: !values['no-inline-reads'],
      inlineWrites: !values['no-inline-writes'],
      progress: (line) => process.stderr.write(`[bench] ${line}\n`),
    });
    stopCatching();
    process.off('exit', abandonBenchmark);
    process.stderr.write(formatTable(report) + '\n');
    process.stderr.write(`[bench] done in ${report.elapsed_s} s\n`);
    const json = JSON.stringify(report) + '\n';
    if (values.json) process.stdout.write(json);
    if (values.out) {
      try {
        fs.writeFileSync(values.out, json);
      } catch (err) {
        throw new UserError(
          `bench: cannot write the report to ${values.out} (${(err as NodeJS.ErrnoException).code}).`,
          values.json
            ? 'The same JSON report went to standard output.'
            : 'The table above has the results; run again with --json to get the report on standard output.',
        );
      }
      process.stderr.write(`[bench] report written to ${values.out}\n`);
    }
    return 0;
  },
};

function checkDiskDir(dir: string): void {
  const problem = directoryProblem(dir);
  if (problem) {
    throw new UserError(
      `bench: --disk-dir ${dir} ${problem}.`,
      'Give an existing directory on the disk to measure, for example --disk-dir /var/tmp.',
      'usage',
    );
  }
}

/**
 * Fails now, not after the run (minutes), when --out FILE cannot be written: a read-only
 * file system, a directory this user may not write. Leaves no file behind, and an
 * existing one as it was.
 */
function checkOutWritable(out: string): void {
  const existed = fs.existsSync(out);
  try {
    fs.closeSync(fs.openSync(out, 'a'));
  } catch (err) {
    throw new UserError(
      `bench: cannot write the report to --out ${out} (${(err as NodeJS.ErrnoException).code}).`,
      'Choose a file in a directory this user may write, for example --out /var/tmp/bench.json.',
    );
  }
  if (!existed) fs.rmSync(out, { force: true });
}
