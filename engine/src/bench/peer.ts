/**
 * The benchmark's other process: the engine's NVMe/TCP target serving the benchmark
 * file (or --device), and the bare-TCP floor server with its own handle on the same one
 * (for the floor with backend I/O). Driven over the fork() IPC channel by run.ts;
 * reports its own CPU time so the report can show target CPU per I/O.
 */
import fs from 'node:fs';
import type net from 'node:net';
import path from 'node:path';
import { TargetRuntime } from '../service/target-runtime.js';
import type { BlockBackend } from '../storage/backend.js';
import { openBackend } from '../storage/open.js';
import { createLogger } from '../util/log.js';
import { benchBackend, serveBenchFile } from './bench-volume.js';
import { startFloorServer } from './floor.js';
import type { PeerReply, PeerRequest } from './peer-protocol.js';

let rt: TargetRuntime | undefined;
let floor: net.Server | undefined;
/** The benchmark file opened as the target opens it, for the floor's I/O requests. */
let floorBackend: BlockBackend | undefined;

/** The run's scratch directories that hold the files this process was given (run.ts). */
const scratch = new Set<string>();

async function handle(msg: PeerRequest): Promise<PeerReply> {
  switch (msg.cmd) {
    case 'start': {
      const dir = path.dirname(msg.volume.path);
      if (msg.volume.kind === 'file' && path.basename(dir).startsWith('branchsan-bench-'))
        scratch.add(dir);
      await stop();
      rt = new TargetRuntime(createLogger({ level: 'error', sink: process.stderr }));
      await serveBenchFile(rt, msg.volume, msg.io);
      const port = await rt.addPort({ portId: 1, host: '127.0.0.1', port: 0 });
      floorBackend = await openBackend(benchBackend(msg.volume, msg.io));
      floor ??= await startFloorServer(() => floorBackend);
      return {
        ok: true,
        nvmePort: port.port,
        floorPort: (floor.address() as net.AddressInfo).port,
      };
    }
    case 'cpu': {
      const u = process.cpuUsage();
      return { ok: true, cpuUs: u.user + u.system };
    }
    case 'stop':
      await stop();
      floor?.close();
      setImmediate(() => process.exit(0));
      return { ok: true, cpuUs: 0 };
  }
}

async function stop(): Promise<void> {
  await rt?.close();
  rt = undefined;
  await floorBackend?.close();
  floorBackend = undefined;
}

// The benchmark process went away without 'stop' (killed outright, so its own clean-up
// never ran): do not live on as an orphan with a target listening, and remove its
// files, which in /dev/shm hold 64-128 MiB of RAM until someone does.
process.on('disconnect', () => {
  for (const dir of scratch) fs.rmSync(dir, { recursive: true, force: true });
  process.exit(0);
});

process.on('message', (msg: PeerRequest) => {
  handle(msg).then(
    (reply) => process.send!(reply),
    (err: Error) => process.send!({ ok: false, error: err.message }),
  );
});
