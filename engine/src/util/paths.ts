/** Where the installed product's files are, whether run from dist/ or from sources. */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let cachedRoot: string | undefined;

/** The directory holding BranchSAN's package.json. */
export function productRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try {
        if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'branchsan')
          return (cachedRoot = dir);
      } catch {
        // not ours; keep looking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the BranchSAN installation (package.json)');
    dir = up;
  }
}

export function productVersion(): string {
  return JSON.parse(fs.readFileSync(path.join(productRoot(), 'package.json'), 'utf8'))
    .version as string;
}

/** The built renderer the console serves. */
export function consoleBundleDir(): string {
  return path.join(productRoot(), 'dist', 'renderer');
}

/** Whether `p` (resolving symlinks as far as it exists) lies in `dir` or below it. */
export async function insideDir(p: string, dir: string): Promise<boolean> {
  const real = async (q: string): Promise<string> => {
    const abs = path.resolve(q);
    try {
      return await fs.promises.realpath(abs);
    } catch {
      const parent = path.dirname(abs);
      return parent === abs ? abs : path.join(await real(parent), path.basename(abs));
    }
  };
  const rel = path.relative(await real(dir), await real(p));
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
}

/** Where the engine suggests keeping file-backed volumes (the unit creates it). */
export const VOLUME_DIR = '/var/lib/branchsan-volumes';

/**
 * The directories build/linux/branchsan.service leaves writable for volumes
 * (ProtectSystem=strict makes everything else read-only to the service).
 */
export const SERVICE_VOLUME_DIRS = [VOLUME_DIR, '/srv', '/mnt', '/media'] as const;

/** Running as a systemd service: systemd sets INVOCATION_ID for every unit it starts. */
export function underSystemd(env: NodeJS.ProcessEnv = process.env): boolean {
  return typeof env.INVOCATION_ID === 'string' && env.INVOCATION_ID !== '';
}

/**
 * mkdir -p, one level at a time. Node's own recursive mkdir loops forever where a
 * directory exists but refuses a new entry with ENOENT (/proc, /sys): here that
 * ENOENT comes back as the error. A path through a file fails with ENOTDIR.
 */
export function makeDirs(dir: string, mode?: number): void {
  const missing: string[] = [];
  for (let p = path.resolve(dir); ; p = path.dirname(p)) {
    try {
      if (fs.statSync(p).isDirectory()) break;
      throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${dir}'`), {
        code: 'ENOTDIR',
        path: p,
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    missing.push(p);
    if (p === path.dirname(p)) break;
  }
  for (const d of missing.reverse()) {
    try {
      fs.mkdirSync(d, mode === undefined ? undefined : { mode });
    } catch (err) {
      // made meanwhile by someone else: fine if it is a directory
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || !fs.statSync(d).isDirectory())
        throw err;
    }
  }
}
