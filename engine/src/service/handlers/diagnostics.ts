/** API handler for the diagnostics bundle: written under DATA/diagnostics, its path returned. */
import type { HandlerGroup } from '../../control/rpc.js';
import type { Db } from '../../persistence/db.js';
import { buildDiagnosticsBundle, defaultBundlePath, pruneBundles } from '../diagnostics.js';
import type { TargetRuntime } from '../target-runtime.js';

export type DiagnosticsMethods = 'diagnostics.bundle';

export function diagnosticsHandlers(o: {
  dataDir: string;
  db: Db;
  status: () => unknown;
  target: Pick<TargetRuntime, 'target' | 'ports'>;
}): HandlerGroup<DiagnosticsMethods> {
  // what only a running engine knows: who is connected right now, on which ports
  const live = () => ({
    status: o.status(),
    ports: o.target.ports(),
    controllers: o.target.target.listControllers().map((c) => ({
      cntlid: c.cntlid,
      kind: c.kind,
      subnqn: c.subnqn,
      hostnqn: c.hostnqn,
      state: c.state,
      ioQueues: c.ioQueues,
      kato: c.kato,
      errors: c.stats.errors,
    })),
    process: { memory: process.memoryUsage(), resource: process.resourceUsage() },
  });
  let building: Promise<unknown> | undefined;
  return {
    'diagnostics.bundle': async () => {
      // one at a time: a second click waits for the first instead of doubling the work
      while (building) await building.catch(() => undefined);
      const now = new Date();
      const p = buildDiagnosticsBundle({
        dataDir: o.dataDir,
        db: o.db,
        live,
        outFile: defaultBundlePath(o.dataDir, now),
        now,
      });
      building = p;
      try {
        const r = await p;
        pruneBundles(o.dataDir);
        return { ...r, createdAt: now.getTime() };
      } finally {
        building = undefined;
      }
    },
  };
}
