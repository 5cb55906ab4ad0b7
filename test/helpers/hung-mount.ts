/**
 * A mount whose file system never answers, as a hung NFS server or FUSE daemon looks to
 * the engine: stat, realpath and open at or below it block until it is released. It is
 * a real FUSE mount whose server (a child process holding /dev/fuse) never replies; the
 * kernel fails every waiter with ENOTCONN once that process is gone. The child leaves by
 * itself after holdMs, so a test process that the mount blocked outright (a synchronous
 * stat on its own thread) is freed all the same and fails instead of hanging.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { once } from 'node:events';

export interface HungMount {
  /** Ends the FUSE server: waiters, and every access after, fail with ENOTCONN. */
  abort(): void;
  /** Ends the server and detaches the mount. */
  release(): void;
  /** Whether the mount still hangs (its server has not left, by itself or told to). */
  holding(): boolean;
}

/** Why this machine cannot make one, or null (root and /dev/fuse are needed). */
export function hungMountUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'a FUSE mount needs root';
  try {
    fs.accessSync('/dev/fuse', fs.constants.R_OK | fs.constants.W_OK);
  } catch {
    return 'no usable /dev/fuse on this machine';
  }
  return null;
}

const SERVER = `
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const [at, holdMs] = process.argv.slice(1);
const fd = fs.openSync('/dev/fuse', 'r+');
const r = spawnSync('mount', ['-t', 'fuse.branchsan-hung', '-o',
  'fd=3,rootmode=40000,user_id=0,group_id=0', 'branchsan-hung', at],
  { stdio: ['ignore', 'inherit', 'inherit', fd] });
if (r.status !== 0) process.exit(2);
process.stdout.write('mounted\\n');
setTimeout(() => process.exit(0), Number(holdMs)); // never answer; leave after holdMs
process.stdin.on('end', () => process.exit(0)).resume();
`;

/** Mounts a hung file system on the directory `at` (made if missing). */
export async function hungMount(at: string, holdMs = 20_000): Promise<HungMount> {
  fs.mkdirSync(at, { recursive: true });
  const child = spawn(process.execPath, ['-e', SERVER, at, String(holdMs)], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const [first] = (await Promise.race([
    once(child.stdout!, 'data'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`could not mount a FUSE file system on ${at} (exit ${String(code)})`);
    }),
  ])) as [Buffer];
  if (!first.toString().startsWith('mounted')) throw new Error(`unexpected: ${first.toString()}`);
  let released = false;
  return {
    abort: () => child.kill('SIGKILL'),
    holding: () => child.exitCode === null && child.signalCode === null,
    release() {
      if (released) return;
      released = true;
      child.kill('SIGKILL');
      spawnSync('umount', ['-l', at]);
    },
  };
}
