/**
 * The diagnostics bundle from a real engine (API and CLI) and from a stopped
 * engine's data directory: extracted with the system's tar, checked for its
 * contents, and searched for every secret the engine holds (none may appear).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { connectSocket, type SocketClient } from '../helpers/api.js';
import { BIN, runCli, startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';

const NQN = 'nqn.2026-11.io.branchsan.test:diag';
const HOST = 'nqn.2026-11.io.branchsan.test:host-a';
const SMTP_PASSWORD = 'Very-Secret-Mail-Pa55';
const WEBHOOK_SECRET = 'whsec-ABCDEFGH12345678';
const WEBHOOK_PATH_TOKEN = 'XoXo9TokenInThePath';

let engine: RunningEngine;
let api: SocketClient;
let hook: http.Server;

beforeAll(async () => {
  hook = http.createServer((_req, res) => res.end());
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  engine = await startEngine({ env: { BRANCHSAN_SYSLOG_COMMAND: '/bin/true' } });
  api = await connectSocket(engine.socketPath);
  await api.call('target.subsystem.create', { nqn: NQN, hosts: [HOST] });
  await api.call('host.secret.create', { hostNqn: HOST });
  await api.call('settings.set', {
    smtp: {
      username: 'alerts',
      password: SMTP_PASSWORD,
      host: 'mail.example',
      from: 'a@b.c',
      to: ['d@e.f'],
    },
    webhook: {
      enabled: true,
      url: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/services/${WEBHOOK_PATH_TOKEN}`,
      secret: WEBHOOK_SECRET,
    },
  });
  await api.call('notifications.test', {});
});

afterAll(async () => {
  api?.close();
  await engine?.stop();
  await new Promise((r) => hook?.close(r));
});

/** Every secret value the engine has on disk, plus the ones we set. */
function secretValues(dataDir: string): string[] {
  const out = [SMTP_PASSWORD, WEBHOOK_SECRET, WEBHOOK_PATH_TOKEN];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else {
        const v = fs.readFileSync(p, 'utf8').trim();
        if (v) out.push(v, ...v.split('\n').filter((l) => l.trim().length >= 8));
      }
    }
  };
  walk(path.join(dataDir, 'secrets'));
  return out;
}

/** Extracts with tar(1); returns the top directory and every file's text. */
function extract(bundle: string): { top: string; files: Map<string, string> } {
  const into = tempDir('diag-x-');
  execFileSync('tar', ['-xzf', bundle, '-C', into]);
  const [top] = fs.readdirSync(into);
  const files = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else files.set(path.relative(path.join(into, top!), p), fs.readFileSync(p, 'utf8'));
    }
  };
  walk(path.join(into, top!));
  return { top: top!, files };
}

function expectNoSecrets(files: Map<string, string>, dataDir: string, atLeast = 6): void {
  const secrets = secretValues(dataDir);
  expect(secrets.length).toBeGreaterThanOrEqual(atLeast); // console token, host key, smtp, webhook…
  for (const [name, text] of files) {
    for (const s of secrets) {
      if (text.includes(s)) throw new Error(`secret found in ${name}: ${s.slice(0, 4)}…`);
    }
  }
}

