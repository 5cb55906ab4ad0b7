import path from 'node:path';
import { UserError } from '../util/errors.js';
import { connectSocket } from './api-client.js';
import { parseCommandArgs, type Command } from './command.js';

export const status: Command = {
  name: 'status',
  help: `Usage: branchsan status (--data DIR | --socket PATH) [--json]

Asks a running engine for its status over its API socket.

Options:
  --data DIR      the engine's data directory (uses DIR/engine.sock)
  --socket PATH   the engine's API socket
  --json          print the raw JSON answer`,
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
    const sock = values.socket ?? (values.data ? path.join(values.data, 'engine.sock') : undefined);
    if (!sock)
      throw new UserError(
        'status: say which engine: --data DIR or --socket PATH.',
        undefined,
        'usage',
      );
    const client = await connectSocket(sock);
    try {
      const s = await client.call('system.status', {});
      if (values.json) console.log(JSON.stringify(s, null, 2));
      else {
        console.log(`BranchSAN ${s.version} on ${s.hostname} (node ${s.nodeId})`);
        console.log(
          `  engine pid ${s.pid}, up ${Math.round(s.uptimeSec)} s, data ${s.dataDir}, schema v${s.dbSchemaVersion}`,
        );
        const q = s.cpuLatency;
        console.log(
          `  CPU wake-up latency request: ${q.mode}, ${q.held ? 'held' : 'not held'}` +
            (q.unavailable ? ` (unavailable: ${q.unavailable}; run the engine as root)` : ''),
        );
      }
      return 0;
    } finally {
      client.close();
    }
  },
};
