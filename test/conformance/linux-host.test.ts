/**
 * Conformance with the real Linux kernel NVMe/TCP host (Debian 12's 6.1 kernel in
 * QEMU): discovery, connect, identify, fio write+verify with mixed block sizes
 * (in-capsule and R2T), a read-only verify pass, flush and disconnect, against
 * `branchsan export` — with a host allow-list, with digests, with 2 I/O queues, without
 * SQ flow control, and with every read on the storage I/O thread.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { BIN, tempDir } from '../helpers/engine.js';
import { freePort, linuxHostMissingReason, runLinuxHost } from '../helpers/linux-host.js';

const missing = linuxHostMissingReason();
if (missing) console.warn(`SKIP Linux host conformance: ${missing}`);

const NQN = 'nqn.2026-11.io.branchsan:conformance';
const HOSTNQN = 'nqn.2014-08.org.nvmexpress:uuid:5b0c6f3e-8a51-4cc4-9f2e-0c5a3e6b7d21';

let target: ChildProcess | undefined;

function startExport(port: number, extra: string[]): Promise<string> {
  const file = path.join(tempDir(), 'vol.img');
  const p = spawn(
    process.execPath,
    [BIN, 'export', file, '--create-size', '64M', '--port', String(port), '--nqn', NQN, ...extra],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  target = p;
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`export did not start:\n${out}`)), 20_000);
    const on = (d: Buffer) => {
      out += d.toString();
      if (out.includes('nvme connect')) {
        clearTimeout(timer);
        resolve(out);
      }
    };
    p.stdout!.on('data', on);
    p.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    p.once('exit', (code) => reject(new Error(`export exited with ${code}:\n${out}`)));
  });
}

afterEach(async () => {
  if (target && target.exitCode === null) {
    const gone = new Promise((r) => target!.once('exit', r));
    target.kill('SIGTERM');
    await gone;
  }
});

const variants: [name: string, exportArgs: string[], env: Record<string, string>][] = [
  ['plain, host on the allow-list', ['--allow-host', HOSTNQN], { LH_HOSTNQN: HOSTNQN }],
  ['header and data digests', [], { LH_CONNECT_OPTS: '--hdr-digest --data-digest' }],
  ['2 I/O queues of depth 32', [], { LH_CONNECT_OPTS: '--nr-io-queues=2 --queue-size=32' }],
  // reads then end with a C2HData carrying SUCCESS instead of a CapsuleResp
  ['SQ flow control disabled', [], { LH_CONNECT_OPTS: '--disable-sqflow' }],
  // every read on the storage I/O thread too, cached or not (the default serves those on
  // the event loop); with the polled completion of a lone one
  ['reads on the I/O thread (--no-inline-reads)', ['--no-inline-reads'], {}],
];

describe.skipIf(missing !== null)('Linux kernel host against branchsan export', () => {
  it.each(variants)('%s', async (_name, exportArgs, env) => {
    const port = await freePort();
    await startExport(port, exportArgs);
    const r = await runLinuxHost(port, NQN, env);
    const failed = r.steps.filter((s) => s.result === 'FAIL');
    expect(failed, r.stdout).toEqual([]);
    expect(r.result, r.stdout).toMatch(/^RESULT PASS/);
    for (const step of [
      'discover',
      'connect',
      'id-ctrl',
      'id-ns',
      'fio-write-verify',
      'fio-read-verify',
      'flush',
      'disconnect',
    ]) {
      expect(r.steps.find((s) => s.name === step)?.result, `${step}\n${r.stdout}`).toBe('PASS');
    }
  });

  it('a host that is not on the allow-list is refused at connect', async () => {
    const port = await freePort();
    await startExport(port, [
      '--allow-host',
      'nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000001',
    ]);
    const r = await runLinuxHost(port, NQN, {
      LH_HOSTNQN: HOSTNQN,
      LH_SKIP_DISCOVER: '1',
      LH_STEP_TIMEOUT: '30',
    });
    expect(r.steps.find((s) => s.name === 'connect')?.result, r.stdout).toBe('FAIL');
    expect(r.stdout).toMatch(/KMSG.*(is not allowed|invalid host)/i);
  });
});