describe('diagnostics bundle', () => {
  it('diagnostics.bundle writes a .tar.gz with logs, config, events, alerts and system facts, secrets removed', async () => {
    const r = await api.call('diagnostics.bundle', {});
    expect(r.path.startsWith(path.join(fs.realpathSync(engine.dataDir), 'diagnostics'))).toBe(true);
    expect(r.path).toMatch(/branchsan-diagnostics-.*\.tar\.gz$/);
    expect(fs.statSync(r.path).size).toBe(r.sizeBytes);
    const { top, files } = extract(r.path);
    expect(top).toMatch(/^branchsan-diagnostics-/);
    for (const f of [
      'README.txt',
      'system.json',
      'live.json',
      'config/target.json',
      'config/settings.json',
      'config/secrets.txt',
      'events.jsonl',
      'alerts.json',
      'audit.jsonl',
      'database.json',
      'logs/engine.log',
      'problems.txt',
    ]) {
      expect(files.has(f), f).toBe(true);
    }
    expect(files.get('problems.txt')).toBe('none\n');
    const sys = JSON.parse(files.get('system.json')!);
    expect(sys.product.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(sys.node.node).toBe(process.versions.node);
    expect(JSON.parse(files.get('config/target.json')!).subsystems[0].nqn).toBe(NQN);
    const settings = JSON.parse(files.get('config/settings.json')!);
    expect(settings['service.settings'].webhook.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/…$/);
    expect(settings['node.id']).toMatch(/^[0-9a-f-]{36}$/);
    expect(files.get('config/secrets.txt')).toMatch(/0600 .* smtp-password/);
    expect(files.get('events.jsonl')).toContain('"type":"notifications.test"');
    expect(files.get('logs/engine.log')).toContain('"msg":"engine ready"');
    expect(files.get('logs/engine.log')).toContain('token=[REDACTED]');
    expect(JSON.parse(files.get('live.json')!).status.pid).toBe(engine.pid);
    expectNoSecrets(files, engine.dataDir);
  });

  it('`branchsan diagnostics` asks the running engine and copies the bundle to --out', async () => {
    const out = path.join(tempDir(), 'diag.tar.gz');
    const r = await runCli(['diagnostics', '--data', engine.dataDir, '--out', out], {
      timeoutMs: 60_000,
    });
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Diagnostics bundle written: ${out}`);
    expect(r.stdout).toContain('from the running engine');
    const { files } = extract(out);
    expect(files.has('live.json')).toBe(true);
    expectNoSecrets(files, engine.dataDir);
  });

  it('builds the bundle from the data directory of a stopped engine', async () => {
    const d = tempDir();
    const e = await startEngine({ dataDir: d, env: { BRANCHSAN_SYSLOG_COMMAND: '/bin/true' } });
    expect(await e.stop()).toBe(0);
    const out = path.join(tempDir(), 'offline.tar.gz');
    const r = await runCli(['diagnostics', '--data', d, '--out', out]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`read from ${d}`);
    const { files } = extract(out);
    expect(files.has('live.json')).toBe(false);
    expect(files.get('events.jsonl')).toMatch(/"type":"engine\.stopped"/);
    expect(files.get('logs/engine.log')).toContain('"msg":"engine stopped"');
    expectNoSecrets(files, d, 4); // the console's secrets only
    const missing = await runCli(['diagnostics']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--data DIR is required');
  });

  it.skipIf(process.getuid?.() !== 0)(
    'says so when the user may not read the data directory, instead of a silently thin bundle',
    () => {
      const outDir = tempDir();
      fs.chmodSync(outDir, 0o777);
      // this run's temporary directory (0700) must let that user through to outDir
      const runDir = path.dirname(outDir);
      const runMode = fs.statSync(runDir).mode & 0o7777;
      fs.chmodSync(runDir, runMode | 0o011);
      onTestFinished(() => fs.chmodSync(runDir, runMode));
      const out = path.join(outDir, 'thin.tar.gz');
      // the engine's directory is root's (0750): an ordinary user sees nothing in it
      const r = spawnSync(
        process.execPath,
        [BIN, 'diagnostics', '--data', engine.dataDir, '--out', out],
        {
          uid: 65534,
          gid: 65534,
          encoding: 'utf8',
          cwd: outDir,
          timeout: 60_000,
        },
      );
      expect(r.stdout).toContain('Diagnostics bundle written');
      expect(r.status).toBe(0);
      expect(r.stderr).toContain(`warning: you may not read ${engine.dataDir} (EACCES)`);
      expect(r.stderr).toContain(`sudo branchsan diagnostics --data ${engine.dataDir}`);
      expect(extract(out).files.has('system.json')).toBe(true);
    },
  );
});
