/** API handlers for the event log: paged queries over what happened. */
import type { HandlerGroup } from '../../control/rpc.js';
import type { EventsService } from '../../events/service.js';

export type EventsMethods = 'events.list';

export function eventsHandlers(s: EventsService): HandlerGroup<EventsMethods> {
  return {
    'events.list': (p) => s.listEvents(p),
  };
}
