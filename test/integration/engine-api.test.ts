/**
 * The walking skeleton end to end at the API level: a real engine process, its Unix
 * socket and its console WebSocket, real SQLite on a temp data directory.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { runCli, startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';

/** A raw line-oriented socket client: sends exactly the bytes given. */
class LineClient {
  private buf = '';
  private waiters: ((line: string) => void)[] = [];
  private lines: string[] = [];
  constructor(readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      let nl: number;
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        const w = this.waiters.shift();
        if (w) w(line);
        else this.lines.push(line);
      }
    });
  }
  static connect(p: string): Promise<LineClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(p, () => resolve(new LineClient(s)));
      s.once('error', reject);
    });
  }
  next(): Promise<Record<string, any>> {
    const l = this.lines.shift();
    if (l !== undefined) return Promise.resolve(JSON.parse(l));
    return new Promise((resolve) => this.waiters.push((line) => resolve(JSON.parse(line))));
  }
  /** Next message that is not an event notification. */
  async reply(): Promise<Record<string, any>> {
    for (;;) {
      const m = await this.next();
      if (m.method !== 'event') return m;
    }
  }
  send(raw: string): void {
    this.sock.write(raw);
  }
}

let engine: RunningEngine;

beforeAll(async () => {
  engine = await startEngine();
});
afterAll(async () => {
  await engine?.stop();
});

