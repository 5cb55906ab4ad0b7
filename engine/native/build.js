#!/usr/bin/env node
// Builds engine/native/build/branchsan_native.node, the tiny N-API addon the
// storage backends use for fallocate (punch hole / zero range), BLKDISCARD,
// BLKZEROOUT, BLKGETSIZE64, preadv2(RWF_NOWAIT), flock and OFD locks. Node's fs module has
// none of these.
//
// Why not node-gyp: the addon is one C file with no dependencies, and node-gyp
// needs Python and (without --nodedir) downloads headers from the internet. A
// direct compiler call needs only the headers every Node install ships in
// <prefix>/include/node.
//
// The addon is optional: without it the backends still work (deallocate and
// write-zeroes write zero blocks, and caps say so; files are served unlocked).
// So by default a missing compiler or header set is a warning, not a failed
// build; set BRANCHSAN_NATIVE_REQUIRED=1 (appliance builds) to make it an error.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, 'src', 'branchsan_native.c');
const outDir = join(here, 'build');
const output = join(outDir, 'branchsan_native.node');
const required = process.env.BRANCHSAN_NATIVE_REQUIRED === '1';

function fail(message) {
  if (required) {
    console.error(`native addon: ${message}`);
    process.exit(1);
  }
  console.warn(`native addon skipped: ${message}; storage runs without hole punching/discard.`);
  process.exit(0);
}

if (process.platform !== 'linux') fail(`the addon is Linux-only (this is ${process.platform})`);

const headerCandidates = [
  process.env.NODE_HEADERS_DIR,
  join(dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
].filter(Boolean);
const headers = headerCandidates.find((dir) => existsSync(join(dir, 'node_api.h')));
if (!headers)
  fail(`node_api.h not found (looked in ${headerCandidates.join(', ')}); set NODE_HEADERS_DIR`);

mkdirSync(outDir, { recursive: true });
// Compile to a temporary name and rename, so a running engine never loads a
// half-written file.
const tmp = `${output}.${process.pid}.tmp`;
const cc = process.env.CC || 'cc';
const args = ['-O2', '-std=gnu11', '-Wall', '-Wextra', '-Wno-unused-parameter', '-fPIC', '-shared'];
args.push('-fvisibility=hidden', `-I${headers}`, source, '-o', tmp);
try {
  // stdout stays empty: `npm run -s bench` prints only the report's JSON there.
  execFileSync(cc, args, { stdio: ['ignore', process.stderr, 'inherit'] });
  renameSync(tmp, output);
} catch (err) {
  rmSync(tmp, { force: true });
  fail(`${cc} failed (${err.message})`);
}
console.error(`native addon built: ${output}`);
