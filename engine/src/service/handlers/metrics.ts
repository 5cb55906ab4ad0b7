/** API handlers for metric history and the Prometheus endpoint's settings (changes are audited). */
import type { HandlerGroup } from '../../control/rpc.js';
import type { MetricsService } from '../metrics-service.js';
import { actorOf } from './target.js';

export type MetricsMethods =
  'metrics.query' | 'metrics.series' | 'metrics.settings.get' | 'metrics.settings.set';

export function metricsHandlers(m: MetricsService): HandlerGroup<MetricsMethods> {
  return {
    'metrics.query': (p) => m.query(p),
    'metrics.series': (p) => m.series(p),
    'metrics.settings.get': () => m.settings(),
    'metrics.settings.set': (p, ctx) => m.setSettings(p, actorOf(ctx)),
  };
}