describe('engine API over the Unix socket', () => {
  it('answers system.status', async () => {
    const c = await LineClient.connect(engine.socketPath);
    c.send(JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'system.status', params: {} }) + '\n');
    const r = await c.reply();
    expect(r.id).toBe(1);
    expect(r.result.dataDir).toBe(fs.realpathSync(engine.dataDir));
    expect(r.result.dbSchemaVersion).toBeGreaterThanOrEqual(1);
    expect(r.result.pid).toBe(engine.pid);
    expect(r.result.nodeId).toMatch(/^[0-9a-f-]{36}$/);
    c.sock.destroy();
  });

  it('answers malformed and unknown requests with structured errors, and keeps the connection usable', async () => {
    const c = await LineClient.connect(engine.socketPath);
    c.send('{not json\n');
    const parse = await c.reply();
    expect(parse.error.code).toBe(-32700);
    expect(parse.error.message).toMatch(/not valid JSON/);

    c.send(
      JSON.stringify({ jsonrpc: '2.0', id: 'a', method: 'volume.explode', params: {} }) + '\n',
    );
    const unknown = await c.reply();
    expect(unknown).toMatchObject({ id: 'a', error: { code: -32601 } });
    expect(unknown.error.data.hint).toContain('system.status');

    c.send(
      JSON.stringify({
        jsonrpc: '2.0',
        id: 2,
        method: 'system.status',
        params: { verbose: true },
      }) + '\n',
    );
    const bad = await c.reply();
    expect(bad).toMatchObject({ id: 2, error: { code: -32602, data: { field: 'verbose' } } });

    c.send(JSON.stringify({ id: 3, method: 'system.status' }) + '\n');
    const envelope = await c.reply();
    expect(envelope).toMatchObject({ id: 3, error: { code: -32600 } });

    c.send(JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'system.status' }) + '\n');
    const ok = await c.reply();
    expect(ok.id).toBe(4);
    expect(ok.result.version).toMatch(/^\d+\.\d+\.\d+/);
    c.sock.destroy();
  });

  it('survives an over-long line and still answers on the same connection', async () => {
    const c = await LineClient.connect(engine.socketPath);
    c.send('x'.repeat(1.5 * 1024 * 1024) + '\n');
    const big = await c.reply();
    expect(big.error.code).toBe(-32600);
    c.send(JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'system.status' }) + '\n');
    expect((await c.reply()).id).toBe(9);
    c.sock.destroy();
  });

  it('answers a client that sends its requests and ends its side (nc -N), then ends too', async () => {
    const nqn = 'nqn.2026-11.io.branchsan.test:halfopen';
    const vol = path.join(tempDir(), 'halfopen.img');
    const req = (id: number, method: string, params: unknown) =>
      JSON.stringify({ jsonrpc: '2.0', id, method, params });
    const sock = net.connect(engine.socketPath);
    let got = '';
    sock.setEncoding('utf8').on('data', (d: string) => (got += d));
    const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    sock.end(
      req(1, 'target.subsystem.create', { nqn, allowAnyHost: true }) +
        '\n' +
        req(2, 'target.namespace.add', {
          nqn,
          backend: { kind: 'file', path: vol, createSizeBytes: 1 << 20 },
        }) +
        '\n' +
        req(3, 'system.status', {}), // the last one without its newline
    );
    await closed; // the engine ended the connection once every reply was out
    const replies = got
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { id?: number; method?: string; result?: any; error?: unknown })
      .filter((m) => m.method === undefined);
    // Before: the connection closed with the client's end, and the namespace's reply
    // (its file still being made) was lost although the namespace was added.
    expect(replies.map((r) => r.id).sort()).toEqual([1, 2, 3]);
    expect(replies.every((r) => r.error === undefined)).toBe(true);
    expect(replies.find((r) => r.id === 2)!.result.nsid).toBe(1);
  });

  it('pushes heartbeat events', async () => {
    const c = await LineClient.connect(engine.socketPath);
    // Other pushes (metrics.sample) may come first: wait for the heartbeat among them.
    let ev = await c.next();
    while (ev.params?.name !== 'system.heartbeat') ev = await c.next();
    expect(ev).toMatchObject({ method: 'event', params: { name: 'system.heartbeat' } });
    expect(ev.params.data.uptimeSec).toBeGreaterThan(0);
    c.sock.destroy();
  });

  it('creates the socket 0660 for the branchsan-admin group (0600 without it) and the token 0600', () => {
    // console-auth.test.ts covers both cases with a group it creates
    const haveGroup = spawnSync('getent', ['group', 'branchsan-admin']).status === 0;
    expect(fs.statSync(engine.socketPath).mode & 0o777).toBe(haveGroup ? 0o660 : 0o600);
    expect(fs.statSync(path.join(engine.dataDir, 'secrets', 'console-token')).mode & 0o777).toBe(
      0o600,
    );
  });

  it('the CLI reports status through the socket', async () => {
    const r = await runCli(['status', '--data', engine.dataDir, '--json']);
    expect(r.code).toBe(0);
    const json = JSON.parse(r.stdout) as {
      pid: number;
      target: { ports: { host: string; port: number }[]; subsystems: number; namespaces: number };
      alerts: { active: number } & Record<'critical' | 'error' | 'warning' | 'info', number>;
    };
    expect(json.pid).toBe(engine.pid);
    // everything the text says, for scripts (before: the system.status answer alone)
    const text = await runCli(['status', '--data', engine.dataDir]);
    const ports = json.target.ports.map((p) => `${p.host}:${p.port}`).join(', ');
    expect(text.stdout).toContain(`NVMe/TCP ports: ${ports || 'none configured'}`);
    expect(text.stdout).toMatch(
      new RegExp(`${json.target.subsystems} subsystems?, ${json.target.namespaces} namespaces?`),
    );
    const { active, critical, error, warning, info } = json.alerts;
    expect(active).toBe(critical + error + warning + info);
  });
});

