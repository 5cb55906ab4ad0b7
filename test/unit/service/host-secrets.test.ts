/**
 * Host DH-HMAC-CHAP secret files on a real data directory: an empty file (what a
 * write the system did not finish can leave) counts as no secret, and a secret that
 * cannot be used is replaced by a rotation instead of blocking it; something else in
 * its place (a directory, a named pipe) is refused at once, saying what to run.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { HostSecretStore, parseDhchapSecret } from '../../../engine/src/service/host-secrets.js';
import { UserError } from '../../../engine/src/util/errors.js';
import { tempDir } from '../../helpers/engine.js';

const HOST = 'nqn.2014-08.org.nvmexpress:uuid:0c1d2e3f-4a5b-6c7d-8e9f-a0b1c2d3e4f5';

function store(): { s: HostSecretStore; fileOf: () => string } {
  const dir = tempDir('branchsan-hostsecret-');
  const s = new HostSecretStore(dir, () => [HOST]);
  const fileOf = () => {
    const files = fs.readdirSync(path.join(dir, 'secrets', 'hosts'));
    expect(files).toHaveLength(1);
    return path.join(dir, 'secrets', 'hosts', files[0]!);
  };
  return { s, fileOf };
}

function failure(f: () => unknown): UserError {
  try {
    f();
  } catch (err) {
    if (err instanceof UserError) return err;
    throw err;
  }
  throw new Error('expected a UserError');
}

describe('host DH-HMAC-CHAP secret files', () => {
  it('an empty file is no secret: get says so, create makes one over it', () => {
    const { s, fileOf } = store();
    s.create(HOST, 2);
    fs.writeFileSync(fileOf(), ''); // as a power cut can leave it
    const none = failure(() => s.get(HOST));
    expect(none.code).toBe('not-found');
    expect(none.message).toContain('is empty');
    expect(failure(() => s.rotate(HOST)).code).toBe('not-found');
    // Before: "already has a DH-HMAC-CHAP secret", so nothing but deleting the file helped.
    const made = s.create(HOST, 3);
    expect(s.get(HOST).secret).toBe(made.secret);
    expect(parseDhchapSecret(made.secret).hash).toBe(3);
    expect(fs.statSync(fileOf()).mode & 0o777).toBe(0o600);
  });

  it('a damaged secret is replaced by a rotation, with the hash asked for or SHA-256', () => {
    const { s, fileOf } = store();
    s.create(HOST, 3);
    fs.writeFileSync(fileOf(), 'DHHC-1:03:not base64 at all:', { mode: 0o600 });
    const damaged = failure(() => s.get(HOST));
    expect(damaged.message).toMatch(
      /^The DH-HMAC-CHAP secret of .* is damaged: Not a DH-HMAC-CHAP secret/,
    );
    expect(damaged.hint).toBe(
      'Replace it with host.secret.rotate, and give the host the new secret.',
    );
    expect(failure(() => s.create(HOST)).code).toBe('already-exists');
    // Before: rotate read the old secret first, and failed on it.
    const rotated = s.rotate(HOST);
    expect(rotated.hash).toBe(1);
    expect(s.get(HOST).secret).toBe(rotated.secret);
    expect(s.rotate(HOST).hash).toBe(1); // readable again: its own hash is kept
    fs.writeFileSync(fileOf(), 'garbage');
    expect(s.rotate(HOST, 2).hash).toBe(2);
  });

  it('a file of whitespace is no secret either; one readable by others is replaced by rotate', () => {
    const { s, fileOf } = store();
    s.create(HOST);
    fs.writeFileSync(fileOf(), '\n');
    expect(failure(() => s.get(HOST)).code).toBe('not-found');
    s.create(HOST); // before: "already has a secret", while rotate said "create one"
    fs.chmodSync(fileOf(), 0o644);
    const open = failure(() => s.get(HOST));
    expect(open.message).toContain('is readable by other users');
    expect(open.hint).toContain('host.secret.rotate');
    s.rotate(HOST);
    expect(fs.statSync(fileOf()).mode & 0o777).toBe(0o600);
    expect(s.get(HOST).hash).toBe(1);
  });

  it('rotating a host without a secret is refused with what to do', () => {
    const { s } = store();
    const none = failure(() => s.rotate(HOST));
    expect(none.code).toBe('not-found');
    expect(none.hint).toBe('Create one with host.secret.create.');
  });

  // Before: read by name, so a directory gave a raw EISDIR ('failed inside the engine')
  // and a named pipe held the engine's thread (SIGTERM too) until something wrote to it.
  it.each([
    ['a directory', (f: string) => fs.mkdirSync(f, { mode: 0o700 }), 'a directory'],
    [
      'a named pipe',
      (f: string) => expect(spawnSync('mkfifo', ['-m', '600', f]).status).toBe(0),
      'a special file (a named pipe, socket or device)',
    ],
  ])('refuses get, create and rotate at once when %s is in its place', (_, make, what) => {
    const { s, fileOf } = store();
    s.create(HOST);
    const file = fileOf();
    fs.rmSync(file);
    make(file);
    // without the fix, a pipe's reader is let go after 2 s, so the test fails, not hangs
    const writer = spawn('sh', ['-c', `sleep 2; [ -p '${file}' ] && echo x > '${file}'`], {
      detached: true,
      stdio: 'ignore',
    });
    try {
      for (const call of [() => s.get(HOST), () => s.create(HOST), () => s.rotate(HOST)]) {
        const t0 = Date.now();
        const err = failure(call);
        expect(Date.now() - t0).toBeLessThan(1000);
        expect([err.message, err.hint, err.code]).toEqual([
          `The DH-HMAC-CHAP secret file ${file} (of ${HOST}) is ${what}, not a regular file.`,
          `Run: rm -r ${file}, then create a new one with host.secret.create and give the host the new secret.`,
          'unavailable',
        ]);
      }
    } finally {
      if (writer.exitCode === null) process.kill(-writer.pid!, 'SIGKILL'); // sh and its sleep
    }
    fs.rmSync(file, { recursive: true });
    expect(s.create(HOST).secret).toBe(s.get(HOST).secret); // as the hint says
  });
});
