/**
 * BranchSAN's NVMe/TCP host library (initiator). Used by the mirror (node to node), the
 * setup wizard's volume check, the benchmark and the tests.
 *
 *   const ctrl = await NvmeController.connect({ host, port, subnqn, ioQueues: 2 });
 *   const ns = await ctrl.namespace(1);
 *   await ns.write(0, data, { fua: true });
 *   const back = await ns.read(0, data.length / ns.blockSize);
 *   await ctrl.close();
 *
 * Several paths to one namespace (one controller per node of a pair, ANA aware, with
 * failover that never reorders writes): MultipathNamespace.connect({ nsid, paths }).
 *
 * Layering: imports engine/src/protocol and node: modules only.
 */
export { NvmeController } from './controller.js';
export type {
  AsyncEvent,
  ControllerOptions,
  ControllerState,
  ReconnectOptions,
} from './controller.js';
export { NvmeNamespace } from './namespace.js';
export type { IoOptions, ReadOptions, WriteOptions } from './namespace.js';
export { NvmeRequest, NO_TIMEOUT } from './request.js';
export type { RequestDone } from './request.js';
export {
  HostError,
  NamespaceFormatError,
  NamespaceNotActiveError,
  NvmeStatusError,
} from './errors.js';
export type { HostErrorKind } from './errors.js';
export { discover, readDiscoveryLog, parseDiscoveryEntry } from './discovery.js';
export type { DiscoveryEntry, DiscoveryLog, DiscoverOptions } from './discovery.js';
export type {
  ControllerIdentity,
  FeatureResult,
  NamespaceIdentity,
  NamespaceIds,
} from './admin.js';
export * from './commands.js';
export { execute } from './execute.js';
export type { Submitter } from './execute.js';
export { NvmeTcpQueue } from './queue.js';
export type { QueueOptions, QueueState } from './queue.js';
export { MultipathNamespace } from './multipath.js';
export type {
  MultipathOptions,
  PathInfo,
  PathIoCounts,
  PathOptions,
  RetryEvent,
} from './multipath.js';
export { probeTarget, probeTargets } from './probe.js';
export type {
  MultiProbeReport,
  PathCheck,
  ProbeOptions,
  ProbeReport,
  ProbeProblem,
  ProbedNamespace,
  ProbedSubsystem,
  ReadTest,
} from './probe.js';
export { anaStateOf, anaStateOfStatus, parseAnaLog } from './ana-log.js';
export type { AnaGroup, AnaLog, AnaPathState } from './ana-log.js';
