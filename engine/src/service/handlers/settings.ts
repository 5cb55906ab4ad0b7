/** API handlers for event, alert and notification settings, and the test notification. */
import type { HandlerGroup } from '../../control/rpc.js';
import type { EventsService } from '../../events/service.js';
import { actorOf } from './target.js';

export type SettingsMethods = 'settings.get' | 'settings.set' | 'notifications.test';

export function settingsHandlers(s: EventsService): HandlerGroup<SettingsMethods> {
  return {
    'settings.get': () => s.getSettings(),
    'settings.set': (p, ctx) => s.setSettings(p, actorOf(ctx)),
    'notifications.test': (_p, ctx) => s.sendTest(actorOf(ctx)),
  };
}
