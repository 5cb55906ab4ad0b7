/**
 * A mount whose file system never answers, as a hung NFS server or FUSE daemon looks to
 * the engine: stat, realpath and open at or below it block until it is released. It is
 * a real FUSE mount whose server (a child process holding /dev/fuse) never replies; the
 * kernel fails every waiter with ENOTCONN once that process is gone. The child leaves by
 * itself after holdMs, so a test process that the mount blocked outright (a synchronous
 * stat on its own thread) is freed all the same and fails instead of hanging.
 *
 * Told to, the server answers (answer()): then the mount works, a file system 40 % full
 * in which every name is an empty directory, until hold() makes it hang again (the
 * requests of that time wait, as on a stuck daemon, and are answered on answer()).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { once } from 'node:events';

export interface HungMount {
  /** Ends the FUSE server: waiters, and every access after, fail with ENOTCONN. */
  abort(): void;
  /** Ends the server and detaches the mount. */
  release(): void;
  /** Whether the server is still there (it has not left, by itself or told to). */
  holding(): boolean;
  /** From now on the server answers: waiting calls return, new ones are served. */
  answer(): void;
  /** The server stops answering again (for holdMs at most, then it leaves). */
  hold(): void;
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

// Replies are the FUSE protocol's (linux/fuse.h): a 16-byte header (length, error,
// unique) and the operation's reply struct; FORGET and INTERRUPT get none.
const SERVER = `
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const [at, holdMs, holdFile] = process.argv.slice(1);
const fd = fs.openSync('/dev/fuse', 'r+');
const r = spawnSync('mount', ['-t', 'fuse.branchsan-hung', '-o',
  'fd=3,rootmode=40000,user_id=0,group_id=0', 'branchsan-hung', at],
  { stdio: ['ignore', 'inherit', 'inherit', fd] });
if (r.status !== 0) process.exit(2);
process.stdout.write('mounted\\n');
const leave = setTimeout(() => process.exit(0), Number(holdMs)); // never answer; leave after holdMs
process.stdin.on('end', () => process.exit(0)).resume();
const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const attr = (b, at, ino) => {
  b.writeBigUInt64LE(BigInt(ino), at);
  b.writeUInt32LE(0o40755, at + 60);
  b.writeUInt32LE(2, at + 64);
  b.writeUInt32LE(4096, at + 80);
};
function reply(op, req) {
  if (op === 26) { // INIT: protocol 7.31
    const b = Buffer.alloc(64);
    b.writeUInt32LE(7, 0); b.writeUInt32LE(31, 4);
    b.writeUInt16LE(16, 16); b.writeUInt16LE(12, 18); b.writeUInt32LE(65536, 20); b.writeUInt32LE(1, 24);
    return [0, b];
  }
  if (op === 17) { // STATFS: 1000 blocks of 4 KiB, 600 free, 600 available
    const b = Buffer.alloc(80);
    b.writeBigUInt64LE(1000n, 0); b.writeBigUInt64LE(600n, 8); b.writeBigUInt64LE(600n, 16);
    b.writeUInt32LE(4096, 40); b.writeUInt32LE(255, 44); b.writeUInt32LE(4096, 48);
    return [0, b];
  }
  if (op === 3) { // GETATTR
    const b = Buffer.alloc(104);
    attr(b, 16, Number(req.readBigUInt64LE(16)));
    return [0, b];
  }
  if (op === 1) { // LOOKUP: every name is a directory, node 2 and on
    const name = req.subarray(40, req.indexOf(0, 40)).toString();
    names.set(name, names.get(name) ?? names.size + 2);
    const b = Buffer.alloc(128);
    b.writeBigUInt64LE(BigInt(names.get(name)), 0);
    b.writeBigUInt64LE(3600n, 16);
    attr(b, 40, names.get(name));
    return [0, b];
  }
  return [-38, Buffer.alloc(0)]; // ENOSYS: STATX and the rest
}
const names = new Map();
function serve() {
  clearTimeout(leave);
  const buf = Buffer.alloc(1 << 20);
  for (;;) {
    let n;
    try { n = fs.readSync(fd, buf, 0, buf.length, null); } catch { process.exit(0); } // unmounted
    const req = Buffer.from(buf.subarray(0, n));
    const op = req.readUInt32LE(4);
    if (op === 2 || op === 42 || op === 36) continue;
    const since = Date.now();
    while (fs.existsSync(holdFile)) {
      if (Date.now() - since > Number(holdMs)) process.exit(0);
      sleep(20);
    }
    const [err, body] = reply(op, req);
    const out = Buffer.alloc(16 + body.length);
    out.writeUInt32LE(out.length, 0); out.writeInt32LE(err, 4);
    out.writeBigUInt64LE(req.readBigUInt64LE(8), 8); body.copy(out, 16);
    try { fs.writeSync(fd, out); } catch {} // the caller gave up (ENOENT)
  }
}
process.stdin.once('data', serve);
`;

/**
 * Runs `server` (a FUSE server's source, whose first argument is the mount point) in a
 * child process and waits until it says 'mounted' on `at`; its stdin stays a pipe.
 */
export async function startFuseServer(
  server: string,
  at: string,
  args: string[],
): Promise<ChildProcess> {
  fs.mkdirSync(at, { recursive: true });
  const child = spawn(process.execPath, ['-e', server, at, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const [first] = (await Promise.race([
    once(child.stdout!, 'data'),
    once(child, 'exit').then(([code]) => {
      throw new Error(`could not mount a FUSE file system on ${at} (exit ${String(code)})`);
    }),
  ])) as [Buffer];
  if (!first.toString().startsWith('mounted')) throw new Error(`unexpected: ${first.toString()}`);
  return child;
}

/** Mounts a hung file system on the directory `at` (made if missing). */
export async function hungMount(at: string, holdMs = 20_000): Promise<HungMount> {
  fs.mkdirSync(at, { recursive: true }); // and its parent, for the hold file
  const holdFile = `${at}.hold`;
  fs.writeFileSync(holdFile, '');
  const child = await startFuseServer(SERVER, at, [String(holdMs), holdFile]);
  let released = false;
  let serving = false;
  return {
    answer() {
      fs.rmSync(holdFile, { force: true });
      if (!serving) child.stdin!.write('answer\n');
      serving = true;
    },
    hold: () => fs.writeFileSync(holdFile, ''),
    abort: () => child.kill('SIGKILL'),
    holding: () => child.exitCode === null && child.signalCode === null,
    release() {
      if (released) return;
      released = true;
      child.kill('SIGKILL');
      spawnSync('umount', ['-l', at]);
      fs.rmSync(holdFile, { force: true });
    },
  };
}
