/**
 * Stopping the API socket server ends its connections, also those that came after the
 * engine told its clients it was stopping (SessionHub.closeAll): a client that connects
 * then (`branchsan events --follow`, the desktop app reconnecting) must not keep the
 * engine's stop waiting for it. A real SocketServer on a Unix socket, real clients.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RpcDispatcher, type Handlers } from '../../../engine/src/control/rpc.js';
import { SessionHub } from '../../../engine/src/control/sessions.js';
import { SocketServer } from '../../../engine/src/control/socket-server.js';
import { createLogger } from '../../../engine/src/util/log.js';

let top: string;

beforeAll(() => {
  top = mkdtempSync(join(tmpdir(), 'bsan-socket-close-'));
});

afterAll(() => {
  rmSync(top, { recursive: true, force: true });
});

describe('API socket server: close()', () => {
  it('ends a connection made after the clients were told to go, and returns', async () => {
    const path = join(top, 'api.sock');
    const log = createLogger({ sink: { write: () => undefined } });
    const hub = new SessionHub();
    const server = new SocketServer({ path }, new RpcDispatcher({} as Handlers, log), hub, log);
    await server.listen();

    hub.closeAll('engine stopping'); // as Engine.stop() does, then a client comes
    const late = net.connect(path);
    late.on('error', () => undefined);
    await new Promise((resolve) => late.once('connect', resolve));
    const lateClosed = new Promise((resolve) => late.once('close', resolve));
    await new Promise<void>((resolve) => {
      const check = () => (hub.size === 1 ? resolve() : setImmediate(check));
      check();
    });

    // before: close() waited until that client went away by itself (for ever here)
    const closing = server.close();
    await lateClosed;
    await closing;
    expect(existsSync(path)).toBe(false);
  }, 10_000);
});
