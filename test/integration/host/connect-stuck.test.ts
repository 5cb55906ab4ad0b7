/**
 * A connect that never completes (a firewall dropping SYNs, a target whose accept
 * queue is full): when the host library gives up on it, no socket may stay behind,
 * still trying to connect (and keeping a command-line process alive) for the two
 * minutes the kernel retries. A real listener that never accepts, its one-place queue
 * filled, makes the next connects hang in SYN-SENT on loopback.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HostError, NvmeController } from '../../../engine/src/host/index.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A listener that never accepts (perl-base is in every Debian), and its port. */
async function neverAccepts(): Promise<number> {
  const p: ChildProcess = spawn('perl', [
    '-MIO::Socket::INET',
    '-e',
    '$s = IO::Socket::INET->new(Listen => 0, LocalAddr => "127.0.0.1", LocalPort => 0) or die; $| = 1; print $s->sockport, "\\n"; sleep 60',
  ]);
  cleanups.push(() => p.kill('SIGKILL'));
  const [line] = (await new Promise((resolve) =>
    p.stdout!.once('data', (d) => resolve([String(d)])),
  )) as [string];
  return Number(line.trim());
}

/** Sockets of this machine still connecting to the port. */
function connecting(port: number): number {
  const out = execFileSync('ss', ['-Htn', 'state', 'syn-sent', 'dst', `127.0.0.1:${port}`], {
    encoding: 'utf8',
  });
  return out.split('\n').filter(Boolean).length;
}

describe('a connect the host library gives up on', () => {
  it('leaves no socket behind still connecting', async () => {
    const port = await neverAccepts();
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
        break;
      }
    }
    const err = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: 'nqn.2024-01.io.branchsan:stuck',
      connectTimeoutMs: 300,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).kind).toBe('connect');
    await new Promise((r) => setTimeout(r, 100));
    // before: its socket stayed in SYN-SENT, the kernel retrying for about two minutes
    expect(connecting(port)).toBe(0);
  });
});

describe('a port no connect can reach', () => {
  it('is refused with its value named, and leaves no timer behind', async () => {
    const made = vi.spyOn(globalThis, 'setInterval');
    const cleared = vi.spyOn(globalThis, 'clearInterval');
    cleanups.push(() => vi.restoreAllMocks());
    // 70000: a discovery log's TRSVCID, say; net.connect throws on it (and on NaN, -1)
    for (const port of [70000, 65536, -1, 0, 4420.5, NaN]) {
      const err = await NvmeController.connect({
        host: '127.0.0.1',
        port,
        subnqn: 'nqn.2024-01.io.branchsan:badport',
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(HostError);
      expect((err as HostError).kind).toBe('connect');
      expect((err as HostError).message).toContain(
        `port ${port} is not a TCP port (an integer 1..65535)`,
      );
    }
    // before: each attempt left its queue's timeout scan running, for ever
    const live = made.mock.results.filter((r) => !cleared.mock.calls.some((c) => c[0] === r.value));
    expect(live).toEqual([]);
  });
});
