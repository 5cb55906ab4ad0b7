/**
 * TargetRuntime on real files: a namespace add that creates its file and fails leaves
 * no file behind. Before, an open that outlived its wait (a slow network mount, a busy
 * machine) was closed when it ended at last but its new file stayed: the same add, tried
 * again as the error suggests, was then refused with "already exists", and nothing said
 * where the stray file came from.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TargetRuntime } from '../../../engine/src/service/target-runtime.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { tempDir } from '../../helpers/engine.js';
import { until } from '../../helpers/wait.js';

const NQN = 'nqn.2026-01.com.example:runtime';
const quiet = createLogger({ sink: { write: () => undefined } });
const runtimes: TargetRuntime[] = [];

afterEach(async () => {
  for (const rt of runtimes.splice(0)) await rt.close(0);
});

function runtime(openWaitMs?: number, log = quiet): TargetRuntime {
  const rt = new TargetRuntime(log, {}, openWaitMs);
  runtimes.push(rt);
  rt.addSubsystem({ nqn: NQN, serial: 'S1', model: 'M', allowAnyHost: true, hosts: [] });
  return rt;
}

const createSpec = (file: string) => ({
  nsid: 1,
  backend: {
    kind: 'file' as const,
    path: file,
    sizeBytes: 1 << 20,
    create: true,
    blockSize: 512 as const,
  },
  nguid: '00112233445566778899aabbccddeeff',
  uuid: '00112233-4455-4677-8899-aabbccddeeff',
  anaGroup: 1,
});

describe('TargetRuntime: a created file of an add that failed', () => {
  it('is removed once an open that outlived its wait ends, so the same add works again', async () => {
    const file = path.join(tempDir('branchsan-runtime-'), 'vol.img');
    let logged = '';
    const log = createLogger({ level: 'info', sink: { write: (l: string) => (logged += l) } });
    // 1 ms: every open is late (creating the file and starting its threads take longer)
    const err = (await runtime(1, log)
      .addNamespace(NQN, createSpec(file))
      .catch((e: unknown) => e)) as Error;
    expect(err.message).toMatch(/did not open within/);
    // the late open has ended (its backend closed) once the log says what became of its file
    await until(() => /the file of a namespace that was not added/.test(logged), 10_000);
    expect(logged).toMatch(/"msg":"removed the file of a namespace that was not added"/);
    expect(fs.existsSync(file)).toBe(false);
    // the add tried again (with the usual wait) creates the file, not "already exists"
    const backend = await runtime().addNamespace(NQN, createSpec(file));
    expect(backend.sizeBytes).toBe(1 << 20);
    expect(fs.statSync(file).size).toBe(1 << 20);
  });
});
