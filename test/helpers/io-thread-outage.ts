/**
 * A file volume whose storage goes out the way it does for real: its I/O thread dies,
 * and the backend replaces its threads (file.ts replacePool), failing I/O as unavailable
 * meanwhile (ANA Transition to hosts, the volume's ANA group in change). New threads
 * take over at once after a first failure (blip) and 1 s after the next (out;
 * RESTART_BACKOFF_MS); outFor(ms) makes the wait as long as a test needs.
 */
import path from 'node:path';
import { openFileBackend, type FdBackend } from '../../engine/src/storage/file.js';
import { tempDir } from './engine.js';
import { until } from './wait.js';

/** The backend's private parts these outages reach into. */
interface Internals {
  pool: { lanes: { worker: { terminate(): Promise<number> } }[] };
  /** Replacements in a row: picks the back-off of the next one. */
  restarts: number;
  /** The back-off being waited out: resolving it starts the new threads now. */
  restartWait: { resolve: () => void } | null;
}

/** Index of RESTART_BACKOFF_MS whose wait (30 s) outlasts any outage a test makes. */
const LONG_BACKOFF = 3;

export async function fileVolume(cleanup: (() => Promise<void> | void)[], sizeBytes = 1 << 20) {
  const b = await openFileBackend({
    path: path.join(tempDir(), 'vol.img'),
    sizeBytes,
    create: true,
  });
  cleanup.push(() => b.close());
  const inner = b as unknown as Internals;
  const killThread = () => inner.pool.lanes[0]!.worker.terminate();
  /** The thread dies and is replaced at once. */
  const blip = async () => {
    await killThread();
    await until(() => !b.ioThreadsDown, 5000);
  };
  /** The thread dies; new ones take over after the backend's back-off (1 s after a blip). */
  const out = async () => {
    await killThread();
    await until(() => b.ioThreadsDown, 2000);
  };
  /**
   * The thread dies and new ones take over `ms` later (plus their start-up); resolves
   * once they serve, with how long the storage was out.
   */
  const outFor = async (ms: number): Promise<number> => {
    inner.restarts = LONG_BACKOFF;
    const started = Date.now();
    await killThread();
    await until(() => b.ioThreadsDown && inner.restartWait !== null, 2000);
    await new Promise((r) => setTimeout(r, Math.max(0, ms - (Date.now() - started))));
    inner.restartWait!.resolve();
    await until(() => !b.ioThreadsDown, 5000);
    return Date.now() - started;
  };
  return { b: b as FdBackend, blip, out, outFor };
}
