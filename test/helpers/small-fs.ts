/**
 * A real file system that tests can fill to the last byte: a small tmpfs mounted
 * under the test directory (root only; on Linux).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { tempDir } from './engine.js';

/** Mounting needs root. */
export const canMountTmpfs = process.getuid?.() === 0 && process.platform === 'linux';

const mounts: string[] = [];

/** A fresh tmpfs of `size` (mount's syntax: 2m) under the test directory. */
export function smallFs(prefix = 'branchsan-smallfs-', size = '2m'): string {
  const dir = tempDir(prefix);
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

/** Fills the file system holding `dir` to the last byte, then frees `leaveKiB`; returns the filler. */
export function fillFs(dir: string, leaveKiB = 0): string {
  const filler = path.join(dir, 'filler');
  try {
    execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k'], { stdio: 'ignore' });
  } catch {
    // dd stops at ENOSPC: the file system is full now
  }
  if (leaveKiB > 0) fs.truncateSync(filler, fs.statSync(filler).size - leaveKiB * 1024);
  return filler;
}

/** Unmounts every tmpfs smallFs mounted (for afterAll). */
export function unmountSmallFs(): void {
  for (const dir of mounts.splice(0)) spawnSync('umount', ['-l', dir]);
}
