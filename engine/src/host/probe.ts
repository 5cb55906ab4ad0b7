/**
 * What a host sees of an NVMe/TCP target: the discovery log, each subsystem's
 * controller, its namespaces with their ANA state, and a short read-only latency test
 * of each. `branchsan probe` prints it; the setup wizard's "test this volume from a
 * host" check is the other user.
 *
 * Read-only by construction: the only I/O commands sent are Reads, so a probe of a
 * volume in production changes nothing on it. Every problem becomes a sentence in the
 * report (with what to do) instead of an exception, so one unreachable subsystem does
 * not hide the others.
 */
import { randomUUID } from 'node:crypto';
import { SC } from '../protocol/status.js';
import { nearestRank } from '../util/nearest-rank.js';
import { joinHostPort } from '../util/host-port.js';
import { anaStateOf, parseAnaLog, type AnaLog, type AnaPathState } from './ana-log.js';
import { NvmeController, type ControllerOptions } from './controller.js';
import { discover, entryPort, type DiscoveryEntry } from './discovery.js';
import {
  HostError,
  NamespaceFormatError,
  NamespaceNotActiveError,
  NvmeStatusError,
} from './errors.js';
import { namespaceMismatch, namespaceProblem, type NamespaceView } from './multipath-policy.js';
import type { NvmeNamespace } from './namespace.js';

const TRTYPE_TCP = 3;
const SUBTYPE_NVM = 2;
/** Bytes per test read: the common hypervisor block, or one block if larger. */
const TEST_READ_BYTES = 4096;
const WARMUP_READS = 200;
const PDU_TYPE_HTTP = 0x48; // 'H' of "HTTP/1.1 ...": a web server answered

export interface ProbeOptions {
  readonly host: string;
  readonly port: number;
  /** Probe this subsystem at host:port directly instead of what discovery lists. */
  readonly subnqn?: string;
  readonly hostnqn?: string;
  readonly hostid?: string;
  /** Seconds of random reads per namespace; 0 skips the test. */
  readonly readSeconds: number;
  /** Reads in flight at a time during the test (default 1). */
  readonly readQd?: number;
  readonly digests?: boolean;
  readonly connectTimeoutMs?: number;
  /** How long one admin or read command may take (default 10 s). */
  readonly commandTimeoutMs?: number;
}

/** A problem, with what to do about it. */
export interface ProbeProblem {
  readonly error: string;
  readonly hint: string;
}

export interface ReadTest {
  /** Reads in flight at a time: as asked, or all the controller's I/O queue holds if fewer. */
  readonly qd: number;
  /** The depth asked for (readQd); above qd when the controller holds fewer. */
  readonly qd_asked: number;
  readonly reads: number;
  readonly bytes_per_read: number;
  readonly iops: number;
  readonly lat_us: { mean: number; p50: number; p99: number; max: number };
}

export interface ProbedNamespace {
  readonly nsid: number;
  /** null, with block_size: a namespace this host cannot use (its problem says why). */
  readonly size_bytes: number | null;
  readonly block_size: number | null;
  readonly nguid: string | null;
  readonly uuid: string | null;
  readonly ana_group: number;
  /** 'optimized', 'non-optimized', …; 'n/a' when the controller does not report ANA. */
  readonly ana_state: AnaPathState | 'n/a';
  readonly read_test: ReadTest | null;
  readonly problem: ProbeProblem | null;
}

export interface ProbedSubsystem {
  readonly subnqn: string;
  readonly address: string;
  readonly controller: {
    readonly model: string;
    readonly serial: string;
    readonly firmware: string;
    readonly cntlid: number;
    /** null: the controller sets no limit (MDTS 0). */
    readonly max_transfer_bytes: number | null;
    /** CMIC bit 1: the subsystem may have several controllers (a host needs it to use
     * a second path; Linux refuses the second controller otherwise). */
    readonly multi_controller: boolean;
  } | null;
  readonly namespaces: ProbedNamespace[];
  readonly problem: ProbeProblem | null;
}

