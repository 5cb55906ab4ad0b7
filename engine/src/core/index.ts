/** The core's public surface for the service layer and transports. */
export { Target, type ControllerSummary, type PortConfig } from './target.js';
export type { TargetOptions, CoreLogger } from './options.js';
export type { SubsystemConfig } from './subsystem.js';
export type { NamespaceConfig } from './namespace.js';
export type { AnaState } from './ana.js';
export type { ControllerState } from './controller.js';
export type { IoStatsSnapshot } from './stats.js';
/** How a namespace's backend ran its I/O (Namespace.backend.pathCounts), for the metrics. */
export type { BackendPathCounts } from '../storage/backend.js';
export { nqnProblem, DISCOVERY_NQN } from './nqn.js';
export type * from './seam.js';
