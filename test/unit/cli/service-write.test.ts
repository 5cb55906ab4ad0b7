/**
 * `service install` puts its unit in place whole or not at all (writeUnit): written in
 * place, a full disk left a cut-off unit where the working one was, and an installed
 * unit that is a symbolic link had the file it points at overwritten.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeUnit } from '../../../engine/src/cli/service.js';
import { tempDir } from '../../helpers/engine.js';
import { canMountTmpfs, fillFs, smallFs, unmountSmallFs } from '../../helpers/small-fs.js';

const OLD = '[Service]\nExecStart=/usr/bin/node /opt/BranchSAN/old/branchsan.js serve\n';
const NEW = `[Service]\nExecStart=/usr/bin/node /opt/BranchSAN/new/branchsan.js serve\n${'#'.repeat(64 * 1024)}\n`;

afterAll(() => unmountSmallFs());

describe('writeUnit', () => {
  it('replaces a unit that is a symbolic link, leaving the file it pointed at alone', () => {
    const dir = tempDir('branchsan-unit-');
    const packaged = path.join(dir, 'packaged.service');
    const dest = path.join(dir, 'branchsan.service');
    fs.writeFileSync(packaged, OLD);
    fs.symlinkSync(packaged, dest);
    writeUnit(dest, NEW, 0o644);
    expect(fs.readFileSync(packaged, 'utf8')).toBe(OLD);
    expect(fs.lstatSync(dest).isFile()).toBe(true);
    expect(fs.readFileSync(dest, 'utf8')).toBe(NEW);
    expect(fs.statSync(dest).mode & 0o777).toBe(0o644);
    expect(fs.readdirSync(dir).sort()).toEqual(['branchsan.service', 'packaged.service']);
    fs.rmSync(dir, { recursive: true });
  });

  it.skipIf(!canMountTmpfs)('keeps the installed unit whole when the disk is full', () => {
    const dir = smallFs('branchsan-unit-full-', '1m');
    const dest = path.join(dir, 'branchsan.service');
    fs.writeFileSync(dest, OLD);
    fillFs(dir);
    expect(() => writeUnit(dest, NEW, 0o644)).toThrow(
      `service: cannot write ${dest} (ENOSPC); the unit installed before, if any, is unchanged.`,
    );
    expect(fs.readFileSync(dest, 'utf8')).toBe(OLD);
    expect(fs.readdirSync(dir).sort()).toEqual(['branchsan.service', 'filler']);
  });
});
