/**
 * The benchmark's handle on its peer process (bench/run.ts Peer), with a stand-in peer
 * that speaks the same protocol: once the peer has gone, every call fails with how it
 * ended, and no second peer is started in its place (its CPU time and target would be
 * another process's). The whole run's behaviour is in bench.test.ts.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PeerRequest } from '../../engine/src/bench/peer-protocol.js';
import { Peer } from '../../engine/src/bench/run.js';
import { tempDir } from '../helpers/engine.js';

/** Answers 'cpu'; exits with code 3 when asked; logs its pid when it starts. */
const STAND_IN = `
import fs from 'node:fs';
fs.appendFileSync(process.env.BENCH_PEER_LOG, process.pid + '\\n');
process.on('message', (m) => {
  if (m.cmd === 'cpu') process.send({ ok: true, cpuUs: 7 });
  if (m.cmd === 'exit3') process.exit(3);
});
process.on('disconnect', () => process.exit(0));
`;

describe('bench peer', () => {
  let dir: string;
  let script: string;
  let log: string;
  const started = () => fs.readFileSync(log, 'utf8').trim().split('\n').filter(Boolean);

  beforeAll(() => {
    dir = tempDir('branchsan-bench-peer-');
    script = path.join(dir, 'peer.mjs');
    fs.writeFileSync(script, STAND_IN);
    log = path.join(dir, 'pids');
    process.env.BENCH_PEER_LOG = log;
  });

  afterAll(() => {
    delete process.env.BENCH_PEER_LOG;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('fails every call after the peer was killed, and forks no other', async () => {
    fs.writeFileSync(log, '');
    const peer = new Peer(script);
    expect(await peer.cpu()).toBe(7);
    const [pid] = started();
    process.kill(Number(pid), 'SIGKILL');
    const gone = new RegExp(
      `^bench: the benchmark peer process \\(pid ${pid}\\) was killed by SIGKILL mid-run`,
    );
    // the first call may find the channel broken (EPIPE) before the exit is known
    await expect(peer.cpu()).rejects.toThrow(gone);
    await expect(peer.cpu()).rejects.toThrow(gone);
    await expect(peer.call({ cmd: 'start', path: '/nonexistent' })).rejects.toThrow(gone);
    await peer.stop(); // nothing left to stop: returns
    expect(started()).toEqual([pid]);
  });

  it('says the exit code of a peer that exits by itself, with what to do next', async () => {
    fs.writeFileSync(log, '');
    const peer = new Peer(script);
    const err = await peer.call({ cmd: 'exit3' } as unknown as PeerRequest).catch((e) => e);
    expect(err.message).toMatch(
      /the benchmark peer process \(pid \d+\) exited with code 3 mid-run/,
    );
    expect(err.hint).toMatch(/run the benchmark again/);
    await expect(peer.cpu()).rejects.toThrow(/exited with code 3/);
    expect(started()).toHaveLength(1);
  });
});
