import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ENGINE_MALLOC_ENV,
  LINUX_SERVICE_SOCKET,
  parseReadyLine,
  planEngineStart,
  resolveEngineTarget,
  spawnEngine,
  WINDOWS_SERVICE_PIPE,
  type StartPlan,
} from '../../../electron/src/engine-launcher.js';

const base = {
  env: {},
  packaged: false,
  platform: 'linux' as const,
  userData: '/home/ann/.config/BranchSAN',
};
const planCtx = {
  platform: 'linux' as NodeJS.Platform,
  appRoot: '/src/branchsan',
  nodePath: '/usr/bin/node',
  env: { PATH: '/usr/bin', UNSET: undefined },
};

describe('resolveEngineTarget', () => {
  it('uses the socket it is given (scripts/start.js, an operator)', () => {
    expect(
      resolveEngineTarget({ ...base, env: { BRANCHSAN_SOCKET: '/tmp/x/engine.sock' } }),
    ).toEqual({
      mode: 'external',
      socketPath: '/tmp/x/engine.sock',
    });
  });
  it('runs a per-user engine in development', () => {
    expect(resolveEngineTarget(base)).toEqual({
      mode: 'dev',
      dataDir: '/home/ann/.config/BranchSAN/engine',
      socketPath: '/home/ann/.config/BranchSAN/engine/engine.sock',
    });
  });
  it('talks to the system service when packaged', () => {
    expect(resolveEngineTarget({ ...base, packaged: true })).toEqual({
      mode: 'service',
      socketPath: LINUX_SERVICE_SOCKET,
    });
    expect(resolveEngineTarget({ ...base, packaged: true, platform: 'win32' }).socketPath).toBe(
      WINDOWS_SERVICE_PIPE,
    );
  });
});

describe('planEngineStart', () => {
  it('spawns node bin/branchsan.js serve --data <userData>/engine in development, with the allocator settings', () => {
    const plan = planEngineStart(resolveEngineTarget(base), planCtx);
    expect(plan).toEqual({
      kind: 'spawn',
      command: '/usr/bin/node',
      args: [
        '/src/branchsan/bin/branchsan.js',
        'serve',
        '--data',
        '/home/ann/.config/BranchSAN/engine',
      ],
      cwd: '/src/branchsan',
      env: { PATH: '/usr/bin', ...ENGINE_MALLOC_ENV },
    });
  });
  it('asks polkit to start the systemd unit on Linux', () => {
    const plan = planEngineStart({ mode: 'service', socketPath: LINUX_SERVICE_SOCKET }, planCtx);
    expect(plan).toEqual({
      kind: 'elevated',
      command: 'pkexec',
      args: ['systemctl', 'start', 'branchsan.service'],
    });
  });
  it('asks UAC to sc start the service on Windows', () => {
    const plan = planEngineStart(
      { mode: 'service', socketPath: WINDOWS_SERVICE_PIPE },
      { ...planCtx, platform: 'win32' },
    );
    expect(plan.kind).toBe('elevated');
    expect((plan as Extract<StartPlan, { kind: 'elevated' }>).args.join(' ')).toMatch(
      /sc\.exe -ArgumentList 'start','BranchSAN' -Verb RunAs/,
    );
  });
  it('starts nothing it does not own, or where it cannot', () => {
    expect(planEngineStart({ mode: 'external', socketPath: '/s' }, planCtx).kind).toBe('none');
    expect(
      planEngineStart({ mode: 'service', socketPath: '/s' }, { ...planCtx, platform: 'darwin' }),
    ).toEqual({
      kind: 'none',
      reason: 'starting the engine service is not supported on darwin',
    });
  });
});

describe('parseReadyLine', () => {
  it('reads the socket and console URL from the structured ready line', () => {
    const line = JSON.stringify({
      level: 'info',
      msg: 'engine ready',
      socket: '/d/engine.sock',
      consoleUrl: 'http://127.0.0.1:8400/',
    });
    expect(parseReadyLine(line)).toEqual({
      socket: '/d/engine.sock',
      consoleUrl: 'http://127.0.0.1:8400/',
    });
    expect(parseReadyLine(JSON.stringify({ msg: 'engine ready', socket: '/d/s' }))).toEqual({
      socket: '/d/s',
    });
  });
  it('ignores everything else', () => {
    for (const line of [
      'engine ready',
      '{"msg":"engine ready"}',
      '{"msg":"starting","socket":"/x"}',
      '{"msg":"engine ready","socket":1}',
      '{broken engine ready',
    ])
      expect(parseReadyLine(line)).toBeUndefined();
  });
});

describe('spawnEngine', () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });
  function script(body: string): Extract<StartPlan, { kind: 'spawn' }> {
    dir = mkdtempSync(join(tmpdir(), 'bsan-spawn-'));
    const file = join(dir, 'engine.mjs');
    writeFileSync(file, body);
    return {
      kind: 'spawn',
      command: process.execPath,
      args: [file],
      cwd: dir,
      env: { ...ENGINE_MALLOC_ENV },
    };
  }

  it('resolves on the ready line, after other output, and passes the allocator settings', async () => {
    const plan = script(`
      console.log('{"msg":"opening database"}');
      setTimeout(() => console.log(JSON.stringify({ msg: 'engine ready', socket: process.env.MALLOC_TOP_PAD_, consoleUrl: 'http://x/' })), 50);
      setInterval(() => {}, 1000);
    `);
    const engine = await spawnEngine(plan, 5000);
    expect(engine.socket).toBe('67108864');
    expect(engine.consoleUrl).toBe('http://x/');
    const exited = new Promise((r) => engine.child.once('exit', r));
    engine.child.kill('SIGTERM');
    await exited;
  });

  it('rejects with the stderr tail when the engine exits first', async () => {
    const plan = script(
      `console.error('another engine already serves this data directory'); process.exit(3);`,
    );
    await expect(spawnEngine(plan, 5000)).rejects.toThrow(
      /exited \(code 3\)\n.*another engine already serves/,
    );
  });

  it('gives up and kills an engine that never becomes ready', async () => {
    const plan = script(`setInterval(() => {}, 1000);`);
    await expect(spawnEngine(plan, 300)).rejects.toThrow(/no "engine ready" line within 0.3 s/);
  });
});
