/** makeDirs (util/paths.ts): mkdir -p that ends, with the errors a caller can explain. */
import { afterAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { makeDirs } from '../../../engine/src/util/paths.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'bsan-mkdirs-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe('makeDirs', () => {
  it('creates every missing level with the mode, and is fine when it exists', () => {
    const dir = path.join(root, 'a', 'b', 'c');
    makeDirs(dir, 0o750);
    for (const d of [path.join(root, 'a'), path.join(root, 'a', 'b'), dir])
      expect(fs.statSync(d).mode & 0o777).toBe(0o750 & ~process.umask());
    makeDirs(dir, 0o750);
    makeDirs(path.relative(process.cwd(), dir));
  });

  it('fails with ENOTDIR through a file, creating nothing', () => {
    const file = path.join(root, 'file');
    fs.writeFileSync(file, 'x');
    expect(() => makeDirs(path.join(file, 'x', 'y'))).toThrow(
      expect.objectContaining({ code: 'ENOTDIR' }) as Error,
    );
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
  });

  it('returns the ENOENT of a file system that takes no new directories (Node loops on it)', () => {
    expect(() => makeDirs('/proc/branchsan-test/x')).toThrow(
      expect.objectContaining({ code: 'ENOENT' }) as Error,
    );
  });
});
