/**
 * A console whose address cannot be had when it starts: start() reports why and keeps
 * trying, a real ConsoleServer on loopback against a real listener holding its port.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ConsoleServer } from '../../../engine/src/control/console-server.js';
import type { UserError } from '../../../engine/src/util/errors.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { loopbackConsole } from '../../helpers/console-server.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function consoleOn(port: number): ConsoleServer {
  const top = mkdtempSync(join(tmpdir(), 'bsan-console-bind-'));
  cleanup.push(() => rmSync(top, { recursive: true, force: true }));
  const { server } = loopbackConsole({
    root: top,
    dataDir: join(top, 'data'),
    port,
    log: createLogger({ sink: { write: () => undefined } }),
  });
  cleanup.push(() => server.close());
  return server;
}

async function squat(): Promise<{ port: number; release: () => Promise<void> }> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const release = () => new Promise<void>((r) => s.close(() => r()));
  cleanup.push(() => (s.listening ? release() : undefined));
  return { port: (s.address() as net.AddressInfo).port, release };
}

const until = async (what: string, ok: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`not ${what} within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('web console: an address it cannot have yet', () => {
  it('listen() refuses a taken port with what to do', async () => {
    const { port } = await squat();
    const err = (await consoleOn(port)
      .listen()
      .catch((e: unknown) => e)) as UserError;
    expect(err.message).toBe(`Cannot listen for the web console on 127.0.0.1:${port}: EADDRINUSE.`);
    expect(err.hint).toBe(
      `Another program uses that port (\`ss -ltnp 'sport = :${port}'\` names it): stop it, or give the engine another --console-port (0 picks a free one).`,
    );
  });

  it('start() reports the taken port once, keeps trying, and serves once it is free', async () => {
    const { port, release } = await squat();
    const server = consoleOn(port);
    const changes: (string | null)[] = [];
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    cleanup.push(() => process.off('warning', onWarning));

    await server.start(10, (p) => changes.push(p ? p.message : null));
    expect(server.listening).toBe(false);
    expect(server.problem?.error.message).toContain('EADDRINUSE');
    const since = server.problem!.since;
    expect(server.baseUrl).toBe(`http://127.0.0.1:${port}/`); // where it will listen
    // many attempts fail: one report, and none leaves a listener behind
    await new Promise((r) => setTimeout(r, 300));
    expect(changes).toEqual([
      `Cannot listen for the web console on 127.0.0.1:${port}: EADDRINUSE.`,
    ]);
    expect(server.problem?.since).toBe(since);

    await release();
    await until('listening', () => server.listening);
    expect(changes.at(-1)).toBeNull();
    expect(changes).toHaveLength(2);
    expect(server.problem).toBeNull();
    const res = await fetch(`http://127.0.0.1:${port}/api/session`);
    expect(res.status).toBe(200);
    expect(warnings).not.toContain('MaxListenersExceededWarning');
  });

  it('close() while it waits stops the attempts: the port stays free', async () => {
    const { port, release } = await squat();
    const server = consoleOn(port);
    await server.start(20, () => undefined);
    await server.close();
    await release();
    await new Promise((r) => setTimeout(r, 100));
    expect(server.listening).toBe(false);
    const probe = net.createServer();
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen(port, '127.0.0.1', resolve);
    });
    await new Promise((r) => probe.close(r));
  });
});
