/**
 * A namespace is served only from the disk or file it was added on, for real (root,
 * losetup): a /dev/loopN name attached to another file at the next start is refused
 * (offline, with an event that names both and what to do) until the right file is back
 * or the new one is accepted; a file cut short is refused, a grown one served; a row
 * from before identities were kept gets its disk's identity at its next open.
 * When the sandbox refuses losetup, the tests are skipped.
 */
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../contract/api.js';
import { NvmeController } from '../../engine/src/host/index.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { tryRun } from '../unit/storage/helpers.js';

const NQN = 'nqn.2026-11.io.branchsan.test:devid';
const HOST = 'nqn.2014-08.org.nvmexpress:uuid:22222222-2222-3333-4444-555555555555';
const PORT = 46311;
const MiB = 1 << 20;

const dir = tempDir('branchsan-devid-');
const fileX = path.join(dir, 'x.img');
const fileY = path.join(dir, 'y.img');
const fileF = path.join(dir, 'f.img');
const loops = new Set<string>();
let loopRefused: string | null = null;
let engine: RunningEngine | undefined;
let api: SocketClient;

function attach(file: string, dev?: string, sectorSize?: 512 | 4096): string {
  const b = sectorSize ? ['-b', String(sectorSize)] : [];
  const r = tryRun('losetup', dev ? [...b, dev, file] : [...b, '-f', '--show', file]);
  if ('refused' in r) throw new Error(`losetup ${file}: ${r.refused}`);
  const name = dev ?? r.out;
  loops.add(name);
  return name;
}

function detach(dev: string): void {
  const r = tryRun('losetup', ['-d', dev]);
  if ('refused' in r) throw new Error(`losetup -d ${dev}: ${r.refused}`);
  loops.delete(dev);
}

async function start(): Promise<void> {
  engine = await startEngine({ dataDir: engine?.dataDir ?? path.join(dir, 'data') });
  api = await connectSocket(engine.socketPath);
}

async function stop(): Promise<void> {
  api.close();
  await engine!.stop();
}

/** The namespaces a host sees. */
async function served(): Promise<number[]> {
  const c = await NvmeController.connect({
    host: '127.0.0.1',
    port: PORT,
    subnqn: NQN,
    hostnqn: HOST,
  });
  try {
    return await c.activeNamespaces();
  } finally {
    await c.close();
  }
}

async function eventsOf(type: string): Promise<string[]> {
  const r = await api.call('events.list', { type, limit: 10 });
  return r.events.map((e) => e.message);
}

async function until<T>(f: () => Promise<T | undefined>, ms: number): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 250));
  }
}

function db<T>(f: (d: Database.Database) => T): T {
  const d = new Database(path.join(engine!.dataDir, 'branchsan.db'));
  try {
    return f(d);
  } finally {
    d.close();
  }
}

beforeAll(() => {
  for (const f of [fileX, fileY]) {
    fs.writeFileSync(f, '');
    fs.truncateSync(f, 8 * MiB); // the same size: only which file it is tells them apart
  }
  const r = tryRun('losetup', ['-f', '--show', fileX]);
  if ('refused' in r) {
    loopRefused = r.refused;
    console.warn(`SKIPPED device identity tests that need losetup: ${loopRefused}`);
  } else {
    loops.add(r.out);
    detach(r.out);
  }
});

