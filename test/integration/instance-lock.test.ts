/**
 * One engine per data directory (service/instance-lock.ts), on real files and real
 * processes: the lock is a symbolic link whose target is the owner's pid and API
 * socket, so taking it needs no data block and works on a data disk with no byte
 * free (a small tmpfs, filled for real; root only).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { acquireInstanceLock, engineSocketPath } from '../../engine/src/service/instance-lock.js';
import { UserError } from '../../engine/src/util/errors.js';
import { loadNativeAddon } from '../../engine/src/storage/io-worker-pool.js';
import {
  hasEngineLock,
  NATIVE_BUILT,
  runCli,
  startEngine,
  tempDir,
  type RunningEngine,
} from '../helpers/engine.js';
import { canMountTmpfs, fillFs, smallFs, unmountSmallFs } from '../helpers/small-fs.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});
afterAll(() => unmountSmallFs());

/** A live process whose command line looks like an engine's (isEngineAlive checks it). */
async function liveEngineLike(): Promise<number> {
  const c = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', 'branchsan-engine'], {
    stdio: 'ignore',
  });
  children.push(c);
  await new Promise((resolve) => c.once('spawn', resolve));
  return c.pid!;
}

/** The pid of a process that has exited. */
async function deadPid(): Promise<number> {
  const c = spawn(process.execPath, ['-e', '0', 'branchsan-engine'], { stdio: 'ignore' });
  await new Promise((resolve) => c.once('exit', resolve));
  return c.pid!;
}

const lockOf = (dir: string) => path.join(dir, 'engine.lock');

describe('the engine lock', () => {
  it('is a link naming our pid and socket, found by engineSocketPath, gone after release', () => {
    const dir = tempDir('branchsan-lock-');
    const sock = '/run/branchsan-test/engine.sock';
    const lock = acquireInstanceLock(dir, sock);
    expect(lock.socketRecorded).toBe(true);
    expect(hasEngineLock(dir)).toBe(true);
    expect(fs.lstatSync(lockOf(dir)).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(lockOf(dir))).toBe(`${process.pid} ${sock}`);
    expect(engineSocketPath(dir)).toBe(sock);
    lock.release();
    expect(hasEngineLock(dir)).toBe(false);
    expect(engineSocketPath(dir)).toBe(path.join(dir, 'engine.sock'));
  });

  it('refuses while a live engine holds it, and leaves its lock alone', async () => {
    const dir = tempDir('branchsan-lock-');
    const pid = await liveEngineLike();
    fs.symlinkSync(`${pid} /tmp/other.sock`, lockOf(dir));
    let caught: unknown;
    try {
      acquireInstanceLock(dir, path.join(dir, 'engine.sock'));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UserError);
    expect((caught as UserError).code).toBe('already-running');
    expect((caught as UserError).message).toContain(`pid ${pid}`);
    expect((caught as UserError).hint).toContain(`kill ${pid}`);
    expect(fs.readlinkSync(lockOf(dir))).toBe(`${pid} /tmp/other.sock`);
    expect(engineSocketPath(dir)).toBe('/tmp/other.sock');
  });

  it('takes over a lock whose owner is gone', async () => {
    const dir = tempDir('branchsan-lock-');
    fs.symlinkSync(`${await deadPid()} /tmp/gone.sock`, lockOf(dir));
    const lock = acquireInstanceLock(dir, path.join(dir, 'engine.sock'));
    expect(fs.readlinkSync(lockOf(dir))).toBe(`${process.pid} ${path.join(dir, 'engine.sock')}`);
    lock.release();
  });

  it('honours the lock file of an older version: refused while its owner lives, taken over after', async () => {
    const dir = tempDir('branchsan-lock-');
    const pid = await liveEngineLike();
    fs.writeFileSync(lockOf(dir), `${pid}\n/tmp/old.sock\n`);
    expect(engineSocketPath(dir)).toBe('/tmp/old.sock');
    expect(() => acquireInstanceLock(dir, path.join(dir, 'engine.sock'))).toThrow(`pid ${pid}`);
    fs.writeFileSync(lockOf(dir), `${await deadPid()}\n/tmp/old.sock\n`);
    const lock = acquireInstanceLock(dir, path.join(dir, 'engine.sock'));
    expect(fs.lstatSync(lockOf(dir)).isSymbolicLink()).toBe(true);
    lock.release();
    expect(hasEngineLock(dir)).toBe(false);
  });

  it('does not remove a lock another engine took after ours was taken over', async () => {
    const dir = tempDir('branchsan-lock-');
    const lock = acquireInstanceLock(dir, path.join(dir, 'engine.sock'));
    const pid = await liveEngineLike();
    fs.rmSync(lockOf(dir));
    fs.symlinkSync(`${pid} /tmp/other.sock`, lockOf(dir));
    lock.release();
    expect(fs.readlinkSync(lockOf(dir))).toBe(`${pid} /tmp/other.sock`);
  });
});

