/**
 * The CLI's API client on a real Unix socket: a call made after the engine closed the
 * connection fails at once with what happened, instead of waiting out its timeout.
 */
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiError } from '../../../contract/api.js';
import { connectSocket } from '../../../engine/src/cli/api-client.js';
import { tempDir } from '../../helpers/engine.js';

const servers: net.Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
});

describe('CLI API client', () => {
  it('a call after the engine closed the connection fails at once', async () => {
    const sockPath = path.join(tempDir('branchsan-client-'), 'engine.sock');
    // an engine that lets go of each connection at once (as one stopping does)
    const server = net.createServer((s) => s.destroy());
    servers.push(server);
    await new Promise<void>((r) => server.listen(sockPath, r));
    const client = await connectSocket(sockPath, 15_000);
    await client.ended;
    const err = await client.call('system.status', {}).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ApiError);
    // Before: "The engine did not answer system.status within 15 s", 15 s later.
    expect((err as ApiError).message).toBe('Not connected to the BranchSAN engine.');
    // a hint for the command line, not the console's "reconnects by itself"
    expect((err as ApiError).data?.hint).toBe(
      'The engine closed the connection: it may be stopping or restarting. Check `branchsan status`, then try again.',
    );
    client.close();
  });
});
