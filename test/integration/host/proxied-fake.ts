/**
 * A FakeTarget behind a PausableProxy (resume() drops the connections, pause() refuses
 * new ones), and a controller connected through them: the rig of the tests of commands
 * held, timed out or never sent while a connection is lost. Registered with the
 * multipath rig's cleanup (runCleanup in afterEach).
 */
import { performance } from 'node:perf_hooks';
import {
  NvmeController,
  NvmeRequest,
  fillRw,
  type ControllerOptions,
  type HostError,
} from '../../../engine/src/host/index.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';
import { FakeTarget, type FakeTargetOptions } from './fake-target.js';
import type { Listen } from './helpers.js';
import { PausableProxy, cleanup } from './multipath-rig.js';

export async function proxiedFake(
  t: FakeTargetOptions = {},
  c: Partial<ControllerOptions> = {},
  /** Where the target and proxy listen (default: any free port). */
  listen: Listen = (start) => start(0),
) {
  const target = new FakeTarget(t);
  await listen((port) => target.start(port));
  cleanup.push(() => target.stop());
  const proxy = await listen((port) => PausableProxy.start(target.port, port));
  const ctrl = await NvmeController.connect({
    host: '127.0.0.1',
    port: proxy.port,
    subnqn: 'nqn.fake',
    ...c,
  });
  // First (cleanups run in reverse): held commands fail instead of holding close().
  cleanup.push(
    () => ctrl.close(0),
    async () => target.dropAll(),
  );
  return { target, proxy, ctrl, ns: await ctrl.namespace(1) };
}

/** How `p` ended, and when (ms after `since`). */
export async function outcome(p: Promise<unknown>, since: number) {
  const error = await p.then(
    () => null,
    (e: Error) => e,
  );
  return { error: error as HostError | null, ms: performance.now() - since };
}

/**
 * A one-block read or write submitted with the callback API and a timeout of its own
 * (-1: the queue's); resolves once it ended, with how long after submission.
 */
export function submitOne(
  ctrl: NvmeController,
  op: typeof IO.READ | typeof IO.WRITE,
  slba: number,
  timeoutMs = -1,
): Promise<{ req: NvmeRequest; ms: number }> {
  const req = fillRw(new NvmeRequest(), op, 1, slba, 1);
  if (op === IO.WRITE) req.dataOut = Buffer.alloc(512, slba);
  else req.readLength = 512;
  req.timeoutMs = timeoutMs;
  const started = performance.now();
  const done = new Promise<{ req: NvmeRequest; ms: number }>((resolve) => {
    req.onDone = (r) => resolve({ req: r, ms: performance.now() - started });
  });
  ctrl.submitIo(req);
  return done;
}
