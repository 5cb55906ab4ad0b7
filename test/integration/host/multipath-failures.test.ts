/**
 * Multipath failure shapes, on the rig of multipath-rig.ts (two Targets over one
 * backend, real sockets, a pausable proxy in front of A): resends after a path fails
 * while its controller is still reporting the loss, a path without keep-alive that
 * nothing can prove dead, and a namespace replaced or re-added on one node at runtime.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { HostError } from '../../../engine/src/host/index.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import {
  BS,
  NGUID,
  NQN,
  PausableProxy,
  UUID,
  byName,
  open,
  pathTo,
  runCleanup,
  spy,
  startPair,
  until,
} from './multipath-rig.js';

const OTHER_NGUID = 'ffeeddccbbaa99887766554433221100';

afterEach(runCleanup);

describe('multipath after a path failure', () => {
  it.each(['connection drop', 'I/O timeout'] as const)(
    'a read in flight on the only optimized path is served by the non-optimized one after a %s',
    async (shape) => {
      const { a, b } = await startPair();
      const proxy = await PausableProxy.start(a.port);
      const data = randomBytes(BS);
      const reconnect = { delayMs: 200, lossTimeoutMs: 60_000 };
      const mp = await open({
        nsid: 1,
        paths: [pathTo(a, proxy.port, { reconnect, ioTimeoutMs: 400 }), pathTo(b)],
      });
      await mp.write(12, data);
      expect(a.writes).toContain(12 * BS);

      proxy.pause();
      const pending = mp.read(12, 1);
      // The read sits in the stalled proxy; then A's connection drops, or the read times out.
      if (shape === 'connection drop') proxy.resume();
      const back = await pending;
      expect(back.equals(data)).toBe(true);
      expect(b.reads).toContain(12 * BS);
    },
  );

  it('does not resend a timed-out write elsewhere when its path has no keep-alive (KATO 0) to prove it dead', async () => {
    const { a, b } = await startPair();
    const proxy = await PausableProxy.start(a.port);
    const LBA = 33;
    const releases: string[] = [];
    const mp = await open({
      nsid: 1,
      // No reconnect: A goes dead right after the timeout. KATO 0: nothing on the target
      // ever drops A's controller, so "dead" proves nothing about the write.
      paths: [pathTo(a, proxy.port, { kato: 0, ioTimeoutMs: 400 }), pathTo(b)],
      onRetry: (ev) => {
        if (ev.kind === 'release') releases.push(ev.reason);
      },
    });
    proxy.pause();
    const err = await mp.write(LBA, randomBytes(BS)).catch((e: unknown) => e);
    expect(byName(mp, 'A').controller).toBe('dead');
    expect(releases).toEqual([]);
    expect(b.writes).not.toContain(LBA * BS);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).maybeExecuted).toBe(true);
    expect((err as Error).message).toMatch(/no keep-alive/);
    expect(byName(mp, 'A').inDoubt).toBe(0);
  });
});

describe('multipath and namespace identity', () => {
  it('stops using a path whose namespace was replaced by another disk (NS attribute changed event)', async () => {
    const { a, b } = await startPair();
    const events: number[] = [];
    const mp = await open({
      nsid: 1,
      paths: [pathTo(a), pathTo(b, b.port, { onAsyncEvent: (ev) => events.push(ev.lid) })],
      noPathTimeoutMs: 1000,
    });
    const data = randomBytes(BS);
    await mp.write(20, data);

    // On node B, namespace 1 becomes another volume (another NGUID and backend).
    const otherWrites: number[] = [];
    const other = spy(new MemoryBackend({ sizeBytes: 16 << 20, blockSize: BS }), otherWrites, []);
    b.target.removeNamespace(NQN, 1);
    b.target.addNamespace(NQN, { nsid: 1, backend: other, nguid: OTHER_NGUID });
    await until('the namespace change event on B', () => events.includes(0x04));

    // A goes away: I/O must not fall back to B, which now shows another disk.
    a.target.setAnaState(1, 'inaccessible');
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible');
    const err = await mp.write(20, randomBytes(BS)).catch((e: unknown) => e);
    expect(otherWrites).toEqual([]);
    expect(err).toBeInstanceOf(HostError);
    expect(byName(mp, 'B').usable).toBe(false);
    expect(byName(mp, 'B').problem).toMatch(/NGUID/);
  });

  it('takes a path back once its namespace is re-added with the same identity', async () => {
    const { backend, a, b } = await startPair();
    const mp = await open({ nsid: 1, paths: [pathTo(a), pathTo(b)] });
    b.target.removeNamespace(NQN, 1);
    await until('B refused', () => byName(mp, 'B').problem !== null, 2000);
    expect(byName(mp, 'B').problem).toMatch(/not active/);
    b.target.addNamespace(NQN, {
      nsid: 1,
      backend: spy(backend, b.writes, b.reads),
      nguid: NGUID,
      uuid: UUID,
    });
    await until('B usable again', () => byName(mp, 'B').usable, 2000);
    expect(byName(mp, 'B').problem).toBeNull();
    a.target.setAnaState(1, 'inaccessible');
    await until('A inaccessible', () => byName(mp, 'A').ana === 'inaccessible');
    const data = randomBytes(BS);
    await mp.write(21, data);
    expect(b.writes).toContain(21 * BS);
    expect((await mp.read(21, 1)).equals(data)).toBe(true);
  });
});
