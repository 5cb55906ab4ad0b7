/**
 * A backing path on a hung mount (an NFS server gone, a FUSE daemon stuck): checking it
 * must not stop the engine. A real FUSE mount that never answers is the fault (see
 * helpers/hung-mount.ts); everything else is the real engine, target service and SQLite.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../contract/errors.js';
import { openDatabase, type Db } from '../../engine/src/persistence/db.js';
import { TargetRuntime } from '../../engine/src/service/target-runtime.js';
import { PATH_CHECK_MS, TargetService } from '../../engine/src/service/target-service.js';
import { DEFAULT_CALL_TIMEOUT_MS } from '../../contract/rpc-client.js';
import { UserError } from '../../engine/src/util/errors.js';
import { createLogger } from '../../engine/src/util/log.js';
import { connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { hungMount, hungMountUnavailable, type HungMount } from '../helpers/hung-mount.js';
import { freePort } from '../helpers/linux-host.js';

const NQN = 'nqn.2026-11.io.branchsan.test:hung';
const unavailable = hungMountUnavailable();
if (unavailable) console.warn(`hung-mount tests skipped: ${unavailable}`);

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function mountHung(at: string): Promise<HungMount> {
  const m = await hungMount(at);
  cleanups.unshift(() => m.release());
  return m;
}

async function until(f: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('not within 5 s');
}

/** The longest the event loop went without turning while `work` ran. */
async function longestStall<T>(
  work: () => Promise<T>,
): Promise<{ result: PromiseSettledResult<T>; ms: number }> {
  let last = performance.now();
  let ms = 0;
  const tick = setInterval(() => {
    const now = performance.now();
    ms = Math.max(ms, now - last);
    last = now;
  }, 20);
  const [result] = await Promise.allSettled([work()]);
  clearInterval(tick);
  ms = Math.max(ms, performance.now() - last);
  return { result, ms };
}

