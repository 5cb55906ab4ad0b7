import { countBySeverity } from '../../../contract/alert-words.js';
import type { Alert } from '../../../contract/events.js';
import { joinHostPort } from '../util/host-port.js';
import { connectSocket, engineSocket } from './api-client.js';
import { parseCommandArgs, type Command } from './command.js';

export const status: Command = {
  name: 'status',
  help: `Usage: branchsan status (--data DIR | --socket PATH) [--json]

Asks a running engine for its status over its API socket.

Options:
  --data DIR      the engine's data directory (finds the socket of the engine
                  running on it, DIR/engine.sock by default)
  --socket PATH   the engine's API socket
  --json          print it as JSON: the engine's system.status answer, plus
                  target {ports, subsystems, namespaces} and alerts {active,
                  and a count per severity}`,
  async run(argv) {
    const { values } = parseCommandArgs('status', argv, {
      data: { type: 'string' },
      socket: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    const client = await connectSocket(engineSocket('status', values.data, values.socket));
    try {
      const s = await client.call('system.status', {});
      const cfg = await client.call('target.config', {});
      const ports = cfg.ports.map((p) => ({ host: p.host, port: p.port }));
      const namespaces = cfg.subsystems.reduce((n, sub) => n + sub.namespaces.length, 0);
      const alerts = await client
        .call('alerts.list', { active: true, limit: 1000 })
        .then((r) => r.alerts)
        .catch((err: Error) => err);
      if (values.json) {
        // the text's facts too, for scripts: the status answer plus the target and alerts
        const active =
          alerts instanceof Error
            ? { error: alerts.message }
            : { active: alerts.length, ...Object.fromEntries(countBySeverity(alerts)) };
        const target = { ports, subsystems: cfg.subsystems.length, namespaces };
        console.log(JSON.stringify({ ...s, target, alerts: active }, null, 2));
      } else {
        console.log(`BranchSAN ${s.version} on ${s.hostname} (node ${s.nodeId})`);
        console.log(
          `  engine pid ${s.pid}, up ${Math.round(s.uptimeSec)} s, data ${s.dataDir}, schema v${s.dbSchemaVersion}`,
        );
        const q = s.cpuLatency;
        console.log(
          `  CPU wake-up latency request: ${q.mode}, ${q.held ? 'held' : 'not held'}` +
            (q.unavailable ? ` (unavailable: ${q.unavailable}; run the engine as root)` : '') +
            (q.noEffect && q.mode !== 'off' ? ` (${q.noEffect})` : ''),
        );
        const listed = ports.map((p) => joinHostPort(p.host, p.port));
        console.log(`  NVMe/TCP ports: ${listed.length ? listed.join(', ') : 'none configured'}`);
        console.log(
          `  ${cfg.subsystems.length} subsystem${cfg.subsystems.length === 1 ? '' : 's'}, ${namespaces} namespace${namespaces === 1 ? '' : 's'}`,
        );
        const words = alerts instanceof Error ? `unknown (${alerts.message})` : alertCounts(alerts);
        console.log(`  alerts: ${words}`);
      }
      return 0;
    } finally {
      client.close();
    }
  },
};

/** "none active", or "1 critical, 2 warning active (branchsan alerts lists them)". */
function alertCounts(alerts: Alert[]): string {
  if (alerts.length === 0) return 'none active';
  const counts = countBySeverity(alerts)
    .filter(([, n]) => n > 0)
    .map(([sev, n]) => `${n} ${sev}`);
  return `${counts.join(', ')} active (\`branchsan alerts\` lists them, with what to do)`;
}
