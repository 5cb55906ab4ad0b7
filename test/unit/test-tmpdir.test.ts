import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import setup from '../setup/tmpdir.js';

describe('per-run temporary directory (vitest global setup)', () => {
  const outer = process.env.TMPDIR;
  const keep = process.env.BRANCHSAN_KEEP_TEST_TMP;
  afterEach(() => {
    if (outer === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = outer;
    if (keep === undefined) delete process.env.BRANCHSAN_KEEP_TEST_TMP;
    else process.env.BRANCHSAN_KEEP_TEST_TMP = keep;
  });

  it('is the TMPDIR this run sees', () => {
    // The global setup ran before this worker started.
    expect(path.basename(os.tmpdir())).toMatch(/^branchsan-run-/);
  });

  it('points TMPDIR at a fresh directory and removes it with its contents at teardown', () => {
    delete process.env.BRANCHSAN_KEEP_TEST_TMP;
    const parent = os.tmpdir();
    const teardown = setup();
    const root = os.tmpdir();
    expect(path.dirname(root)).toBe(parent);
    expect(path.basename(root)).toMatch(/^branchsan-run-/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'leftover-'));
    fs.writeFileSync(path.join(dir, 'disk.img'), 'x');
    teardown();
    expect(fs.existsSync(root)).toBe(false);
    expect(process.env.TMPDIR).toBe(outer);
  });

  it('keeps the directory when BRANCHSAN_KEEP_TEST_TMP=1', () => {
    process.env.BRANCHSAN_KEEP_TEST_TMP = '1';
    const teardown = setup();
    const root = os.tmpdir();
    fs.writeFileSync(path.join(root, 'console.log'), 'x');
    teardown();
    expect(fs.readFileSync(path.join(root, 'console.log'), 'utf8')).toBe('x');
    expect(process.env.TMPDIR).toBe(outer);
    fs.rmSync(root, { recursive: true });
  });
});