describe.skipIf(!NATIVE_BUILT)('the flock on the data directory (C addon)', () => {
  let engine: RunningEngine | undefined;
  afterEach(async () => {
    await engine?.stop();
    engine = undefined;
  });

  it('keeps a second engine out while its holder lives, whatever the record says', async () => {
    const flock = (await loadNativeAddon())?.lock;
    expect(flock).toBeTypeOf('function');
    const dir = tempDir('branchsan-lock-');
    const lock = acquireInstanceLock(dir, path.join(dir, 'engine.sock'), flock);
    // The record looks stale (its pid is dead): what a second starter saw in the race
    // of two starters on a stale lock, or a record deleted and left by hand.
    const dead = await deadPid();
    fs.rmSync(lockOf(dir));
    fs.symlinkSync(`${dead} /tmp/gone.sock`, lockOf(dir));
    let caught: unknown;
    try {
      acquireInstanceLock(dir, path.join(dir, 'other.sock'), flock);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(UserError);
    expect((caught as UserError).code).toBe('already-running');
    // /proc/locks names the holder: this process
    expect((caught as UserError).message).toContain(`(pid ${process.pid})`);
    expect(fs.readlinkSync(lockOf(dir))).toBe(`${dead} /tmp/gone.sock`); // left alone
    lock.release();
    const next = acquireInstanceLock(dir, path.join(dir, 'engine.sock'), flock);
    expect(fs.readlinkSync(lockOf(dir))).toBe(`${process.pid} ${path.join(dir, 'engine.sock')}`);
    next.release();
  });

  it('a running engine whose lock record was deleted still refuses a second serve', async () => {
    engine = await startEngine();
    fs.rmSync(lockOf(engine.dataDir));
    const r = await runCli(['serve', '--data', engine.dataDir, '--console-port', '0'], {
      timeoutMs: 15_000,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `Another BranchSAN engine (pid ${engine.pid}) is already running on the data directory`,
    );
    // the first engine still serves
    expect(fs.existsSync(engine.socketPath)).toBe(true);
    expect((await runCli(['status', '--socket', engine.socketPath])).code).toBe(0);
  });
});

describe.skipIf(!canMountTmpfs)('the engine lock on a data disk with no byte free', () => {
  it('is taken with the socket recorded, where a lock file could not be written', () => {
    const dir = smallFs('branchsan-lockfull-');
    fillFs(dir);
    // The control: the file system really refuses a byte of data.
    expect(() => fs.writeFileSync(path.join(dir, 'probe'), 'x')).toThrow(/ENOSPC/);
    const lock = acquireInstanceLock(dir, path.join(dir, 'engine.sock'));
    expect(lock.socketRecorded).toBe(true);
    expect(engineSocketPath(dir)).toBe(path.join(dir, 'engine.sock'));
    lock.release();
    expect(hasEngineLock(dir)).toBe(false);
  });

  it('records the pid alone when the socket path is too long to fit without a data block', () => {
    const dir = smallFs('branchsan-lockfull-');
    fillFs(dir);
    const sock = `/run/${'s'.repeat(200)}/engine.sock`;
    const lock = acquireInstanceLock(dir, sock);
    expect(lock.socketRecorded).toBe(false);
    expect(fs.readlinkSync(lockOf(dir))).toBe(String(process.pid));
    // Finders fall back to the default place (the engine warns about it).
    expect(engineSocketPath(dir)).toBe(path.join(dir, 'engine.sock'));
    lock.release();
    expect(hasEngineLock(dir)).toBe(false);
  });
});