export interface ProbeReport {
  readonly address: string;
  readonly hostnqn: string;
  /** The discovery log's NVM subsystem entries; null when --nqn skipped discovery. */
  readonly discovered: { subnqn: string; address: string; portid: number }[] | null;
  readonly subsystems: ProbedSubsystem[];
  /** Discovery's own failure (nothing else could be probed then). */
  readonly problem: ProbeProblem | null;
  /** True when nothing in the report is a problem. */
  readonly ok: boolean;
}

/** Probes the target at opts.host:opts.port; never throws for what the target does. */
export async function probeTarget(opts: ProbeOptions): Promise<ProbeReport> {
  return probeOne(opts, null);
}

/**
 * probeTarget, with each controller's close handed to `held` instead of done at once
 * when it is given: probeTargets keeps every path connected until all are probed, as
 * a multipath host does, so controller IDs are compared between live controllers.
 */
async function probeOne(
  opts: ProbeOptions,
  held: (() => Promise<void>)[] | null,
): Promise<ProbeReport> {
  const address = joinHostPort(opts.host, opts.port);
  // One identity for discovery and every connect, so the target's allow-list sees one host.
  const { hostid, hostnqn } = hostIdentity(opts);
  const common = {
    hostnqn,
    hostid,
    hdgst: opts.digests ?? false,
    ddgst: opts.digests ?? false,
    connectTimeoutMs: opts.connectTimeoutMs ?? 5000,
    // A probe waits seconds, not the minute a host waits, for a target that went quiet.
    adminTimeoutMs: opts.commandTimeoutMs ?? 10_000,
    ioTimeoutMs: opts.commandTimeoutMs ?? 10_000,
  };
  let targets: ProbeTarget[];
  let discovered: ProbeReport['discovered'] = null;
  if (opts.subnqn) {
    targets = [{ subnqn: opts.subnqn, host: opts.host, port: opts.port, trsvcid: `${opts.port}` }];
  } else {
    try {
      const log = await discover({ ...common, host: opts.host, port: opts.port });
      const nvm = log.entries.filter((e) => e.subtype === SUBTYPE_NVM);
      discovered = nvm.map((e) => ({
        subnqn: e.subnqn,
        address: joinHostPort(e.traddr, e.trsvcid),
        portid: e.portid,
      }));
      targets = nvm.filter((e) => e.trtype === TRTYPE_TCP).map((e) => entryAddress(e, opts));
    } catch (err) {
      const problem = explain(err, `discovery at ${address}`, hostnqn);
      return { address, hostnqn, discovered: null, subsystems: [], problem, ok: false };
    }
    if (targets.length === 0) {
      const problem = {
        error: `the discovery log at ${address} lists no NVMe/TCP subsystem this host may use`,
        hint:
          'A target lists only the subsystems whose allowed hosts include this host NQN ' +
          `(${hostnqn}): allow it on the target, or pass --hostnqn with an allowed one.`,
      };
      return { address, hostnqn, discovered, subsystems: [], problem, ok: false };
    }
  }
  const subsystems: ProbedSubsystem[] = [];
  for (const t of targets) {
    subsystems.push(
      t.port === null
        ? unusableEntry(t, address)
        : await probeSubsystem({ ...t, port: t.port }, common, opts, hostnqn, held),
    );
  }
  const ok = subsystems.every((s) => !s.problem && s.namespaces.every((n) => !n.problem));
  return { address, hostnqn, discovered, subsystems, problem: null, ok };
}

/** One namespace of one subsystem as seen through several paths (addresses). */
export interface PathCheck {
  readonly subnqn: string;
  readonly nsid: number;
  readonly paths: { address: string; ana_state: ProbedNamespace['ana_state'] }[];
  /** Null when every path shows the same namespace and one of them is optimized. */
  readonly problem: ProbeProblem | null;
}