afterAll(async () => {
  api?.close();
  await engine?.stop();
  for (const dev of loops) tryRun('losetup', ['-d', dev]);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('the disk of a block namespace', () => {
  let loopA: string;

  it('is refused when its /dev name is another disk at the next start, and served once it is back', async (ctx) => {
    if (loopRefused) ctx.skip();
    loopA = attach(fileX);
    await start();
    await api.call('target.subsystem.create', { nqn: NQN, allowAnyHost: true });
    await api.call('target.port.add', { host: '127.0.0.1', port: PORT });
    await api.call('target.namespace.add', {
      nqn: NQN,
      nsid: 1,
      backend: { kind: 'block', path: loopA },
    });
    expect(await served()).toEqual([1]);
    await stop();

    // the same name, another file: what a reboot does to /dev/sdX names
    detach(loopA);
    attach(fileY, loopA);
    await start();
    expect(await served()).toEqual([]);
    const [why] = await eventsOf('target.namespace.wrong-backing');
    expect(why).toContain(
      `Namespace 1 of ${NQN} is offline: ${loopA} is not the disk namespace 1 of ${NQN} was added on`,
    );
    expect(why).toContain(`that was loop device on ${fileX} (inode ${fs.statSync(fileX).ino})`);
    expect(why).toContain(
      `${loopA} is now loop device on ${fileY} (inode ${fs.statSync(fileY).ino})`,
    );
    expect(why).toContain(`target.namespace.accept {"nqn": "${NQN}", "nsid": 1}`);
    const alert = await until(async () => {
      const r = await api.call('alerts.list', {});
      return r.alerts.find((a) => a.rule === 'volume.offline' && a.subject === `${NQN}/1`);
    }, 10_000);
    expect(alert.message).toContain(
      `is not served, so hosts cannot reach it: ${loopA} is not the disk namespace 1 of ${NQN} was added on`,
    );

    // its file back at that name: served again by the retry, with no restart
    detach(loopA);
    attach(fileX, loopA);
    await until(async () => ((await served()).includes(1) ? true : undefined), 30_000);
    expect(await eventsOf('target.namespace.online')).toHaveLength(1);
  }, 60_000);

  it('is taken as it is only when accepted, keeping its NGUID', async (ctx) => {
    if (loopRefused) ctx.skip();
    const before = (await api.call('target.config', {})).subsystems[0]!.namespaces[0]!;
    const refused = await apiError(api.call('target.namespace.accept', { nqn: NQN, nsid: 1 }));
    expect(refused.code).toBe(ErrorCode.Conflict);
    expect(refused.message).toBe(
      `Namespace 1 of ${NQN} is online (${loopA}): nothing was changed.`,
    );
    await stop();
    detach(loopA);
    attach(fileY, loopA);
    await start();
    expect(await served()).toEqual([]);
    const ns = await api.call('target.namespace.accept', { nqn: NQN, nsid: 1 });
    expect(ns).toMatchObject({ nsid: 1, path: loopA, nguid: before.nguid, uuid: before.uuid });
    expect(await served()).toEqual([1]);
    const [accepted] = await eventsOf('target.namespace.accepted');
    expect(accepted).toContain(`is served from ${loopA} (loop device on ${fileY}`);
    // and from now on Y is the one: a restart serves it
    await stop();
    await start();
    expect(await served()).toEqual([1]);
  }, 60_000);

  it('of a namespace added before identities were kept is recorded at its next open', async (ctx) => {
    if (loopRefused) ctx.skip();
    await stop();
    db((d) => d.prepare('UPDATE namespaces SET device = NULL').run());
    await start();
    expect(await served()).toEqual([1]);
    const [recorded] = await eventsOf('target.namespace.device-recorded');
    expect(recorded).toContain(`${loopA} is loop device on ${fileY}`);
    const stored = db(
      (d) => d.prepare('SELECT device FROM namespaces').get() as { device: string },
    );
    expect(JSON.parse(stored.device)).toMatchObject({
      key: expect.stringContaining(encodeURIComponent(fileY)),
      weak: false,
    });
    // and checked from then on
    await stop();
    detach(loopA);
    attach(fileX, loopA);
    await start();
    expect(await served()).toEqual([]);
    expect((await eventsOf('target.namespace.wrong-backing'))[0]).toContain(
      `that was loop device on ${fileY}`,
    );
    // its disk is at another name now: the namespace follows it there, as the hint says
    const loopB = attach(fileY);
    detach(loopA);
    expect(loopB).not.toBe(loopA);
    const moved = await api.call('target.namespace.accept', { nqn: NQN, nsid: 1, path: loopB });
    expect(moved).toMatchObject({ nsid: 1, path: loopB });
    expect(await served()).toEqual([1]);
    await api.call('target.namespace.remove', { nqn: NQN, nsid: 1 });
    detach(loopB);
  }, 60_000);
});

describe('the file of a file namespace', () => {
  it('is refused when it shrank, and served at its new size when it grew', async (ctx) => {
    if (loopRefused) ctx.skip(); // the engine of the tests above
    await api.call('target.namespace.add', {
      nqn: NQN,
      nsid: 2,
      backend: { kind: 'file', path: fileF, createSizeBytes: 8 * MiB },
    });
    await stop();
    fs.truncateSync(fileF, 4 * MiB);
    await start();
    expect(await served()).toEqual([]);
    const [why] = await eventsOf('target.namespace.wrong-backing');
    expect(why).toContain(
      `${fileF} is ${4 * MiB} bytes, smaller than the ${8 * MiB} bytes namespace 2 of ${NQN} has`,
    );
    expect(why).toContain(`truncate -s ${8 * MiB} '${fileF}'`);

    await stop();
    fs.truncateSync(fileF, 16 * MiB);
    await start();
    expect(await served()).toEqual([2]);
    expect((await eventsOf('target.namespace.grown'))[0]).toContain(
      `grew from ${8 * MiB} to ${16 * MiB} bytes`,
    );
    const ns = (await api.call('target.config', {})).subsystems[0]!.namespaces[0]!;
    expect(ns.sizeBytes).toBe(16 * MiB);
  }, 60_000);
});

describe('the block size of a block namespace', () => {
  it('is refused when its disk has other blocks at the next start (a loop device attached with another sector size)', async (ctx) => {
    if (loopRefused) ctx.skip(); // the engine of the tests above
    const fileZ = path.join(dir, 'z.img');
    fs.writeFileSync(fileZ, '');
    fs.truncateSync(fileZ, 8 * MiB);
    const loopZ = attach(fileZ, undefined, 512);
    await api.call('target.namespace.add', {
      nqn: NQN,
      nsid: 3,
      backend: { kind: 'block', path: loopZ },
    });
    expect(await served()).toContain(3);
    await stop();
    // the same file, the same name, 4096-byte sectors: every LBA a host wrote names other bytes now
    detach(loopZ);
    attach(fileZ, loopZ, 4096);
    await start();
    expect(await served()).not.toContain(3);
    const [why] = await eventsOf('target.namespace.wrong-backing');
    expect(why).toContain(
      `Namespace 3 of ${NQN} is offline: ${loopZ} has 4096-byte blocks, not the 512-byte blocks of namespace 3 of ${NQN}`,
    );

    // nor taken as it is: and refused before it is served, not taken back once hosts were told of it
    const attached = () =>
      engine!.lines.filter((l) => l.msg === 'namespace attached' && l.nsid === 3).length;
    const before = attached();
    const refused = await apiError(api.call('target.namespace.accept', { nqn: NQN, nsid: 3 }));
    expect(refused.code).toBe(ErrorCode.InvalidParams);
    expect(refused.message).toBe(
      `${loopZ} has 4096-byte blocks, and namespace 3 of ${NQN} has 512-byte blocks: hosts would misread all its data. Nothing was changed.`,
    );
    expect(attached()).toBe(before);
    expect(await served()).not.toContain(3);
    await api.call('target.namespace.remove', { nqn: NQN, nsid: 3 });
    detach(loopZ);
  }, 60_000);
});

describe('the backing file of a loop device', () => {
  // Before, a loop device was known by its backing file's path: the file renamed (or
  // attached through a bind mount, another mount view) was refused until accepted.
  it('renamed, is still the volume, and a record of an older engine is kept current', async (ctx) => {
    if (loopRefused) ctx.skip(); // the engine of the tests above
    const fileR = path.join(dir, 'r.img');
    fs.writeFileSync(fileR, '');
    fs.truncateSync(fileR, 8 * MiB);
    const loopR = attach(fileR);
    await api.call('target.namespace.add', {
      nqn: NQN,
      nsid: 6,
      backend: { kind: 'block', path: loopR },
    });
    await stop();
    const renamed = path.join(dir, 'r-renamed.img');
    detach(loopR);
    fs.renameSync(fileR, renamed);
    attach(renamed, loopR);
    await start();
    expect(await served()).toContain(6);
    const device = () =>
      JSON.parse(
        db(
          (d) =>
            d.prepare('SELECT device FROM namespaces WHERE nsid = 6').get() as { device: string },
        ).device,
      ) as { key: string; about: string };
    expect(device().about).toBe(`loop device on ${renamed} (inode ${fs.statSync(renamed).ino})`);

    // recorded by an older engine (its path and inode): served while that is what it is,
    // and recorded as it is known now
    await stop();
    const current = device().key;
    const older = {
      key: `loop:${renamed}:${fs.statSync(renamed).ino}@0+0`,
      about: 'older',
      weak: false,
    };
    db((d) =>
      d.prepare('UPDATE namespaces SET device = ? WHERE nsid = 6').run(JSON.stringify(older)),
    );
    await start();
    expect(await served()).toContain(6);
    expect(device().key).toBe(current);
    expect(await eventsOf('target.namespace.device-recorded')).toHaveLength(1); // nsid 1's, above

    // and a new file under its name is refused
    await stop();
    detach(loopR);
    fs.rmSync(renamed);
    fs.writeFileSync(renamed, '');
    fs.truncateSync(renamed, 8 * MiB);
    attach(renamed, loopR);
    await start();
    expect(await served()).not.toContain(6);
    await api.call('target.namespace.remove', { nqn: NQN, nsid: 6 });
    detach(loopR);
  }, 60_000);
});

describe('a disk recorded without an identity', () => {
  // Before: a disk that showed no WWID, serial or UUID when it was added (key 'none')
  // was refused as another disk once a newer kernel or driver showed one: every such
  // disk offline after an upgrade, though the record said "by its size only".
  it('is served when it shows one later, which is recorded and checked from then on', async (ctx) => {
    if (loopRefused) ctx.skip(); // the engine of the tests above
    const fileW = path.join(dir, 'w.img');
    fs.writeFileSync(fileW, '');
    fs.truncateSync(fileW, 8 * MiB);
    const loopW = attach(fileW);
    await api.call('target.namespace.add', {
      nqn: NQN,
      nsid: 5,
      backend: { kind: 'block', path: loopW },
    });
    await stop();
    const weak = {
      key: 'none',
      about: 'loopW, which has no WWID, serial number or UUID',
      weak: true,
    };
    db((d) =>
      d.prepare('UPDATE namespaces SET device = ? WHERE nsid = 5').run(JSON.stringify(weak)),
    );
    await start();
    expect(await served()).toContain(5);
    const [recorded] = await eventsOf('target.namespace.device-recorded');
    expect(recorded).toContain(`Namespace 5 of ${NQN}: ${loopW} is loop device on ${fileW}`);
    expect(recorded).toContain('the disk showed no identity when the namespace was added');
    const stored = db(
      (d) => d.prepare('SELECT device FROM namespaces WHERE nsid = 5').get() as { device: string },
    );
    expect(JSON.parse(stored.device)).toMatchObject({
      key: expect.stringContaining(encodeURIComponent(fileW)),
      weak: false,
    });
    await api.call('target.namespace.remove', { nqn: NQN, nsid: 5 });
    detach(loopW);
  }, 60_000);
});
