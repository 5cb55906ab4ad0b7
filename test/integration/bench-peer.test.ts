/**
 * The benchmark's handle on its peer process (bench/run.ts Peer), with a stand-in peer
 * that speaks the same protocol: once the peer has gone, every call fails with how it
 * ended, and no second peer is started in its place (its CPU time and target would be
 * another process's). The whole run's behaviour is in bench.test.ts.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PeerRequest } from '../../engine/src/bench/peer-protocol.js';
import { Peer } from '../../engine/src/bench/run.js';
import { tempDir } from '../helpers/engine.js';

/**
 * Answers 'cpu' (and says so on its stdout); exits with code 3 when asked; never
 * answers 'stop' (a peer whose target hangs in its close); logs its pid when it starts.
 */
const STAND_IN = `
import fs from 'node:fs';
fs.appendFileSync(process.env.BENCH_PEER_LOG, process.pid + '\\n');
process.on('message', (m) => {
  if (m.cmd === 'cpu') {
    process.stdout.write('peer stdout noise\\n');
    process.send({ ok: true, cpuUs: 7 });
  }
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
    await expect(
      peer.call({ cmd: 'start', volume: { kind: 'file', path: '/nonexistent' } }),
    ).rejects.toThrow(gone);
    await peer.stop(); // nothing left to stop: returns
    expect(started()).toEqual([pid]);
  });

  it('kills a peer that does not exit when asked to stop', async () => {
    fs.writeFileSync(log, '');
    const peer = new Peer(script, 200);
    expect(await peer.cpu()).toBe(7);
    const [pid] = started();
    await peer.stop();
    expect(() => process.kill(Number(pid), 0)).toThrow(/ESRCH/);
  });

  it("sends the peer's stdout to stderr: with --json, stdout is the report's alone", () => {
    fs.writeFileSync(log, '');
    const runJs = path.resolve('dist/engine/src/bench/run.js');
    const driver = path.join(dir, 'driver.mjs');
    fs.writeFileSync(
      driver,
      `import { Peer } from ${JSON.stringify(runJs)};
const peer = new Peer(${JSON.stringify(script)}, 200);
await peer.cpu();
await peer.stop();
`,
    );
    const r = spawnSync(process.execPath, [driver], { encoding: 'utf8', env: process.env });
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('peer stdout noise');
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
