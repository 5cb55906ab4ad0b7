/**
 * Secret files: an empty one (what a power cut can leave of a file written just before
 * it) is no secret. Before, the console's setup token read back as '' and then matched
 * an empty token in a setup request, and an empty metrics token matched an empty bearer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  loadOrCreateSecret,
  readSecret,
  secretsDir,
  writeSecret,
} from '../../../engine/src/service/secrets.js';
import { tempDir } from '../../helpers/engine.js';

describe('secret files', () => {
  it('an empty secret file is replaced by a new secret, never read as the empty secret', () => {
    const dir = tempDir('branchsan-secrets-');
    const file = path.join(secretsDir(dir), 'console-token');
    fs.writeFileSync(file, '', { mode: 0o600 });
    const token = loadOrCreateSecret(dir, 'console-token', () => 'fresh-token');
    expect(token).toBe('fresh-token');
    expect(fs.readFileSync(file, 'utf8')).toBe('fresh-token\n');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(loadOrCreateSecret(dir, 'console-token', () => 'other')).toBe('fresh-token');
  });

  it('reads an empty or missing secret as not set', () => {
    const dir = tempDir('branchsan-secrets-');
    expect(readSecret(dir, 'metrics-token')).toBeUndefined();
    fs.writeFileSync(path.join(secretsDir(dir), 'metrics-token'), '\n', { mode: 0o600 });
    expect(readSecret(dir, 'metrics-token')).toBeUndefined();
    writeSecret(dir, 'metrics-token', ' spaced ');
    expect(readSecret(dir, 'metrics-token')).toBe(' spaced ');
    expect(fs.readdirSync(secretsDir(dir))).toEqual(['metrics-token']); // no temporary left
  });

  it('still refuses a secret others can read', () => {
    const dir = tempDir('branchsan-secrets-');
    const file = path.join(secretsDir(dir), 'console-token');
    fs.writeFileSync(file, 'x\n', { mode: 0o644 });
    fs.chmodSync(file, 0o644);
    expect(() => readSecret(dir, 'console-token')).toThrow(/readable by other users/);
  });
});