export interface MultiProbeReport {
  readonly hostnqn: string;
  /** One report per address probed, in the order given. */
  readonly targets: ProbeReport[];
  /** Every namespace reached through two paths or more, checked across them. */
  readonly paths: PathCheck[];
  readonly ok: boolean;
}

/**
 * Probes each address as one host (one host NQN and host id for all), then checks
 * every namespace of a subsystem reached at more than one address: every such address
 * must serve it (else a host loses it with the one node that does); the nodes of a
 * pair must present byte-identical identities (NGUID, EUI64, UUID, format, size), or a
 * host that merges the paths would scatter a volume's writes over two disks; each
 * controller must allow others in its subsystem (CMIC bit 1) and have its own ID; and
 * one path should be optimized.
 */
export async function probeTargets(
  addresses: readonly { host: string; port: number }[],
  opts: Omit<ProbeOptions, 'host' | 'port'>,
): Promise<MultiProbeReport> {
  const { hostid, hostnqn } = hostIdentity(opts);
  const targets: ProbeReport[] = [];
  const held: (() => Promise<void>)[] = [];
  try {
    for (const a of addresses)
      targets.push(await probeOne({ ...opts, ...a, hostid, hostnqn }, held));
  } finally {
    await Promise.all(held.map((close) => close()));
  }
  const groups = new Map<string, { subnqn: string; nsid: number; seen: Seen[] }>();
  /** The addresses at which each subsystem's controller was reached. */
  const reached = new Map<string, string[]>();
  for (const t of targets) {
    for (const s of t.subsystems) {
      if (!s.controller) continue;
      reached.set(s.subnqn, [...(reached.get(s.subnqn) ?? []), s.address]);
      for (const n of s.namespaces) {
        const key = `${s.subnqn}\0${n.nsid}`;
        let g = groups.get(key);
        if (!g) groups.set(key, (g = { subnqn: s.subnqn, nsid: n.nsid, seen: [] }));
        g.seen.push({ address: s.address, ns: n, controller: s.controller });
      }
    }
  }
  const paths = [...groups.values()]
    .filter((g) => reached.get(g.subnqn)!.length > 1)
    .map((g) => ({
      subnqn: g.subnqn,
      nsid: g.nsid,
      paths: g.seen.map((x) => ({ address: x.address, ana_state: x.ns.ana_state })),
      problem:
        missingPathProblem(g.subnqn, g.nsid, g.seen, reached.get(g.subnqn)!) ??
        crossPathProblem(g.subnqn, g.nsid, g.seen),
    }));
  const ok = targets.every((t) => t.ok) && paths.every((p) => !p.problem);
  return { hostnqn, targets, paths, ok };
}

interface Seen {
  address: string;
  ns: ProbedNamespace;
  controller: NonNullable<ProbedSubsystem['controller']>;
}

/** The namespace is missing at an address where its subsystem was reached. */
function missingPathProblem(
  subnqn: string,
  nsid: number,
  seen: Seen[],
  reachedAt: string[],
): ProbeProblem | null {
  const missing = reachedAt.filter((a) => !seen.some((x) => x.address === a));
  if (missing.length === 0) return null;
  const have = seen.map((x) => x.address).join(', ');
  return {
    error: `namespace ${nsid} of ${subnqn} is served at ${have} but not at ${missing.join(', ')}: hosts lose it when ${have} goes down`,
    hint: 'Serve the volume on every node of the pair (a mirrored volume is exported by both), or check why that node does not list it (`branchsan status` there).',
  };
}