describe('engine API over the console WebSocket', () => {
  const token = () => new URL(engine.consoleUrl!).searchParams.get('token')!;
  const wsUrl = () => engine.consoleUrl!.replace(/^http/, 'ws').replace(/\/\?.*$/, '/api');
  /**
   * The session cookie and page key: the printed token authorises the first-run setup,
   * which signs in. The key goes with the upgrade as a subprotocol offer, as the page does.
   */
  let cookie = '';
  let keyOffer = '';

  beforeAll(async () => {
    const res = await fetch(new URL('/api/setup', engine.consoleUrl!), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ token: token(), password: 'integration-test' }),
    });
    expect(res.status).toBe(201);
    cookie = res.headers.get('set-cookie')!.split(';')[0]!;
    keyOffer = `branchsan.key.${((await res.json()) as { pageKey: string }).pageKey}`;
  });

  function open(protocols: string[], withCookie = true): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const offers = withCookie ? [...protocols, keyOffer] : protocols;
      const ws = new WebSocket(wsUrl(), offers, {
        headers: withCookie ? { Cookie: cookie } : {},
      });
      ws.once('open', () => resolve(ws));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }
  function nextReply(ws: WebSocket): Promise<Record<string, any>> {
    return new Promise((resolve) => {
      const on = (d: WebSocket.RawData) => {
        const m = JSON.parse(d.toString());
        if (m.method === 'event') return;
        ws.off('message', on);
        resolve(m);
      };
      ws.on('message', on);
    });
  }

  it('answers system.status with the session, and malformed messages keep the socket usable', async () => {
    const ws = await open(['branchsan.v1']);
    expect(ws.protocol).toBe('branchsan.v1');
    ws.send('[1,2');
    expect((await nextReply(ws)).error.code).toBe(-32700);
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'nope.nope' }));
    expect((await nextReply(ws)).error.code).toBe(-32601);
    ws.send(JSON.stringify({ jsonrpc: '2.0', id: 8, method: 'system.status', params: {} }));
    const r = await nextReply(ws);
    expect(r.id).toBe(8);
    expect(r.result.pid).toBe(engine.pid);
    ws.close();
  });

  it('pushes heartbeats to the console', async () => {
    const ws = await open(['branchsan.v1']);
    // Other pushes (metrics.sample) may come first: wait for the heartbeat among them.
    const ev = await new Promise<any>((resolve) => {
      const onMessage = (d: Buffer) => {
        const m = JSON.parse(d.toString());
        if (m.params?.name !== 'system.heartbeat') return;
        ws.off('message', onMessage);
        resolve(m);
      };
      ws.on('message', onMessage);
    });
    expect(ev).toMatchObject({ method: 'event', params: { name: 'system.heartbeat' } });
    expect(ev.params.data.uptimeSec).toBeGreaterThan(0);
    ws.close();
  });

  it('refuses an upgrade without a session (the token alone is not one), or from another origin', async () => {
    await expect(open(['branchsan.v1'], false)).rejects.toThrow(/401/);
    await expect(open(['branchsan.v1', `branchsan.token.${token()}`], false)).rejects.toThrow(
      /401/,
    );
    const foreign = new WebSocket(wsUrl(), ['branchsan.v1', keyOffer], {
      origin: 'http://evil.example',
      headers: { Cookie: cookie },
    });
    await expect(
      new Promise((resolve, reject) => {
        foreign.once('open', resolve);
        foreign.once('unexpected-response', (_q, res) =>
          reject(new Error(`HTTP ${res.statusCode}`)),
        );
      }),
    ).rejects.toThrow(/403/);
  });

  it('serves the console with a strict CSP and refuses path traversal', async () => {
    const base = engine.consoleUrl!.replace(/\?.*$/, '');
    const res = await fetch(base);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'self'");
    const trav = await fetch(base + '..%2f..%2fpackage.json');
    expect(trav.status).toBe(404);
  });
});

describe('single instance', () => {
  it('a second engine on the same data directory refuses with a clear message', async () => {
    const r = await runCli(['serve', '--data', engine.dataDir, '--console-port', '0']);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`Another BranchSAN engine (pid ${engine.pid}) is already running`);
    expect(r.stderr).toMatch(/Stop it first/);
  });

  it('takes over a lock left by a killed engine and records the unclean stop', async () => {
    const dir = tempDir();
    const first = await startEngine({ dataDir: dir });
    await first.stop('SIGKILL');
    const second = await startEngine({ dataDir: dir });
    try {
      expect(second.lines.some((l) => l.msg === 'previous run did not stop cleanly')).toBe(true);
    } finally {
      await second.stop();
    }
  });

  it('bad usage gets a message and exit code 2', async () => {
    const r = await runCli(['serve']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--data DIR is required');
    const u = await runCli(['frobnicate']);
    expect(u.code).toBe(2);
    expect(u.stderr).toContain('unknown command');
  });
});
