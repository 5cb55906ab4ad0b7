import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  PasswordFile,
  formatPasswordHash,
  hashPassword,
  parsePasswordHash,
  passwordProblem,
  verifyPassword,
} from '../../../engine/src/control/auth/password.js';
import { UserError } from '../../../engine/src/util/errors.js';

const FAST = { ln: 10, r: 8, p: 1 }; // the tests' own cost; production uses ln=15

describe('scrypt password hashes', () => {
  it('round-trips through the PHC string with its parameters and a per-hash salt', async () => {
    const a = await hashPassword('correct horse', FAST);
    const b = await hashPassword('correct horse', FAST);
    expect(a.salt.equals(b.salt)).toBe(false);
    const text = formatPasswordHash(a);
    expect(text).toMatch(/^\$scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    const back = parsePasswordHash(text)!;
    expect(back).toMatchObject({ ln: 10, r: 8, p: 1 });
    expect(await verifyPassword('correct horse', back)).toBe(true);
    expect(await verifyPassword('correct horsE', back)).toBe(false);
    expect(await verifyPassword('', back)).toBe(false);
  });

  it('treats canonically equal Unicode spellings as one password', async () => {
    const h = await hashPassword('caf\u00e9 au lait', FAST);
    expect(await verifyPassword('cafe\u0301 au lait', h)).toBe(true);
  });

  it('refuses stored parameters that would make every sign-in hang, and damaged strings', () => {
    const ok = '$scrypt$ln=15,r=8,p=1$AAAAAAAAAAAAAAAAAAAAAA$' + 'A'.repeat(43);
    expect(parsePasswordHash(ok)).not.toBeNull();
    expect(parsePasswordHash(ok.replace('ln=15', 'ln=30'))).toBeNull();
    expect(parsePasswordHash(ok.replace('p=1', 'p=999'))).toBeNull();
    expect(parsePasswordHash('$2b$10$bcrypthash')).toBeNull();
    expect(parsePasswordHash('')).toBeNull();
  });

  it('asks for at least 8 characters', () => {
    expect(passwordProblem('1234567')).toMatch(/at least 8 characters/);
    expect(passwordProblem('12345678')).toBeNull();
    expect(passwordProblem('x'.repeat(257))).toMatch(/at most 256/);
  });
});

describe('PasswordFile', () => {
  const dir = () => fs.mkdtempSync(path.join(os.tmpdir(), 'bsan-pw-'));

  it('stores 0600 in a 0700 directory, notices changes on disk, refuses loose modes', async () => {
    const d = dir();
    const file = path.join(d, 'secrets', 'console-password');
    const pw = new PasswordFile(file, 0);
    expect(pw.current()).toBeNull();
    await pw.set('first password');
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    const first = pw.current()!;
    expect(await verifyPassword('first password', first)).toBe(true);

    // Another process (branchsan passwd) replaces it.
    await new PasswordFile(file).set('second password');
    const second = pw.current()!;
    expect(second.salt.equals(first.salt)).toBe(false);
    expect(await verifyPassword('second password', second)).toBe(true);

    fs.chmodSync(file, 0o644);
    fs.appendFileSync(file, ''); // same content, new mode: still re-checked via mtime
    fs.utimesSync(file, new Date(), new Date(Date.now() + 5000));
    expect(() => pw.current()).toThrow(/readable by other users/);
    fs.rmSync(d, { recursive: true, force: true });
  });

  it('an exclusive set (the first-run setup) never replaces an existing password', async () => {
    const d = dir();
    const pw = new PasswordFile(path.join(d, 'console-password'), 0);
    await pw.set('the first one', { exclusive: true });
    await expect(pw.set('a second one', { exclusive: true })).rejects.toThrow(
      'An admin password is already set.',
    );
    expect(await verifyPassword('the first one', pw.current()!)).toBe(true);
    expect(fs.readdirSync(d)).toEqual(['console-password']); // no temporary files left
    fs.rmSync(d, { recursive: true, force: true });
  });

  // Before: `branchsan passwd` (a rename) printed a raw EISDIR ('looks like a bug'), and
  // the first-run setup (a link) got EEXIST, answered 'An admin password is already set'.
  it('refuses to set a password over a directory in its place, saying what to run', async () => {
    const d = dir();
    const file = path.join(d, 'console-password');
    fs.mkdirSync(file, { mode: 0o700 });
    for (const exclusive of [false, true]) {
      const err = await new PasswordFile(file, 0).set('a good password', { exclusive }).then(
        () => undefined,
        (e: unknown) => e as UserError,
      );
      expect(err).toBeInstanceOf(UserError);
      expect([err!.message, err!.hint]).toEqual([
        `The console password file ${file} is a directory, not a regular file.`,
        `Run: rm -r ${file}, then set a new password with: branchsan passwd --data DIR.`,
      ]);
    }
    expect(fs.readdirSync(d)).toEqual(['console-password']); // no temporary files left
    fs.rmdirSync(file);
    await new PasswordFile(file, 0).set('a good password', { exclusive: true }); // as said
    fs.rmSync(d, { recursive: true, force: true });
  });

  // Before: the link met the symbolic link (no password: reading it finds none) and the
  // setup answered 'An admin password is already set.', to sign in with it.
  it('a symbolic link to nothing in its place: the first-run setup says so, not "already set"', async () => {
    const d = dir();
    const file = path.join(d, 'console-password');
    const gone = path.join(d, 'moved-away');
    fs.symlinkSync(gone, file);
    const passwords = new PasswordFile(file, 0);
    expect(passwords.current()).toBeNull();
    const err = await passwords.set('a good password', { exclusive: true }).then(
      () => undefined,
      (e: unknown) => e as UserError,
    );
    expect(err).toBeInstanceOf(UserError);
    expect([err!.message, err!.hint, err!.code]).toEqual([
      `The console password file ${file} is a symbolic link to ${gone}, which does not exist: no admin password is set.`,
      `Run: rm ${file}, then set a new password with: branchsan passwd --data DIR (or open the console's setup page again).`,
      'user-error',
    ]);
    fs.rmSync(file); // as said
    await passwords.set('a good password', { exclusive: true });
    expect(passwords.current()).not.toBeNull();
    fs.rmSync(d, { recursive: true, force: true });
  });

  // Before: the stat's ELOOP replaced the link's EEXIST: 'could not be read (ELOOP)', for
  // a password being set, with nothing of what stopped it.
  it('a failed link whose place cannot be looked at either says both failures', async () => {
    const d = dir();
    const file = path.join(d, 'console-password');
    fs.symlinkSync(file, file); // a link to itself: the link of the new one meets it, stat loops
    const err = await new PasswordFile(file, 0).set('a good password', { exclusive: true }).then(
      () => undefined,
      (e: unknown) => e as UserError,
    );
    expect(err).toBeInstanceOf(UserError);
    expect([err!.message, err!.hint]).toEqual([
      `The console password file ${file} could not be replaced (EEXIST), and looking at what is there failed too (ELOOP).`,
      `Check what is at ${file} (ls -l it) and the disk that holds it (dmesg for I/O errors), then try again (or set a new password with: branchsan passwd --data DIR).`,
    ]);
    expect(fs.readdirSync(d)).toEqual(['console-password']); // no temporary files left
    fs.rmSync(d, { recursive: true, force: true });
  });
});

// A power cut must not leave the password file empty (ext4 and XFS delay allocation: a
// name can reach the disk before the data it names). No power cut here: the real calls
// are recorded, in order, and must sync the new file's data before its name is made,
// and the directory after.
describe('PasswordFile: a new password reaches the disk before its name', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  for (const exclusive of [false, true]) {
    it(exclusive ? 'first-run setup (link)' : 'a replacement (rename)', async () => {
      const d = fs.mkdtempSync(path.join(os.tmpdir(), 'bsan-pw-sync-'));
      const file = path.join(d, 'secrets', 'console-password');
      const pw = new PasswordFile(file, 0);
      if (!exclusive) await pw.set('the old password');
      const opened = new Map<number, string>();
      const steps: string[] = [];
      const name = (p: fs.PathLike) =>
        path.relative(d, String(p)).replace(/\.\d+\.[0-9a-f]+\.tmp$/, '.tmp');
      const openSync = fs.openSync;
      vi.spyOn(fs, 'openSync').mockImplementation((p, ...rest) => {
        const fd = openSync(p, ...rest);
        opened.set(fd, name(p));
        return fd;
      });
      const fsyncSync = fs.fsyncSync;
      vi.spyOn(fs, 'fsyncSync').mockImplementation((fd) => {
        steps.push(`fsync ${opened.get(fd) ?? '?'}`);
        fsyncSync(fd);
      });
      const linkSync = fs.linkSync;
      vi.spyOn(fs, 'linkSync').mockImplementation((a, b) => {
        steps.push(`link ${name(a)} ${name(b)}`);
        linkSync(a, b);
      });
      const renameSync = fs.renameSync;
      vi.spyOn(fs, 'renameSync').mockImplementation((a, b) => {
        steps.push(`rename ${name(a)} ${name(b)}`);
        renameSync(a, b);
      });

      await pw.set('the new password', { exclusive });

      const put = exclusive ? 'link' : 'rename';
      expect(steps).toEqual([
        'fsync secrets/console-password.tmp',
        `${put} secrets/console-password.tmp secrets/console-password`,
        'fsync secrets',
      ]);
      vi.restoreAllMocks();
      expect(await verifyPassword('the new password', pw.current()!)).toBe(true);
      expect(fs.readdirSync(path.dirname(file))).toEqual(['console-password']);
      fs.rmSync(d, { recursive: true, force: true });
    });
  }
});
