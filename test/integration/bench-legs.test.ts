/**
 * A pattern's connections to the benchmark peer (bench/legs.ts withLegs), against the
 * engine's real NVMe/TCP target and floor server on loopback: every connection opened is
 * closed on every path, a failed connect among them included, so the target sees its
 * controller go at once rather than at the peer's stop.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFloorServer } from '../../engine/src/bench/floor.js';
import { withLegs } from '../../engine/src/bench/legs.js';
import type { Pattern } from '../../engine/src/bench/patterns.js';
import { connectRemote } from '../../engine/src/bench/remote.js';
import { serveBenchFile } from '../../engine/src/bench/bench-volume.js';
import { TargetRuntime } from '../../engine/src/service/target-runtime.js';
import type { BlockBackend } from '../../engine/src/storage/backend.js';
import { openBackend } from '../../engine/src/storage/open.js';
import { createLogger } from '../../engine/src/util/log.js';
import { tempDir } from '../helpers/engine.js';
import { until } from '../helpers/wait.js';

const NO_NS = 'nqn.2026-11.io.branchsan.test:bench-no-namespace';
const P: Pattern = { pattern: 'randread', bs: 4096, qd: 1, queues: 2 };

let dir: string;
let rt: TargetRuntime;
let floorServer: net.Server;
let floorBackend: BlockBackend;
let nvmePort: number;
let floorPort: number;
/** A port nothing listens on: its connects are refused. */
let refusing: number;

beforeAll(async () => {
  dir = tempDir('branchsan-bench-legs-');
  const file = path.join(dir, 'bench.img');
  fs.writeFileSync(file, Buffer.alloc(1 << 20));
  rt = new TargetRuntime(createLogger({ level: 'error', sink: process.stderr }));
  await serveBenchFile(rt, file); // as the benchmark's peer serves it
  rt.addSubsystem({ nqn: NO_NS, serial: 'N', model: 'N', allowAnyHost: true, hosts: [] });
  nvmePort = (await rt.addPort({ portId: 1, host: '127.0.0.1', port: 0 })).port!;
  floorBackend = await openBackend({ kind: 'file', path: file, exclusive: false });
  floorServer = await startFloorServer(() => floorBackend);
  floorPort = (floorServer.address() as net.AddressInfo).port;
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  refusing = (closed.address() as net.AddressInfo).port;
  await new Promise((r) => closed.close(r));
});

afterAll(async () => {
  floorServer?.close();
  await floorBackend?.close();
  await rt?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

const controllers = () => rt.target.listControllers().length;
const floorConnections = () =>
  new Promise<number>((resolve, reject) =>
    floorServer.getConnections((err, n) => (err ? reject(err) : resolve(n))),
  );
/** The target has no controller of the benchmark's left, within a second (KATO is minutes). */
const noneLeft = () => until(() => controllers() === 0, 1_000);

describe('bench: a pattern’s connections to its peer', () => {
  it('gives each leg its connection, and closes them all once the pattern is done', async () => {
    const seen = await withLegs(
      { nvmePort, floorPort },
      P,
      { floor: true, floorIo: true },
      async (legs) => {
        const read = (submit: typeof legs.remote) =>
          new Promise<void>((resolve, reject) =>
            submit(false, 0, 4096, 1, (err) => (err ? reject(err) : resolve())),
          );
        await read(legs.remote);
        await read(legs.floor!);
        await read(legs.floorIo!);
        return { controllers: controllers(), floor: await floorConnections() };
      },
    );
    expect(seen).toEqual({ controllers: 1, floor: 4 });
    await noneLeft();
    await until(async () => (await floorConnections()) === 0, 1_000);
  });

  // Before: run.ts connected the floor after the remote leg, outside the try whose
  // finally closed them, so a floor that could not connect left the NVMe/TCP controller
  // connected (its keep-alive going, its sockets holding the process) until the peer stopped.
  it('closes the NVMe/TCP controller when a floor connection is refused after it', async () => {
    let used = false;
    const run = withLegs(
      { nvmePort, floorPort: refusing },
      P,
      { floor: true, floorIo: false },
      () => {
        used = true;
        return Promise.resolve();
      },
    );
    await expect(run).rejects.toThrow(/ECONNREFUSED/);
    expect(used).toBe(false);
    await noneLeft();
  });

  it('closes every connection when a leg fails mid-pattern', async () => {
    const run = withLegs({ nvmePort, floorPort }, P, { floor: true, floorIo: true }, () =>
      Promise.reject(new Error('the floor server answered tag 9, which is not in flight')),
    );
    await expect(run).rejects.toThrow(/tag 9/);
    await noneLeft();
    await until(async () => (await floorConnections()) === 0, 1_000);
  });

  // Before: a controller whose namespace 1 could not be had stayed connected.
  it('closes the controller it connected when namespace 1 cannot be had', async () => {
    await expect(connectRemote(nvmePort, NO_NS, 1)).rejects.toThrow();
    await noneLeft();
  });
});