function crossPathProblem(subnqn: string, nsid: number, seen: Seen[]): ProbeProblem | null {
  const what = `namespace ${nsid} of ${subnqn}`;
  const refused = seen.find((x) => !views.has(x.ns));
  if (refused) {
    return {
      error: `${what} cannot be used at ${refused.address}, so a host has one path less to it: ${refused.ns.problem?.error}`,
      hint: 'Fix the problem reported for it at that address first; the paths are checked against each other then.',
    };
  }
  const [first, ...rest] = seen;
  const a = views.get(first!.ns)!;
  for (const x of seen) {
    const why = namespaceProblem(views.get(x.ns)!);
    if (why) {
      return {
        error: `${what} at ${x.address}: ${why}, so a host cannot use it through several paths`,
        hint: "Present it with NMIC bit 0 set and a stable NGUID or UUID on every node (BranchSAN does); check the target's volume settings.",
      };
    }
  }
  for (const x of rest) {
    const diff = namespaceMismatch(a, views.get(x.ns)!);
    if (diff) {
      return {
        error: `${what} is not the same disk at ${first!.address} and ${x.address} (${diff}): a host that merges these paths would scatter the volume's writes over two disks`,
        hint: 'Connect no host to both until the nodes present one volume under this NQN: check that both serve the same mirrored volume, and the NQN and namespace IDs on each.',
      };
    }
  }
  const single = seen.find((x) => !x.controller.multi_controller);
  if (single) {
    return {
      error: `the controller at ${single.address} says ${subnqn} has no other controllers (CMIC bit 1 clear): Linux refuses a second path to it ("Subsystem does not support multiple controllers")`,
      hint: 'A pair must present its subsystem as multi-controller on every node (BranchSAN does); two separate targets that only share an NQN are not a pair.',
    };
  }
  for (const [i, x] of seen.entries()) {
    const id = x.controller.cntlid;
    const twin = seen.slice(0, i).find((y) => y.controller.cntlid === id);
    if (twin) {
      return {
        error: `the controllers at ${twin.address} and ${x.address} both have ID ${id} in ${subnqn}: Linux refuses the second path ("Duplicate cntlid"), and other hosts may confuse them`,
        hint: 'Give each node of the pair its own controller ID range (a BranchSAN pair does); two separate targets that only share an NQN are not a pair.',
      };
    }
  }
  const states = seen.map((x) => x.ns.ana_state);
  if (!states.includes('optimized') && !states.includes('n/a')) {
    return {
      error: `no path to ${what} is ANA optimized (${seen.map((x) => `${x.address} ${x.ns.ana_state}`).join(', ')})`,
      hint: 'Hosts fall back to a non-optimized path, or have none; check which node owns the volume and whether the other node is up.',
    };
  }
  return null;
}

/** The host's identity: as given, else a new host id and the UUID NQN made from it. */
function hostIdentity(opts: { hostid?: string; hostnqn?: string }) {
  const hostid = opts.hostid ?? randomUUID();
  return { hostid, hostnqn: opts.hostnqn ?? `nqn.2014-08.org.nvmexpress:uuid:${hostid}` };
}

/** A subsystem to probe; port null: the discovery log's TRSVCID for it names no TCP port. */
interface ProbeTarget {
  readonly subnqn: string;
  readonly host: string;
  readonly port: number | null;
  /** The port as the log (or the caller) gave it. */
  readonly trsvcid: string;
}

/** A wildcard listen address in the log means "the address you reached me at". */
function entryAddress(e: DiscoveryEntry, opts: ProbeOptions): ProbeTarget {
  const wildcard = e.traddr === '' || e.traddr === '0.0.0.0' || e.traddr === '::';
  const host = wildcard ? opts.host : e.traddr;
  return { subnqn: e.subnqn, host, port: entryPort(e), trsvcid: e.trsvcid };
}

/** A log entry no host can connect to: said for that subsystem alone, never tried. */
function unusableEntry(t: ProbeTarget, discoveredAt: string): ProbedSubsystem {
  const problem = {
    error: `the discovery log at ${discoveredAt} gives TRSVCID "${t.trsvcid}" for ${t.subnqn}, which is not a TCP port (an integer 1..65535): no host can connect to it there`,
    hint: `The target's port configuration is wrong: check its NVMe/TCP ports (\`branchsan status\` there). If you know a port that reaches it, run: branchsan probe ${joinHostPort(t.host, 'PORT')} --nqn ${t.subnqn}`,
  };
  const address = joinHostPort(t.host, t.trsvcid);
  return { subnqn: t.subnqn, address, controller: null, namespaces: [], problem };
}

