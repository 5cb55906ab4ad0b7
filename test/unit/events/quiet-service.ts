/**
 * An EventsService on `db` with nothing around it: no publishing, no secrets, no
 * inputs, a silent log, no rules; `extra` sets what a test is about.
 */
import { EventsService, type EventsServiceOptions } from '../../../engine/src/events/service.js';
import type { Db } from '../../../engine/src/persistence/db.js';
import { createLogger } from '../../../engine/src/util/log.js';

export function quietEventsService(
  db: Db,
  extra: Partial<EventsServiceOptions> = {},
): EventsService {
  return new EventsService({
    db,
    nodeId: 'node-1',
    version: '9.9.9',
    publish: () => undefined,
    secrets: {
      read: () => undefined,
      stage: () => undefined,
      apply: () => false,
      discard: () => undefined,
      checkRemovable: () => undefined,
      remove: () => undefined,
    },
    collect: async () => ({}),
    log: createLogger({ sink: { write: () => undefined } }),
    rules: [],
    ...extra,
  });
}
