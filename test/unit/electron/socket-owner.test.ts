import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  sameSocket,
  SocketTrustError,
  verifySocketOwner,
} from '../../../electron/src/socket-owner.js';

describe('verifySocketOwner', () => {
  let dir: string;
  const servers: Server[] = [];

  async function listen(path: string): Promise<string> {
    const server = createServer();
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(path, resolve));
    return path;
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'bsan-owner-'));
  });
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
    rmSync(dir, { recursive: true, force: true });
  });

  it('accepts a root-owned socket in a private directory, and identifies it', async () => {
    const path = await listen(join(dir, 'e.sock'));
    const id = verifySocketOwner(path);
    expect(sameSocket(path, id)).toBe(true);
    expect(sameSocket(path, { ...id, ino: id.ino + 1 })).toBe(false);
    expect(sameSocket(join(dir, 'gone.sock'), id)).toBe(false);
  });

  it('accepts a socket owned by the current user (not root)', async () => {
    const path = await listen(join(dir, 'e.sock'));
    chownSync(path, 1000, 1000);
    expect(() => verifySocketOwner(path, { uid: 1000 })).not.toThrow();
    // ...and root's socket is trusted by that user too (the system service)
    chownSync(path, 0, 0);
    expect(() => verifySocketOwner(path, { uid: 1000 })).not.toThrow();
  });

  it('refuses a socket owned by another uid, saying which', async () => {
    const path = await listen(join(dir, 'e.sock'));
    chownSync(path, 12345, 12345);
    expect(() => verifySocketOwner(path)).toThrow(
      new SocketTrustError(
        `the engine socket ${path} is owned by uid 12345, not root or you: refusing to talk to it`,
      ),
    );
    expect(() => verifySocketOwner(path, { uid: 1000 })).toThrow(/owned by uid 12345/);
  });

  it('refuses a regular file', () => {
    const path = join(dir, 'e.sock');
    writeFileSync(path, '');
    expect(() => verifySocketOwner(path)).toThrow(/is not a socket/);
  });

  it('passes ENOENT through when there is no socket (the engine is not running)', () => {
    expect(() => verifySocketOwner(join(dir, 'none.sock'))).toThrow(
      expect.objectContaining({ code: 'ENOENT' }),
    );
  });

  it('accepts a world-writable directory only with the sticky bit and a trusted owner', async () => {
    const sub = join(dir, 'shared');
    mkdirSync(sub);
    const path = await listen(join(sub, 'e.sock'));
    chmodSync(sub, 0o1777); // like /tmp
    expect(() => verifySocketOwner(path)).not.toThrow();
    chownSync(sub, 12345, 12345);
    expect(() => verifySocketOwner(path)).toThrow(/writable by everyone and owned by uid 12345/);
    chownSync(sub, 0, 0);
    chmodSync(sub, 0o777);
    expect(() => verifySocketOwner(path)).toThrow(/without the sticky bit/);
    chmodSync(sub, 0o775); // group-writable is the admin's choice, not everyone's
    expect(() => verifySocketOwner(path)).not.toThrow();
  });
});