async function probeSubsystem(
  t: { subnqn: string; host: string; port: number },
  common: Partial<ControllerOptions>,
  opts: ProbeOptions,
  hostnqn: string,
  held: (() => Promise<void>)[] | null,
): Promise<ProbedSubsystem> {
  const address = joinHostPort(t.host, t.port);
  let ctrl: NvmeController;
  try {
    // One entry more than the reads kept in flight: a queue of N entries holds N - 1.
    // The controller may allow fewer (CAP.MQES, MAXCMD): the read test then keeps fewer.
    const queueSize = Math.max(128, (opts.readQd ?? 1) + 1);
    ctrl = await NvmeController.connect({ ...common, ...t, ioQueues: 1, queueSize });
  } catch (err) {
    let problem = explain(err, `connect to ${t.subnqn} at ${address}`, hostnqn);
    if (!(err instanceof HostError && err.cause instanceof NvmeStatusError) && !opts.subnqn) {
      const probed = joinHostPort(opts.host, opts.port);
      if (address !== probed) {
        // The log's address may be one only the target's own network knows (NAT, port forwarding).
        problem = {
          error: problem.error,
          hint: `${problem.hint} The discovery log gives ${address} for it; if only ${probed} reaches the target from here, run: branchsan probe ${probed} --nqn ${t.subnqn}`,
        };
      }
    }
    return { subnqn: t.subnqn, address, controller: null, namespaces: [], problem };
  }
  const id = ctrl.identity;
  const controller = {
    model: id.mn,
    serial: id.sn,
    firmware: id.fr,
    cntlid: id.cntlid,
    max_transfer_bytes: id.maxTransferBytes || null,
    multi_controller: (id.cmic & 0x02) !== 0,
  };
  const namespaces: ProbedNamespace[] = [];
  try {
    const anaLog = await readAnaLog(ctrl);
    for (const nsid of await ctrl.activeNamespaces()) {
      // One namespace the library refuses is that namespace's problem: the others are
      // still probed and reported.
      const probed = await probeNamespace(ctrl, nsid, anaLog, opts).catch((err: unknown) =>
        refusedNamespace(nsid, err, anaLog),
      );
      namespaces.push(probed);
    }
    const problem =
      namespaces.length === 0
        ? {
            error: `${t.subnqn} has no namespace`,
            hint: 'Add a volume to this subsystem on the target; a host sees no disk until then.',
          }
        : null;
    return { subnqn: t.subnqn, address, controller, namespaces, problem };
  } catch (err) {
    // What was learnt before the failure stays in the report.
    const problem = explain(err, `${t.subnqn} at ${address}`, hostnqn);
    return { subnqn: t.subnqn, address, controller, namespaces, problem };
  } finally {
    const close = () => ctrl.close().catch(() => undefined);
    if (held) held.push(close);
    else await close();
  }
}

/** The ANA log, or null when the controller does not report ANA (CMIC bit 3). */
async function readAnaLog(ctrl: NvmeController): Promise<AnaLog | null> {
  const id = ctrl.identity;
  if ((id.cmic & 0x08) === 0) return null;
  return parseAnaLog(await ctrl.getAnaLog(), id.anagrpmax);
}

/** What each probed namespace looked like on the wire, for the cross-path checks. */
const views = new WeakMap<ProbedNamespace, NamespaceView>();

