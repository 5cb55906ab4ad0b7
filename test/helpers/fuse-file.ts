/**
 * A real FUSE mount holding one regular file, `vol.img`, kept in its server's memory:
 * what a volume on sshfs, an NFS-like network file system or any FUSE daemon looks like
 * to the engine. Reads and writes reach the server (no writeback cache, so a write
 * waits for its answer, as on a network file system). abort() kills the server, and
 * from then on the kernel fails every access to the mount with ENOTCONN, as it does
 * when such a daemon crashes.
 *
 * Needs root and /dev/fuse (see hungMountUnavailable in hung-mount.ts).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { startFuseServer } from './hung-mount.js';

export interface FuseFile {
  /** The file's path: `<mount>/vol.img`. */
  readonly path: string;
  /** Kills the server: every access to the mount fails with ENOTCONN from then on. */
  abort(): void;
  /** Kills the server and detaches the mount. */
  release(): void;
}

// The FUSE protocol (linux/fuse.h): each request a 40-byte header (length, opcode,
// unique, nodeid, ...) and the operation's struct; each reply a 16-byte header
// (length, -errno, unique) and the reply's struct. FORGET, BATCH_FORGET and INTERRUPT
// get no reply.
const SERVER = `
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const [at, sizeArg] = process.argv.slice(1);
const size = Number(sizeArg);
const data = Buffer.alloc(size);
const fd = fs.openSync('/dev/fuse', 'r+');
const r = spawnSync('mount', ['-t', 'fuse.branchsan-file', '-o',
  'fd=3,rootmode=40000,user_id=0,group_id=0,allow_other', 'branchsan-file', at],
  { stdio: ['ignore', 'inherit', 'inherit', fd] });
if (r.status !== 0) process.exit(2);
process.stdout.write('mounted\\n');
const FILE = 2;
const attr = (b, off, node) => {
  b.writeBigUInt64LE(BigInt(node), off);
  if (node === FILE) {
    b.writeBigUInt64LE(BigInt(size), off + 8);
    b.writeBigUInt64LE(BigInt(size / 512), off + 16);
  }
  b.writeUInt32LE(node === FILE ? 0o100600 : 0o40755, off + 60);
  b.writeUInt32LE(node === FILE ? 1 : 2, off + 64);
  b.writeUInt32LE(4096, off + 80);
};
function reply(op, req) {
  switch (op) {
    case 26: { // INIT: protocol 7.31, 64 KiB writes
      const b = Buffer.alloc(64);
      b.writeUInt32LE(7, 0); b.writeUInt32LE(31, 4);
      b.writeUInt16LE(16, 16); b.writeUInt16LE(12, 18); b.writeUInt32LE(65536, 20); b.writeUInt32LE(1, 24);
      return [0, b];
    }
    case 1: { // LOOKUP: only vol.img is there
      const name = req.subarray(40, req.indexOf(0, 40)).toString();
      if (name !== 'vol.img') return [-2, Buffer.alloc(0)];
      const b = Buffer.alloc(128);
      b.writeBigUInt64LE(BigInt(FILE), 0);
      b.writeBigUInt64LE(3600n, 16); b.writeBigUInt64LE(3600n, 24);
      attr(b, 40, FILE);
      return [0, b];
    }
    case 3: case 4: { // GETATTR, SETATTR (nothing to change: the size is fixed)
      const b = Buffer.alloc(104);
      b.writeBigUInt64LE(3600n, 0);
      attr(b, 16, Number(req.readBigUInt64LE(16)));
      return [0, b];
    }
    case 14: return [0, Buffer.alloc(16)]; // OPEN: fh 0, through the page cache
    case 15: { // READ
      const off = Number(req.readBigUInt64LE(48));
      const len = req.readUInt32LE(56);
      return [0, Buffer.from(data.subarray(Math.min(off, size), Math.min(off + len, size)))];
    }
    case 16: { // WRITE
      const off = Number(req.readBigUInt64LE(48));
      const len = req.readUInt32LE(56);
      if (off + len > size) return [-27, Buffer.alloc(0)]; // EFBIG
      req.copy(data, off, 80, 80 + len);
      const b = Buffer.alloc(8);
      b.writeUInt32LE(len, 0);
      return [0, b];
    }
    case 17: { // STATFS
      const b = Buffer.alloc(80);
      b.writeBigUInt64LE(1000n, 0); b.writeBigUInt64LE(600n, 8); b.writeBigUInt64LE(600n, 16);
      b.writeUInt32LE(4096, 40); b.writeUInt32LE(255, 44); b.writeUInt32LE(4096, 48);
      return [0, b];
    }
    case 18: case 20: case 25: case 34: // RELEASE, FSYNC, FLUSH, ACCESS
      return [0, Buffer.alloc(0)];
    default:
      return [-38, Buffer.alloc(0)]; // ENOSYS: FALLOCATE, STATX, xattrs and the rest
  }
}
const buf = Buffer.alloc(1 << 20);
for (;;) {
  let n;
  try { n = fs.readSync(fd, buf, 0, buf.length, null); } catch (err) {
    if (err.code === 'EINTR' || err.code === 'EAGAIN') continue;
    process.exit(0); // unmounted
  }
  const req = buf.subarray(0, n);
  const op = req.readUInt32LE(4);
  if (op === 2 || op === 42 || op === 36) continue;
  const [err, body] = reply(op, req);
  const out = Buffer.alloc(16 + body.length);
  out.writeUInt32LE(out.length, 0); out.writeInt32LE(err, 4);
  out.writeBigUInt64LE(req.readBigUInt64LE(8), 8); body.copy(out, 16);
  try { fs.writeSync(fd, out); } catch {} // the caller gave up (ENOENT)
}
`;

/** Mounts the file system on the directory `at` (made if missing). */
export async function fuseFile(at: string, sizeBytes: number): Promise<FuseFile> {
  const child = await startFuseServer(SERVER, at, [String(sizeBytes)]);
  let released = false;
  return {
    path: path.join(at, 'vol.img'),
    abort: () => child.kill('SIGKILL'),
    release() {
      if (released) return;
      released = true;
      child.kill('SIGKILL');
      spawnSync('umount', ['-l', at]);
    },
  };
}
