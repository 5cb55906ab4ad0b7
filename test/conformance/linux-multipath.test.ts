/**
 * Native NVMe multipath of the real Linux kernel host against two BranchSAN targets
 * presenting one subsystem (same NQN, same namespace ids, disjoint CNTLID ranges,
 * one shared backend standing in for the mirror): the kernel merges the paths, sends
 * I/O to the optimized one, and fio write+verify passes through an ANA failover that
 * the harness triggers mid-write (FAILOVER-NOW).
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Target } from '../../engine/src/core/index.js';
import { IN_CAPSULE_DATA_SIZE } from '../../engine/src/protocol/tcp-limits.js';
import { MemoryBackend } from '../../engine/src/storage/memory.js';
import type { TcpTransport } from '../../engine/src/transport/tcp/index.js';
import { tempDir } from '../helpers/engine.js';
import { RUN_SH, freePort, linuxHostMissingReason } from '../helpers/linux-host.js';
import { serveOnLoopback } from '../helpers/target.js';
import { spawn } from 'node:child_process';

const missing = linuxHostMissingReason();
if (missing) console.warn(`SKIP Linux multipath conformance: ${missing}`);

const NQN = 'nqn.2026-11.io.branchsan:pair';
const NGUID = '5a1e0000000000000000000000000001';
const UUID = '5a1e0000-0000-4000-8000-000000000001';
const transports: TcpTransport[] = [];

async function node(cntlidMin: number, cntlidMax: number, backend: MemoryBackend, portId: number) {
  const t = new Target({ cntlidMin, cntlidMax, inCapsuleBytes: IN_CAPSULE_DATA_SIZE });
  t.addSubsystem({ nqn: NQN, serial: 'BSANPAIR0001', model: 'BranchSAN pair', allowAnyHost: true });
  t.addNamespace(NQN, { nsid: 1, backend, nguid: NGUID, uuid: UUID, anagrpid: 1 });
  const { transport, port } = await serveOnLoopback(t, { port: await freePort(), portId });
  transports.push(transport);
  return { target: t, port };
}

afterAll(async () => {
  for (const t of transports) await t.close();
});

describe.skipIf(missing !== null)('Linux native multipath against a BranchSAN pair', () => {
  it('merges both paths, prefers the optimized one, and verifies data through an ANA failover', async () => {
    const backend = new MemoryBackend({ sizeBytes: 64 << 20 });
    const a = await node(1, 0x7fff, backend, 1);
    const b = await node(0x8000, 0xffef, backend, 2);
    a.target.setAnaState(1, 'optimized');
    b.target.setAnaState(1, 'non-optimized');

    // The harness runs LH_FAILOVER_CMD mid-write; it touches a file this test watches.
    const dir = tempDir();
    const flag = path.join(dir, 'failover');
    let failedOver = false;
    const writes = (n: { target: Target }) => n.target.namespaceStats(NQN, 1)?.writeOps ?? 0;
    let atFailover = { a: 0, b: 0 };
    const poll = setInterval(() => {
      if (!failedOver && fs.existsSync(flag)) {
        failedOver = true;
        atFailover = { a: writes(a), b: writes(b) };
        a.target.setAnaState(1, 'inaccessible');
        b.target.setAnaState(1, 'optimized');
      }
    }, 50);
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn(RUN_SH, ['host-multi', String(a.port), String(b.port), NQN], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, LH_QUIET: '1', LH_FAILOVER_CMD: `touch ${flag}` },
      });
      let stdout = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', () => undefined);
      p.on('error', reject);
      p.on('exit', () => resolve(stdout));
    }).finally(() => clearInterval(poll));

    expect(failedOver, out).toBe(true);
    expect(out, out).toMatch(/^RESULT PASS/m);
    expect(out).toMatch(/^STEP multipath PASS/m);
    expect(out).toMatch(/^STEP fio-through-failover PASS/m);
    // before the failover the kernel saw A optimized and B non-optimized ...
    const paths = out.match(/^STEP paths PASS (.*)$/m)?.[1] ?? '';
    expect(paths).toMatch(/=live\/optimized\b/);
    expect(paths).toMatch(/=live\/non-optimized\b/);
    // ... so fio's writes went to A only; after the flip they went to B
    expect(atFailover.a, out).toBeGreaterThan(0);
    expect(atFailover.b, out).toBe(0);
    expect(writes(b), out).toBeGreaterThan(0);
  });
});
