/**
 * A connect that never completes (a firewall dropping SYNs, a target whose accept
 * queue is full): when the host library gives up on it, no socket may stay behind,
 * still trying to connect (and keeping a command-line process alive) for the two
 * minutes the kernel retries. A real listener that never accepts, its one-place queue
 * filled, makes the next connects hang in SYN-SENT on loopback.
 */
import { execFileSync } from 'node:child_process';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HostError, NvmeController } from '../../../engine/src/host/index.js';
import { unansweredPort } from './helpers.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** Sockets of this machine still connecting to the port. */
function connecting(port: number): number {
  const out = execFileSync('ss', ['-Htn', 'state', 'syn-sent', 'dst', `127.0.0.1:${port}`], {
    encoding: 'utf8',
  });
  return out.split('\n').filter(Boolean).length;
}

describe('a connect the host library gives up on', () => {
  it('leaves no socket behind still connecting', async () => {
    const port = await unansweredPort(cleanups);
    const err = await NvmeController.connect({
      host: '127.0.0.1',
      port,
      subnqn: 'nqn.2024-01.io.branchsan:stuck',
      connectTimeoutMs: 300,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HostError);
    expect((err as HostError).kind).toBe('connect');
    // before: "no ICResp within timeout", as if the connection had been accepted
    expect((err as HostError).message).toContain(
      `127.0.0.1:${port} queue 0: TCP connect timed out after 300 ms`,
    );
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
