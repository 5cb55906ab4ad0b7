/** API handlers for alerts: list them, acknowledge one. */
import type { HandlerGroup } from '../../control/rpc.js';
import type { EventsService } from '../../events/service.js';
import { actorOf } from './target.js';

export type AlertsMethods = 'alerts.list' | 'alerts.ack';

export function alertsHandlers(s: EventsService): HandlerGroup<AlertsMethods> {
  return {
    'alerts.list': (p) => ({ alerts: s.listAlerts(p.active, p.limit) }),
    'alerts.ack': (p, ctx) => s.acknowledge(p.id, actorOf(ctx)),
  };
}
