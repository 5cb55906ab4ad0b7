/**
 * scripts/setup.sh (the first of the README's two commands) refuses a Node.js that
 * cannot build the product, before installing anything, and says what to install.
 * The Node binaries here are stand-ins that only answer --version.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SETUP = resolve(fileURLToPath(new URL('../../scripts/setup.sh', import.meta.url)));
const dirs: string[] = [];

/** Runs setup.sh with a `node` (and `npm`) on PATH that report `version`. */
function setupWith(version: string): { status: number | null; stderr: string } {
  const bin = mkdtempSync(join(tmpdir(), 'bsan-setup-'));
  dirs.push(bin);
  for (const tool of ['node', 'npm']) {
    writeFileSync(join(bin, tool), `#!/bin/sh\necho ${version}\n`);
    chmodSync(join(bin, tool), 0o755);
  }
  // the stand-ins come first on PATH
  const r = spawnSync('/bin/bash', [SETUP], {
    encoding: 'utf8',
    env: {
      PATH: `${bin}:/usr/bin:/bin`,
    },
    timeout: 10_000,
  });
  return { status: r.status, stderr: r.stderr };
}

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('scripts/setup.sh', () => {
  it.each(['v18.20.4', 'v20.18.1'])('stops at once on Node.js %s and says what to install', (v) => {
    const r = setupWith(v);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`Node.js ${v} is too old: BranchSAN needs 20.19 or later`);
    expect(r.stderr).toContain('install Node.js 20');
    expect(r.stderr).not.toContain('installing Debian packages');
  });
});
