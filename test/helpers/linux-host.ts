/**
 * Drives ../shared/linux-host (the Linux kernel NVMe/TCP stack in QEMU). Absent
 * harness → callers skip with an explicit message; a harness that is present but not
 * set up is an error (CI runs scripts/setup.sh, which sets it up).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from './engine.js';

export const LINUX_HOST_DIR = path.resolve(REPO_ROOT, '..', 'shared', 'linux-host');
export const RUN_SH = path.join(LINUX_HOST_DIR, 'run.sh');

export function linuxHostMissingReason(): string | null {
  if (!fs.existsSync(RUN_SH)) return `no Linux host harness at ${LINUX_HOST_DIR}`;
  if (!fs.existsSync('/dev/kvm') && !fs.existsSync('/usr/bin/qemu-system-x86_64')) {
    return 'qemu-system-x86_64 is not installed (run scripts/setup.sh)';
  }
  const cache = process.env.LINUX_HOST_CACHE ?? path.join(os.homedir(), '.cache', 'linux-host');
  if (!fs.existsSync(path.join(cache, 'setup.done')))
    return `linux-host is not set up (run ${LINUX_HOST_DIR}/setup.sh)`;
  return null;
}

export interface LinuxHostResult {
  code: number | null;
  stdout: string;
  steps: { name: string; result: string; detail: string }[];
  result: string;
}

/** Runs `run.sh host PORT [NQN]` to the end and parses its STEP and RESULT lines. */
export function runLinuxHost(
  port: number,
  nqn: string | undefined,
  env: Record<string, string> = {},
): Promise<LinuxHostResult> {
  return new Promise((resolve, reject) => {
    const args = ['host', String(port), ...(nqn ? [nqn] : [])];
    const p = spawn(RUN_SH, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LH_QUIET: '1', ...env },
    });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('exit', (code) => {
      const steps = [...stdout.matchAll(/^STEP (\S+) (PASS|FAIL|SKIP) ?(.*)$/gm)].map((m) => ({
        name: m[1]!,
        result: m[2]!,
        detail: m[3]!,
      }));
      const result =
        stdout.match(/^RESULT .*$/m)?.[0] ?? `RESULT missing (exit ${code}) ${stderr.slice(-2000)}`;
      resolve({
        code,
        stdout: stdout + (code ? `\n--- stderr ---\n${stderr.slice(-4000)}` : ''),
        steps,
        result,
      });
    });
  });
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}
