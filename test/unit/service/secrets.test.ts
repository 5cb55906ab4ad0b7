/**
 * Secret files: an empty one (what a power cut can leave of a file written just before
 * it) is no secret. Before, the console's setup token read back as '' and then matched
 * an empty token in a setup request, and an empty metrics token matched an empty bearer.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import {
  loadOrCreateSecret,
  readSecret,
  secretsDir,
  writeSecret,
} from '../../../engine/src/service/secrets.js';
import { UserError } from '../../../engine/src/util/errors.js';
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

  // Before: a directory was read (EISDIR, no hint) and a named pipe blocked the engine's
  // thread until something wrote to it.
  it("refuses a directory or a named pipe in a secret file's place, saying to remove it", () => {
    const dir = tempDir('branchsan-secrets-');
    const file = path.join(secretsDir(dir), 'console-token');
    fs.mkdirSync(file, { mode: 0o700 });
    expect(() => readSecret(dir, 'console-token')).toThrow(
      `The secret ${file} is a directory, not a regular file.`,
    );
    fs.rmdirSync(file);
    expect(spawnSync('mkfifo', ['-m', '600', file]).status).toBe(0);
    let err: UserError | undefined;
    try {
      readSecret(dir, 'console-token');
    } catch (e) {
      err = e as UserError;
    }
    expect(err!.message).toBe(
      `The secret ${file} is a special file (a named pipe, socket or device), not a regular file.`,
    );
    expect(err!.hint).toBe(
      `Run: rm -r ${file}, then start the engine again: it generates a new one.`,
    );
  });

  // Before, the file was looked at (stat) and then read by its name: a named pipe put
  // in its place in between was opened and read, which waits for a writer (here one
  // that writes after 2 s; without it, for good, with the engine's thread held).
  it('reads the file it checked: a named pipe swapped in right after the check is not read', () => {
    const dir = tempDir('branchsan-secrets-');
    const file = path.join(secretsDir(dir), 'console-token');
    fs.writeFileSync(file, 'the-secret\n', { mode: 0o600 });
    let writer: ReturnType<typeof spawn> | undefined;
    // the swap, right after the file is checked (fs is outside the unit: the moment is
    // the only thing this spy adds; the files and the pipe are real)
    const swap = () => {
      if (writer) return;
      fs.renameSync(file, `${file}.old`);
      expect(spawnSync('mkfifo', ['-m', '600', file]).status).toBe(0);
      writer = spawn('sh', ['-c', `sleep 2; echo from-the-pipe > '${file}'`], { detached: true });
    };
    const realStat = fs.statSync;
    const realFstat = fs.fstatSync;
    const spies = [
      vi.spyOn(fs, 'statSync').mockImplementation(((p: fs.PathLike, o?: object) => {
        const st = realStat(p, o as never);
        if (p === file) swap();
        return st;
      }) as typeof fs.statSync),
      vi.spyOn(fs, 'fstatSync').mockImplementation(((fd: number, o?: object) => {
        const st = realFstat(fd, o as never);
        swap();
        return st;
      }) as typeof fs.fstatSync),
    ];
    const t0 = Date.now();
    try {
      expect(readSecret(dir, 'console-token')).toBe('the-secret');
      expect(Date.now() - t0).toBeLessThan(1000);
    } finally {
      for (const s of spies) s.mockRestore();
      if (writer?.exitCode === null) process.kill(-writer.pid!, 'SIGKILL'); // sh and its sleep
    }
    expect(writer).toBeDefined(); // the swap did happen
  });
});