async function probeNamespace(
  ctrl: NvmeController,
  nsid: number,
  anaLog: AnaLog | null,
  opts: ProbeOptions,
): Promise<ProbedNamespace> {
  const ns = await ctrl.namespace(nsid);
  const probed = await describeNamespace(ns, anaLog, opts, ctrl.ioQueueDepth);
  views.set(probed, { identity: ns.identity, ids: ns.ids });
  return probed;
}

/** `depth`: the commands the I/O queue holds in flight (its entries - 1). */
async function describeNamespace(
  ns: NvmeNamespace,
  anaLog: AnaLog | null,
  opts: ProbeOptions,
  depth: number,
): Promise<ProbedNamespace> {
  const nsid = ns.nsid;
  const ids = ns.ids;
  const group = ns.identity.anagrpid;
  const ana: ProbedNamespace['ana_state'] = anaLog ? anaStateOf(anaLog, nsid) : 'n/a';
  const base = {
    nsid,
    size_bytes: ns.sizeBytes,
    block_size: ns.blockSize,
    nguid: nguidText(ids.nguid),
    uuid: ids.uuid ?? null,
    ana_group: group,
    ana_state: ana,
  };
  if (ana !== 'n/a' && ana !== 'optimized' && ana !== 'non-optimized') {
    return { ...base, read_test: null, problem: UNUSABLE[ana](nsid) };
  }
  if (opts.readSeconds <= 0) return { ...base, read_test: null, problem: null };
  try {
    // More readers than the queue holds would only wait their turn in the host, and the
    // report would give a depth the target never saw.
    const asked = opts.readQd ?? 1;
    const test = await readTest(ns, opts.readSeconds, Math.max(1, Math.min(asked, depth)), asked);
    return { ...base, read_test: test, problem: null };
  } catch (err) {
    return { ...base, read_test: null, problem: explain(err, `reading namespace ${nsid}`, '') };
  }
}

/** An NGUID as hex; null when there is none (all zeros, as a controller says none). */
function nguidText(nguid: Buffer | undefined): string | null {
  return nguid && !nguid.every((b) => b === 0) ? nguid.toString('hex') : null;
}

/**
 * A namespace the library will not use (ctrl.namespace refused it), reported with what
 * its identity says and why. A HostError is the connection's, not the namespace's: it
 * is rethrown for the subsystem.
 */
function refusedNamespace(nsid: number, err: unknown, anaLog: AnaLog | null): ProbedNamespace {
  if (err instanceof HostError) throw err;
  const id = err instanceof NamespaceFormatError ? err.identity : null;
  return {
    nsid,
    size_bytes: id?.blockSize ? id.nsze * id.blockSize : null,
    block_size: id?.blockSize || null,
    nguid: nguidText(id?.nguid),
    uuid: null,
    ana_group: id?.anagrpid ?? 0,
    ana_state: anaLog ? anaStateOf(anaLog, nsid) : 'n/a',
    read_test: null,
    problem: refusal(nsid, err),
  };
}

function refusal(nsid: number, err: unknown): ProbeProblem {
  if (err instanceof NamespaceFormatError && err.identity.ms) {
    return {
      error: `namespace ${nsid} is formatted with ${err.identity.ms} bytes of metadata per block: NVMe/TCP hosts cannot use it (Linux shows it with size 0)`,
      hint: 'Format the namespace on the target with an LBA format without metadata (MS 0), or export the volume as a namespace without it; BranchSAN volumes have none.',
    };
  }
  if (err instanceof NamespaceFormatError) {
    return {
      error: `namespace ${nsid} reports a block size no host can use (LBADS ${err.identity.lbads}; 9 to 31, 512 bytes and up, are valid)`,
      hint: "The target's namespace format is broken: check the volume's block size on the target.",
    };
  }
  if (err instanceof NamespaceNotActiveError) {
    return {
      error: `namespace ${nsid} was listed as active, then identified as inactive (removed meanwhile?)`,
      hint: 'Probe again; if it stays so, check the volume on the target (`branchsan status` there).',
    };
  }
  return explain(err, `namespace ${nsid}`, '');
}

