/**
 * A host's DH-HMAC-CHAP secret lives as long as some subsystem allows the host: taken
 * off its last allow list, or its last subsystem deleted, its secret file is gone, and
 * stays gone over a restart; one another allow list still needs is kept. The real
 * engine (dist/) over its API socket, with the secret files read on disk.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../contract/errors.js';
import { apiError, connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, type RunningEngine } from '../helpers/engine.js';

const SUB_A = 'nqn.2026-11.io.branchsan.test:secrets-a';
const SUB_B = 'nqn.2026-11.io.branchsan.test:secrets-b';
const ESX = 'nqn.2014-08.org.nvmexpress:uuid:7d1e0c2a-1b3c-4d5e-8f90-a1b2c3d4e5f6';
const SQL = 'nqn.2014-08.org.nvmexpress:uuid:3f2e1d0c-9b8a-4765-8432-10fedcba9876';

let engine: RunningEngine | null = null;
let api: SocketClient | null = null;
afterEach(async () => {
  api?.close();
  api = null;
  await engine?.stop();
  engine = null;
});

async function start(dataDir?: string): Promise<SocketClient> {
  engine = await startEngine(dataDir ? { dataDir } : {});
  api = await connectSocket(engine.socketPath);
  return api;
}

async function restart(): Promise<SocketClient> {
  const dataDir = engine!.dataDir;
  api!.close();
  await engine!.stop();
  return start(dataDir);
}

const hostsDir = () => path.join(engine!.dataDir, 'secrets', 'hosts');
const fileOf = (host: string) =>
  path.join(hostsDir(), `${createHash('sha256').update(host).digest('hex')}.dhchap`);
const mode = (p: string) => fs.statSync(p).mode & 0o777;

describe('host secrets and access', () => {
  it('disallow deletes a secret no list needs, keeps one another list needs; subsystem delete too; a restart keeps them gone', async () => {
    const c = await start();
    await c.call('target.subsystem.create', { nqn: SUB_A, hosts: [ESX, SQL] });
    await c.call('target.subsystem.create', { nqn: SUB_B, hosts: [ESX] });
    const esx = await c.call('host.secret.create', { hostNqn: ESX });
    await c.call('host.secret.create', { hostNqn: SQL });
    expect(fs.existsSync(fileOf(ESX)) && fs.existsSync(fileOf(SQL))).toBe(true);

    // SQL loses its only list: its secret goes; ESX is still on B: its secret stays
    await c.call('target.host.disallow', { nqn: SUB_A, hostNqn: SQL });
    await c.call('target.host.disallow', { nqn: SUB_A, hostNqn: ESX });
    expect(fs.existsSync(fileOf(SQL))).toBe(false);
    expect((await c.call('host.secret.get', { hostNqn: ESX })).secret).toBe(esx.secret);
    expect(mode(fileOf(ESX))).toBe(0o600);
    expect(mode(hostsDir())).toBe(0o700);

    // B deleted: ESX is on no list any more
    await c.call('target.subsystem.delete', { nqn: SUB_B });
    expect(fs.readdirSync(hostsDir())).toEqual([]);
    expect((await apiError(c.call('host.secret.get', { hostNqn: ESX }))).code).toBe(
      ErrorCode.NotFound,
    );

    // allowed again, it gets a new secret, not the old one
    await c.call('target.host.allow', { nqn: SUB_A, hostNqn: ESX });
    expect((await apiError(c.call('host.secret.get', { hostNqn: ESX }))).code).toBe(
      ErrorCode.NotFound,
    );
    const again = await c.call('host.secret.create', { hostNqn: ESX });
    expect(again.secret).not.toBe(esx.secret);
    await c.call('target.host.disallow', { nqn: SUB_A, hostNqn: ESX });

    const after = await restart();
    expect(fs.readdirSync(hostsDir())).toEqual([]);
    for (const hostNqn of [ESX, SQL])
      expect((await apiError(after.call('host.secret.get', { hostNqn }))).code).toBe(
        ErrorCode.NotFound,
      );
    expect(mode(hostsDir())).toBe(0o700);
  });

  it('a start deletes no secret, even of a host no list allows (a restored older configuration)', async () => {
    const c = await start();
    await c.call('target.subsystem.create', { nqn: SUB_A, hosts: [ESX, SQL] });
    const sql = await c.call('host.secret.create', { hostNqn: SQL });
    // The configuration a backup restores may predate SQL's access: its secret, already
    // given to that host, must not go with a start.
    const kept = fs.readFileSync(fileOf(SQL));
    await c.call('target.host.disallow', { nqn: SUB_A, hostNqn: SQL });
    fs.writeFileSync(fileOf(SQL), kept, { mode: 0o600 });

    const after = await restart();
    expect(fs.readFileSync(fileOf(SQL)).equals(kept)).toBe(true);
    await after.call('target.host.allow', { nqn: SUB_A, hostNqn: SQL });
    expect((await after.call('host.secret.get', { hostNqn: SQL })).secret).toBe(sql.secret);
  });

  // Before: the rm of the directory failed, and so the deletion of every secret after it
  // in that change; the log said only 'delete them by hand from the data directory
  // (secrets/hosts/, ...)' with 'Path is a directory: rm returned EISDIR'.
  it('a directory in a secret file place is left, the log saying what it is and to rm -r it; the other secrets go', async () => {
    const c = await start();
    await c.call('target.subsystem.create', { nqn: SUB_A, hosts: [ESX, SQL] });
    await c.call('host.secret.create', { hostNqn: ESX });
    await c.call('host.secret.create', { hostNqn: SQL });
    fs.rmSync(fileOf(ESX));
    fs.mkdirSync(fileOf(ESX));
    fs.writeFileSync(path.join(fileOf(ESX), 'kept'), 'an administrator put this here\n');

    await c.call('target.subsystem.delete', { nqn: SUB_A });
    expect(fs.existsSync(fileOf(SQL))).toBe(false);
    expect(fs.readdirSync(fileOf(ESX))).toEqual(['kept']);
    const warned = engine!.lines.filter((l) =>
      String(l.msg).startsWith('secrets of hosts that lost access could not be deleted'),
    );
    expect(warned.map((l) => l.msg)).toEqual([
      `secrets of hosts that lost access could not be deleted: The DH-HMAC-CHAP secret file ${fileOf(ESX)} (of ${ESX}) is a directory, not a regular file. ` +
        `Run: rm -r ${fileOf(ESX)}, then nothing more: no subsystem allows the host, so it needs no secret.`,
    ]);
  });
});
