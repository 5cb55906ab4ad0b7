/**
 * An IPv6 port is written [addr]:port in what the service says of it (the listener.down
 * alert's address, the events, the refusals), as everywhere else: ::1:46412 reads as
 * another address. Before, `${host}:${port}` left the brackets out.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../../../engine/src/persistence/db.js';
import { TargetRuntime } from '../../../engine/src/service/target-runtime.js';
import { TargetService } from '../../../engine/src/service/target-service.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';

const PORT = 46412;
const log = createLogger({ sink: { write: () => undefined } });
const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function service(dataDir: string) {
  const db = openDatabase(path.join(dataDir, 'branchsan.db')).db;
  const rt = new TargetRuntime(log);
  const targets = new TargetService(db, rt, log, dataDir);
  cleanups.push(() => db.close());
  cleanups.push(async () => (await targets.stop(), await rt.close(0)));
  return { db, targets };
}

describe('an IPv6 NVMe/TCP port', () => {
  it('is written in brackets when it cannot listen and when it is refused', async (ctx) => {
    const blocker = net.createServer();
    const bound = await new Promise<boolean>((resolve) => {
      blocker.once('error', () => resolve(false));
      blocker.listen(PORT, '::1', () => resolve(true));
    });
    if (!bound) return ctx.skip(); // no IPv6 loopback here
    cleanups.push(() => new Promise((r) => blocker.close(r)));
    const dir = tempDir('branchsan-ipv6-');
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    // configured while the address was free (stored by hand: it is taken now)
    const first = service(dir);
    first.db.prepare('INSERT INTO ports (port_id, host, port) VALUES (1, ?, ?)').run('::1', PORT);
    await first.targets.restore();
    const down = first.targets.listenersDown();
    expect(down.map((d) => d.address)).toEqual([`[::1]:${PORT}`]);
    const ev = first.db
      .prepare("SELECT message FROM events WHERE type = 'target.port.unavailable'")
      .get() as { message: string };
    expect(ev.message).toContain(
      `NVMe/TCP port [::1]:${PORT} is not listening: Cannot listen for NVMe/TCP on [::1]:${PORT}: EADDRINUSE.`,
    );
    await expect(first.targets.addPort({ host: '::1', port: PORT }, 'test')).rejects.toThrow(
      `NVMe/TCP already listens on [::1]:${PORT}.`,
    );
  });
});