/** Why a namespace in each unusable ANA state cannot be read here, and what to do. */
const UNUSABLE: Record<
  Exclude<AnaPathState, 'optimized' | 'non-optimized'>,
  (nsid: number) => ProbeProblem
> = {
  inaccessible: (nsid) => ({
    error: `namespace ${nsid} is inaccessible on this path (ANA): hosts cannot read or write it here`,
    hint: 'Normal on the standby node of a pair while the other node serves; otherwise check the volume on the target.',
  }),
  'persistent-loss': (nsid) => ({
    error: `namespace ${nsid} is lost for good on this path (ANA persistent loss)`,
    hint: 'Hosts must use another path to it; check the volume and its node on the target.',
  }),
  change: (nsid) => ({
    error: `namespace ${nsid} is changing ANA state on this path (a failover or failback in progress)`,
    hint: 'Probe again in a few seconds; if it stays so, check the pair on the target.',
  }),
  unknown: (nsid) => ({
    error: `namespace ${nsid} is in no ANA group the controller reports, or in a state this host does not know`,
    hint: 'Check the volume on the target; a host will not use this path until the state is known.',
  }),
};

/**
 * Random reads across the namespace for `seconds`, `qd` at a time: at QD1 what one VM's
 * small reads see; deeper, what the path carries for many.
 */