describe.skipIf(unavailable)('a backing path on a hung mount', () => {
  it('the engine keeps answering while the add waits; the add then fails naming the path', async () => {
    const engine: RunningEngine = await startEngine();
    cleanups.push(() => engine.stop());
    const api: SocketClient = await connectSocket(engine.socketPath);
    cleanups.unshift(() => api.close());
    await api.call('target.subsystem.create', { nqn: NQN, allowAnyHost: true });
    const dir = path.join(tempDir(), 'nfs');
    const mount = await mountHung(dir);
    const file = path.join(dir, 'vol1.img');

    const adding = api.call('target.namespace.add', {
      nqn: NQN,
      backend: { kind: 'file', path: file, createSizeBytes: 1 << 20 },
    });
    adding.catch(() => undefined);
    // Before: the engine's thread sat in realpath on the mount and answered nobody.
    for (let i = 0; i < 3; i++) {
      const status = await Promise.race([
        api.call('system.status', {}),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error('the engine did not answer within 5 s')), 5000),
        ),
      ]);
      expect(status.pid).toBe(engine.pid);
      await new Promise((r) => setTimeout(r, 100));
    }
    mount.abort(); // the server is gone: the kernel fails every waiter with ENOTCONN
    const err = await adding.then(
      () => null,
      (e: Error) => e,
    );
    expect(err).toMatchObject({
      message: `cannot open ${file} (ENOTCONN): the server of its network or FUSE mount is gone`,
      code: ErrorCode.Unavailable,
      data: { hint: `Remount it (\`findmnt -T '${dir}'\` shows the mount), then try again.` },
    });
    const config = await api.call('target.config', {});
    expect(config.subsystems.find((s) => s.nqn === NQN)!.namespaces).toEqual([]);
  });

  describe('the target service, in process', () => {
    let db: Db;
    let rt: TargetRuntime;
    let targets: TargetService;
    let dir: string;

    /** A target service (and runtime) on the test's database, as the engine starts one. */
    async function start(pathCheckMs: number, openWaitMs?: number) {
      const log = createLogger({ sink: { write: () => undefined } });
      rt = new TargetRuntime(log, {}, openWaitMs);
      targets = new TargetService(db, rt, log, path.join(dir, 'data'), pathCheckMs);
      await targets.restore();
    }

    async function setup(pathCheckMs: number) {
      dir = tempDir();
      db = openDatabase(path.join(dir, 'engine.db')).db;
      await start(pathCheckMs);
      cleanups.push(async () => {
        targets.stop();
        await rt.close(0);
        db.close();
      });
      await targets.createSubsystem({ nqn: NQN, allowAnyHost: true }, 'test');
    }

    const addFile = (file: string) =>
      targets.addNamespace(
        { nqn: NQN, backend: { kind: 'file', path: file, createSizeBytes: 1 << 20 } },
        'test',
      );

    it('gives up on a path whose file system does not answer, and refuses more checks while that one is out', async () => {
      await setup(300);
      await addFile(path.join(dir, 'local.img'));
      const hung = path.join(dir, 'nfs');
      const mount = await mountHung(hung);
      const { result, ms } = await longestStall(() => addFile(path.join(hung, 'vol2.img')));
      expect(ms).toBeLessThan(5000); // the mount holds for 20 s: a blocked thread shows here
      expect(result.status).toBe('rejected');
      const err = (result as PromiseRejectedResult).reason as UserError;
      expect(err).toBeInstanceOf(UserError);
      expect(err.code).toBe('unavailable');
      expect(err.message).toBe(
        `The file system that holds ${path.join(hung, 'vol2.img')} did not answer within 0.3 s.`,
      );
      expect(err.hint).toContain(`stat ${hung}`);
      // Its calls still wait in the thread pool: retries (of any path) are refused at once
      // rather than leave more of the pool's threads waiting on the mount.
      for (const next of [path.join(hung, 'vol3.img'), path.join(dir, 'local2.img')]) {
        const again = await addFile(next).then(
          () => null,
          (e: UserError) => e,
        );
        expect(again).toMatchObject({
          code: 'unavailable',
          message: `An earlier check of ${path.join(hung, 'vol2.img')} still waits for its file system to answer.`,
        });
        expect(again!.hint).toContain(`umount -l ${hung}`);
      }
      expect(targets.config().subsystems[0]!.namespaces.map((n) => n.nsid)).toEqual([1]);
      // once the mount fails for good (its server gone) the checks run again
      mount.abort();
      await until(
        async () => (await addFile(path.join(dir, 'local2.img')).catch(() => null)) !== null,
      );
      expect(targets.config().subsystems[0]!.namespaces.map((n) => n.nsid)).toEqual([1, 2]);
    });

    it('volumes whose mount hung since do not stop adding others: their files are not looked up', async () => {
      await setup(300);
      const remote = path.join(dir, 'nfs');
      fs.mkdirSync(remote);
      await addFile(path.join(remote, 'vol1.img')); // served; then its mount stops answering
      const mount = await mountHung(remote);
      for (let i = 0; i < 5; i++) {
        // before: each add stat'ed every volume's path, and each hung one kept a pool thread
        const { result, ms } = await longestStall(() => addFile(path.join(dir, `local${i}.img`)));
        expect(result).toMatchObject({ status: 'fulfilled', value: { nsid: i + 2 } });
        expect(ms).toBeLessThan(5000);
      }
      expect(mount.holding()).toBe(true); // none of them waited for the mount to give up
    });

    it('starts with a volume on a hung mount: the other volumes and the ports come up without it', async () => {
      await setup(300);
      const remote = path.join(dir, 'nfs');
      fs.mkdirSync(remote);
      await addFile(path.join(dir, 'local.img'));
      await addFile(path.join(remote, 'vol2.img'));
      await targets.addPort({ host: '127.0.0.1', port: await freePort() }, 'test');
      targets.stop();
      await rt.close(0);
      const mount = await mountHung(remote); // its server stops answering while we are down
      // Before: the start opened vol2 with no limit, before the ports: nothing was served.
      // (an open also starts the volume's I/O threads: on a busy machine that alone can
      // take a good part of a second, so the test allows 3 s)
      const started = await Promise.race([
        start(300, 3000).then(() => 'started'),
        new Promise((r) => setTimeout(r, 10_000, 'still starting after 10 s')),
      ]);
      expect(started).toBe('started');
      expect(rt.hasNamespace(NQN, 1)).toBe(true);
      expect(rt.hasNamespace(NQN, 2)).toBe(false);
      expect(rt.ports()).toHaveLength(1);
      // its open is still out: another try does not start one more beside it
      const again = await rt
        .addNamespace(NQN, {
          ...targets.config().subsystems[0]!.namespaces[1]!,
          backend: {
            kind: 'file',
            path: path.join(remote, 'vol2.img'),
          },
        })
        .then(
          () => null,
          (e: UserError) => e,
        );
      expect(again?.message).toBe(
        `An earlier open of ${path.join(remote, 'vol2.img')} still waits for its file system.`,
      );
      expect(mount.holding()).toBe(true);
    });

    it('a volume not open (its file missing at start) still holds its path', async () => {
      await setup(300);
      const file = path.join(dir, 'gone.img');
      await addFile(file);
      targets.stop();
      await rt.close(0);
      fs.rmSync(file);
      await start(300); // offline: the file is gone
      const err = await addFile(`${dir}//gone.img`).then(
        () => null,
        (e: UserError) => e,
      );
      expect(err).toMatchObject({ code: 'conflict', message: `${file} is already a namespace.` });
    });
  });
});

describe('the time a backing path check may take', () => {
  it('leaves API clients time to hear why it gave up', () => {
    expect(PATH_CHECK_MS + 3000).toBeLessThanOrEqual(DEFAULT_CALL_TIMEOUT_MS);
  });
});
