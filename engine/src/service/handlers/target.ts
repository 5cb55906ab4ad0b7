/** API handlers for the target configuration: thin adapters from validated params to TargetService. */
import type { CallContext, HandlerGroup } from '../../control/rpc.js';
import type { TargetService } from '../target-service.js';

export type TargetMethods =
  | 'target.config'
  | 'target.port.add'
  | 'target.port.remove'
  | 'target.subsystem.create'
  | 'target.subsystem.delete'
  | 'target.host.allow'
  | 'target.host.disallow'
  | 'target.namespace.add'
  | 'target.namespace.remove'
  | 'target.namespace.accept'
  | 'target.namespace.tune';

/** Who made a change, for the audit log. */
export const actorOf = (ctx: CallContext): string => ctx.actor;

export function targetHandlers(t: TargetService): HandlerGroup<TargetMethods> {
  return {
    'target.config': () => t.config(),
    'target.port.add': (p, ctx) => t.addPort(p, actorOf(ctx)),
    'target.port.remove': async (p, ctx) => (await t.removePort(p.portId, actorOf(ctx)), {}),
    'target.subsystem.create': (p, ctx) => t.createSubsystem(p, actorOf(ctx)),
    'target.subsystem.delete': async (p, ctx) => (await t.deleteSubsystem(p.nqn, actorOf(ctx)), {}),
    'target.host.allow': (p, ctx) => t.setHostAllowed(p.nqn, p.hostNqn, true, actorOf(ctx)),
    'target.host.disallow': (p, ctx) => t.setHostAllowed(p.nqn, p.hostNqn, false, actorOf(ctx)),
    'target.namespace.add': (p, ctx) => t.addNamespace(p, actorOf(ctx)),
    'target.namespace.remove': async (p, ctx) => (
      await t.removeNamespace(p.nqn, p.nsid, actorOf(ctx)),
      {}
    ),
    'target.namespace.accept': (p, ctx) => t.acceptNamespace(p.nqn, p.nsid, p.path, actorOf(ctx)),
    'target.namespace.tune': (p, ctx) => t.tuneNamespace(p.nqn, p.nsid, p.io, actorOf(ctx)),
  };
}