async function readTest(
  ns: NvmeNamespace,
  seconds: number,
  qd: number,
  asked: number,
): Promise<ReadTest> {
  const bytes = Math.max(TEST_READ_BYTES, ns.blockSize);
  const nlb = bytes / ns.blockSize;
  const slots = Math.floor(ns.nsze / nlb);
  if (slots < 1) throw new Error(`namespace ${ns.nsid} is smaller than one ${bytes}-byte read`);
  const lat: number[] = [];
  let end = 0n; // 0: warming up, nothing counted
  // The first read to fail (the others' failures may follow from it: a timeout tears
  // the queue down under them); every worker stops before its next read then.
  let failure: { err: unknown } | null = null;
  const worker = async (warmup: number) => {
    const into = Buffer.alloc(bytes);
    for (let i = 0; !failure; i++) {
      const t0 = process.hrtime.bigint();
      // Measured, each worker reads at least once: a time shorter than one read still
      // gives figures (before, none were counted and the latencies were NaN).
      if (end ? t0 >= end && i > 0 : i >= warmup) return;
      try {
        await ns.read(Math.floor(Math.random() * slots) * nlb, nlb, { into });
      } catch (err) {
        failure ??= { err };
        return;
      }
      if (end) lat.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  };
  // Every worker has stopped before this returns, on a failure too: one left reading
  // would go on into the next namespace's test (and its reads into a closed controller).
  const workers = async (warmup: number) => {
    await Promise.all(Array.from({ length: qd }, () => worker(warmup)));
    if (failure) throw failure.err;
  };
  // Warm-up reads, not counted: the first ones pay for compiling this path, not the target.
  await workers(Math.ceil(WARMUP_READS / qd));
  const start = process.hrtime.bigint();
  end = start + BigInt(Math.round(seconds * 1e9));
  await workers(0);
  const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  lat.sort((a, b) => a - b);
  const pct = (p: number) => round(nearestRank(lat, p));
  const total = lat.reduce((a, b) => a + b, 0);
  return {
    qd,
    qd_asked: asked,
    reads: lat.length,
    bytes_per_read: bytes,
    iops: Math.round(lat.length / elapsed),
    lat_us: {
      mean: round(total / lat.length),
      p50: pct(0.5),
      p99: pct(0.99),
      max: round(lat.at(-1)!),
    },
  };
}

/** What went wrong, said for a person, and what to do next. */
function explain(err: unknown, where: string, hostnqn: string): ProbeProblem {
  const cause = err instanceof HostError && err.cause !== undefined ? err.cause : err;
  const code = (cause as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'ECONNREFUSED') {
    return {
      error: `${where}: nothing accepts connections there (connection refused)`,
      hint: 'Check the address and port: `branchsan status` on the target shows its NVMe/TCP ports (`branchsan export` uses 4420 unless told otherwise).',
    };
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return {
      error:
        code === 'ENOTFOUND'
          ? `${where}: the name does not resolve to an address (ENOTFOUND)`
          : `${where}: the name could not be resolved now: the DNS server did not answer (EAI_AGAIN)`,
      hint:
        code === 'ENOTFOUND'
          ? 'Check the spelling of the name, or give the target by its IP address (`ip -br addr` on the target lists them).'
          : "Check this machine's DNS servers (/etc/resolv.conf), or give the target by its IP address.",
    };
  }
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') {
    return {
      error: `${where}: the address cannot be reached from this machine (${code})`,
      hint: 'Check the address, and the routes and VLANs between this machine and the target.',
    };
  }
  if (cause instanceof NvmeStatusError) {
    const sc = cause.status & 0x7ff;
    if (sc === SC.CONNECT_INVALID_HOST) {
      return {
        error: `${where}: the target does not allow this host (host NQN ${hostnqn})`,
        hint: "Add this host NQN to the subsystem's allowed hosts on the target (`branchsan export --allow-host NQN`), or pass --hostnqn with one it allows.",
      };
    }
    if (sc === SC.CONNECT_INVALID_PARAM) {
      return {
        error: `${where}: the target has no such subsystem (or refused the connect parameters)`,
        hint: 'Check the NQN: run probe without --nqn to see the subsystems the target lists for this host.',
      };
    }
  }
  const message = ownWords(err, cause);
  // A timeout during bring-up comes wrapped in the association's 'connect' error.
  if ([err, cause].some((e) => e instanceof HostError && e.kind === 'timeout')) {
    return {
      error: `${where}: the target stopped answering (${message})`,
      hint: "Check the target's health (`branchsan status`) and the network; then probe again.",
    };
  }
  if (/no ICResp within timeout/.test(message)) {
    return {
      error: `${where}: the connection was accepted, but nothing answered the NVMe/TCP greeting (${message})`,
      hint: 'Check that this is the NVMe/TCP port (4420 by default), not another service; if it is, the target is hung: check it with `branchsan status` there.',
    };
  }
  if (/connect timed out|ETIMEDOUT/.test(message)) {
    return {
      error: `${where}: nothing answered the TCP connection attempt in time (${message})`,
      hint: 'Check the address, that the target is up and reachable from this machine, and that no firewall drops the port (4420 by default).',
    };
  }
  if (new RegExp(`PDU type ${PDU_TYPE_HTTP}\\b`).test(message)) {
    return {
      error: `${where}: a web server answered there, not an NVMe/TCP target`,
      hint: 'That port is the web console or another HTTP service; give the NVMe/TCP port instead (4420 by default).',
    };
  }
  if (err instanceof HostError && err.kind === 'connect' && /bad PDU/.test(message)) {
    return {
      error: `${where}: what answered there does not speak NVMe/TCP (${message})`,
      hint: 'Check that this is the NVMe/TCP port (4420 by default), not another service.',
    };
  }
  return {
    error: `${where}: ${message}`,
    hint: "Check the target's events (`branchsan status`, or the dashboard) for why, then probe again.",
  };
}

/**
 * The error's message, less the context a wrapper put before its cause's ("connect to X
 * at H:P: …", "H:P queue 0: …"): `where` and the report say that already, and said
 * twice it hides what went wrong.
 */
function ownWords(err: unknown, cause: unknown): string {
  const message = (err as Error)?.message ?? String(err);
  if (cause !== err && cause instanceof Error && message.endsWith(`: ${cause.message}`)) {
    return cause.message;
  }
  return message;
}

function round(v: number): number {
  return Math.round(v * 10) / 10;
}
