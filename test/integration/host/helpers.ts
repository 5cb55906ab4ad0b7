/**
 * Test helpers for the host library's integration tests: polling, a free TCP port, a port
 * whose connects never complete, and the Linux kernel reference target (nvmet in QEMU, /work/shared/linux-host, `reference`
 * mode) started and stopped around a test file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const LINUX_HOST_DIR = process.env.LINUX_HOST_DIR ?? '/work/shared/linux-host';
export const REF_NQN = 'nqn.2024-01.org.example:linux-host-ref';
const CACHE = process.env.LINUX_HOST_CACHE ?? path.join(os.homedir(), '.cache', 'linux-host');

/** Why the reference target cannot run here, or null when it can. */
export function referenceUnavailable(): string | null {
  if (!fs.existsSync(path.join(LINUX_HOST_DIR, 'run.sh'))) {
    return `${LINUX_HOST_DIR}/run.sh is missing`;
  }
  if (!fs.existsSync(path.join(CACHE, 'setup.done'))) {
    return `${CACHE}/setup.done is missing (run ${LINUX_HOST_DIR}/setup.sh once)`;
  }
  return null;
}

/** Polls `cond` every 5 ms; throws when it has not held within `ms`. */
export async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

/** A port that was free a moment ago (bind to 0, read it, release it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A port whose connects never complete, as behind a firewall that drops SYNs: a listener
 * that never accepts (perl-base is in every Debian), its one-place queue filled, makes
 * the next connects hang in SYN-SENT on loopback. What undoes it goes to `cleanups`.
 */
export async function unansweredPort(cleanups: (() => void)[]): Promise<number> {
  const p: ChildProcess = spawn('perl', [
    '-MIO::Socket::INET',
    '-e',
    '$s = IO::Socket::INET->new(Listen => 0, LocalAddr => "127.0.0.1", LocalPort => 0) or die; $| = 1; print $s->sockport, "\\n"; sleep 60',
  ]);
  cleanups.push(() => p.kill('SIGKILL'));
  const [line] = (await new Promise((resolve) =>
    p.stdout!.once('data', (d) => resolve([String(d)])),
  )) as [string];
  const port = Number(line.trim());
  // connect until one hangs: the listener's queues are full from then on
  for (let i = 0; i < 64; i++) {
    const filler = net.connect(port, '127.0.0.1').on('error', () => {});
    cleanups.push(() => filler.destroy());
    const done = await Promise.race([
      new Promise<boolean>((r) => filler.once('connect', () => r(true))),
      new Promise<boolean>((r) => setTimeout(() => r(false), 300)),
    ]);
    if (!done) {
      filler.destroy();
      return port;
    }
  }
  throw new Error(`every connect to 127.0.0.1:${port} completed: no port that drops SYNs here`);
}

export interface ReferenceTarget {
  readonly port: number;
  readonly nqn: string;
  /** stdout + console so far, for failure messages. */
  log(): string;
  stop(): Promise<void>;
}

/** Boot the reference VM and wait for its READY line (about 10-15 s under TCG). */
export async function startReference(timeoutMs = 120_000): Promise<ReferenceTarget> {
  const port = await freePort();
  const proc: ChildProcess = spawn(
    path.join(LINUX_HOST_DIR, 'run.sh'),
    ['reference', String(port)],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LH_QUIET: '0' },
    },
  );
  let out = '';
  let consoleText = '';
  proc.stderr!.on(
    'data',
    (d: Buffer) => (consoleText = (consoleText + d.toString()).slice(-20000)),
  );
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(
              `reference target: no READY within ${timeoutMs / 1000} s (it boots in ~15 s when idle):\n${out}\n${consoleText.slice(-4000)}`,
            ),
          ),
        timeoutMs,
      );
      proc.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (/^READY /m.test(out)) {
          clearTimeout(timer);
          resolve();
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(
          new Error(`reference target exited (${code}) before READY:\n${out}\n${consoleText}`),
        );
      });
    });
  } catch (e) {
    await stop();
    throw e;
  }
  return { port, nqn: REF_NQN, log: () => `${out}\n${consoleText}`, stop };
}

/** Starts a listener on a port of the caller's choosing. */
export type Listen = <T>(start: (port: number) => Promise<T>) => Promise<T>;

/**
 * onPortIn over a file's own range, taking the ports in turn across calls (a port in use
 * is skipped).
 */
export function portsInTurn(first: number, last: number): Listen {
  let next = first;
  return (start) =>
    onPortIn(next, last, (port) => {
      next = port + 1;
      return start(port);
    });
}

/**
 * `start(port)` on the first port from `first` to `last` it can listen on. A port of a
 * test's range may be taken for a while by another process's outgoing connection: the
 * kernel hands out the ports of its ephemeral range (32768-60999 here) to connects.
 */
export async function onPortIn<T>(
  first: number,
  last: number,
  start: (port: number) => Promise<T>,
): Promise<T> {
  for (let port = first; ; port++) {
    try {
      return await start(port);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port >= last) throw e;
    }
  }
}
