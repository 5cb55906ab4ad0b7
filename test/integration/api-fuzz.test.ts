/**
 * API fuzzing against a real engine: random and malformed JSON-RPC messages on the
 * Unix socket never crash it, always get a well-formed answer, and never change the
 * configuration. Mutating methods are fed parameters the contract must reject.
 */
import fc from 'fast-check';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { METHOD_NAMES } from '../../contract/api.js';
import { connectSocket, type SocketClient } from '../helpers/api.js';
import { startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';

const NQN = 'nqn.2026-11.io.branchsan.test:fuzz';
let engine: RunningEngine;
let api: SocketClient;
let raw: net.Socket;
const replies: any[] = [];
let partial = '';

beforeAll(async () => {
  const dir = tempDir();
  engine = await startEngine({ dataDir: path.join(dir, 'data') });
  api = await connectSocket(engine.socketPath);
  await api.call('target.subsystem.create', { nqn: NQN });
  await api.call('target.port.add', { host: '127.0.0.1', port: await freePort() });
  await api.call('target.namespace.add', {
    nqn: NQN,
    backend: { kind: 'memory', sizeBytes: 8 << 20 },
  });
  raw = net.connect(engine.socketPath);
  await new Promise((r) => raw.once('connect', r));
  raw.setEncoding('utf8');
  raw.on('data', (d: string) => {
    partial += d;
    let nl: number;
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl);
      partial = partial.slice(nl + 1);
      const msg = JSON.parse(line); // every answer must be valid JSON
      if (msg.method !== 'event') replies.push(msg);
    }
  });
});

afterAll(async () => {
  raw?.destroy();
  api?.close();
  await engine?.stop();
});

/** Sends lines and waits until as many answers arrived (non-blank lines each get one). */
async function exchange(lines: string[]): Promise<any[]> {
  const expected = lines.filter((l) => l.trim() !== '').length;
  const start = replies.length;
  raw.write(lines.map((l) => l + '\n').join(''));
  const deadline = Date.now() + 10_000;
  while (replies.length < start + expected) {
    if (Date.now() > deadline)
      throw new Error(`only ${replies.length - start}/${expected} answers`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return replies.slice(start, start + expected);
}

const junkValue = fc.oneof(
  fc.string(),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.array(fc.anything(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.anything(), { maxKeys: 4 }),
);

/** Params for a real method that the contract must reject: wrong types, unknown keys, junk. */
const badParams = fc.oneof(
  junkValue.filter((v) => typeof v !== 'object' || v === null || Array.isArray(v)),
  fc.record({
    nqn: fc.oneof(
      fc.integer(),
      fc.string().filter((s) => !s.startsWith('nqn.')),
    ),
  }),
  fc.record({
    nqn: fc.constant(NQN),
    nsid: fc.oneof(fc.integer({ min: 1025 }), fc.integer({ max: 0 }), fc.string()),
  }),
  fc.record({
    portId: fc.oneof(fc.integer({ min: 65536 }), fc.double({ noInteger: true }), fc.string()),
  }),
  fc.record({ host: fc.string().filter((s) => !/^[\d.]+$/.test(s)), port: fc.integer() }),
  fc.record({ nqn: fc.constant(NQN), backend: junkValue }),
  fc.record({ unexpected: fc.anything() }),
);

const message = fc.oneof(
  // not JSON at all
  fc.string({ maxLength: 200 }).filter((s) => !s.includes('\n')),
  // JSON but not a request
  junkValue.map((v) => JSON.stringify(v)),
  // requests for unknown methods
  fc
    .record({
      jsonrpc: fc.constant('2.0'),
      id: fc.nat(),
      method: fc.string({ maxLength: 40 }),
      params: junkValue,
    })
    .map((m) => JSON.stringify(m)),
  // real methods with parameters the contract rejects
  fc
    .record({
      jsonrpc: fc.constant('2.0'),
      id: fc.nat(),
      method: fc.constantFrom(...METHOD_NAMES),
      params: badParams,
    })
    .filter(
      (m) => typeof m.params !== 'object' || m.params === null || Object.keys(m.params).length > 0,
    )
    .map((m) => JSON.stringify(m)),
  // broken envelopes
  fc
    .record({ jsonrpc: fc.constantFrom('1.0', 2, null), id: junkValue, method: junkValue })
    .map((m) => JSON.stringify(m)),
);

describe('API fuzzing', () => {
  it('random and malformed requests get structured errors, never crash, never change the configuration', async () => {
    const before = await api.call('target.config', {});
    await fc.assert(
      fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 20 }), async (batch) => {
        const lines = batch.map((l) => l.replace(/\n/g, ' '));
        const answers = await exchange(lines);
        for (const a of answers) {
          expect(a.jsonrpc).toBe('2.0');
          // read-only methods may succeed when junk params happen to be accepted; nothing else may
          if (a.result !== undefined) continue;
          expect(typeof a.error.code).toBe('number');
          expect(typeof a.error.message).toBe('string');
          expect(a.error.message.length).toBeGreaterThan(5);
        }
      }),
      { seed: 20261125, numRuns: 150 },
    );
    expect(await api.call('target.config', {})).toEqual(before);
    const status = await api.call('system.status', {});
    expect(status.pid).toBe(engine.pid);
    expect(engine.proc.exitCode).toBeNull();
  });
});
