/**
 * Listening on the API socket changes the process's umask for the moment of its bind
 * only (the socket is created with no access, then given its mode). The umask is the
 * whole process's, the database's worker threads included: it must be back as it was
 * when listen() fails too, not left at 0o177 for every file created after. A real
 * SocketServer on a Unix socket.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { RpcDispatcher, type Handlers } from '../../../engine/src/control/rpc.js';
import { SessionHub } from '../../../engine/src/control/sessions.js';
import { SocketServer } from '../../../engine/src/control/socket-server.js';
import { createLogger } from '../../../engine/src/util/log.js';

let top: string;
const log = createLogger({ sink: { write: () => undefined } });
const savedMask = process.umask();

const serverAt = (path: string) =>
  new SocketServer({ path }, new RpcDispatcher({} as Handlers, log), new SessionHub(), log);

beforeAll(() => {
  top = mkdtempSync(join(tmpdir(), 'bsan-socket-listen-'));
});

afterEach(() => {
  process.umask(savedMask);
});

afterAll(() => {
  rmSync(top, { recursive: true, force: true });
});

describe('API socket server: listen() and the umask', () => {
  it('puts the umask back when the socket cannot be created', async () => {
    process.umask(0o022);
    const server = serverAt(join(top, 'missing', 'api.sock'));
    await expect(server.listen()).rejects.toThrow(/does not exist/);
    // before: left at 0o177, so files made afterwards lost their group's access
    expect(process.umask().toString(8)).toBe('22');
  });

  it('puts the umask back once listening, and gives the socket its mode whatever the umask', async () => {
    process.umask(0);
    const path = join(top, 'api.sock');
    const server = serverAt(path);
    await server.listen();
    try {
      expect(process.umask()).toBe(0);
      expect((statSync(path).mode & 0o777).toString(8)).toBe('660');
    } finally {
      await server.close();
    }
  });
});
