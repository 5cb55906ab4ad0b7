import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import setup from '../setup/tmpdir.js';

describe('per-run temporary directory (vitest global setup)', () => {
  const outer = process.env.TMPDIR;
  afterEach(() => {
    if (outer === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = outer;
  });

  it('is the TMPDIR this run sees', () => {
    // The global setup ran before this worker started.
    expect(path.basename(os.tmpdir())).toMatch(/^branchsan-run-/);
  });

  it('points TMPDIR at a fresh directory and removes it with its contents at teardown', () => {
    const teardown = setup();
    const root = os.tmpdir();
    expect(root).not.toBe(outer);
    expect(path.dirname(root)).toBe(outer ?? path.dirname(root));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'leftover-'));
    fs.writeFileSync(path.join(dir, 'disk.img'), 'x');
    teardown();
    expect(fs.existsSync(root)).toBe(false);
    expect(process.env.TMPDIR).toBe(outer);
  });
});
