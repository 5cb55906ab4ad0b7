/**
 * The console's admin password: one scrypt hash in a secret file
 * (DATA/secrets/console-password, 0600), in the PHC string shape
 * `$scrypt$ln=15,r=8,p=1$<salt>$<hash>` so the cost parameters travel with the hash
 * and can be raised later without invalidating existing passwords.
 *
 * Why a file and not a users table: the database is readable by the admin group
 * (umask 027) and goes into diagnostics bundles; secrets are files only the service
 * reads (ARCHITECTURE.md "Persistence"). There is one admin, and `branchsan passwd`
 * must work while the engine runs (it holds the database lock), so the engine
 * re-reads the file when it changes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { UserError } from '../../util/errors.js';
import { syncDirectory, writeFileSynced } from '../../util/durable.js';
import { makeDirs } from '../../util/paths.js';
import { checkReplaceable, readSecretText, type SecretRenewal } from '../../util/secret-file.js';

/** Cost for new hashes: 2^15 × r 8 = 32 MiB and ~0.1 s per guess on one core. */
export const SCRYPT_DEFAULTS = { ln: 15, r: 8, p: 1 } as const;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 256;

export interface PasswordHash {
  /** log2 of scrypt's N. */
  ln: number;
  r: number;
  p: number;
  salt: Buffer;
  hash: Buffer;
}

/** Why a password is not acceptable as the admin password, or null when it is. */
export function passwordProblem(password: string): string | null {
  if (password.length < MIN_PASSWORD_LENGTH)
    return `The password is too short: use at least ${MIN_PASSWORD_LENGTH} characters.`;
  if (password.length > MAX_PASSWORD_LENGTH)
    return `The password is too long: use at most ${MAX_PASSWORD_LENGTH} characters.`;
  return null;
}

export async function hashPassword(
  password: string,
  cost: { ln: number; r: number; p: number } = SCRYPT_DEFAULTS,
): Promise<PasswordHash> {
  const salt = randomBytes(SALT_BYTES);
  const hash = await derive(password, salt, cost);
  return { ...cost, salt, hash };
}

/** Constant-time check of `password` against a stored hash. */
export async function verifyPassword(password: string, stored: PasswordHash): Promise<boolean> {
  const candidate = await derive(password, stored.salt, stored);
  return candidate.length === stored.hash.length && timingSafeEqual(candidate, stored.hash);
}

export function formatPasswordHash(h: PasswordHash): string {
  const b64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '');
  return `$scrypt$ln=${h.ln},r=${h.r},p=${h.p}$${b64(h.salt)}$${b64(h.hash)}`;
}

/** Parses a stored hash; the bounds keep a tampered file from making every login hang. */
export function parsePasswordHash(text: string): PasswordHash | null {
  const m = /^\$scrypt\$ln=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+)\$([A-Za-z0-9+/]+)$/.exec(
    text.trim(),
  );
  if (!m) return null;
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (ln < 10 || ln > 20 || r < 1 || r > 32 || p < 1 || p > 16) return null;
  const salt = Buffer.from(m[4]!, 'base64');
  const hash = Buffer.from(m[5]!, 'base64');
  if (salt.length < 8 || hash.length < 16) return null;
  return { ln, r, p, salt, hash };
}

function derive(
  password: string,
  salt: Buffer,
  cost: { ln: number; r: number; p: number },
): Promise<Buffer> {
  const N = 2 ** cost.ln;
  const opts: ScryptOptions = { N, r: cost.r, p: cost.p, maxmem: 256 * N * cost.r + (1 << 20) };
  return new Promise((resolve, reject) =>
    scrypt(password.normalize('NFC'), salt, KEY_BYTES, opts, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

/** How the admin password is had anew, for the hints about a file that cannot be used. */
const PASSWORD_RENEWAL: SecretRenewal = {
  orElse: 'or set a new password with: branchsan passwd --data DIR',
  afresh: 'set a new password with: branchsan passwd --data DIR',
};

/**
 * The password file. `current()` reads it again (a `branchsan passwd` run while the
 * engine serves) at most once a second.
 */
export class PasswordFile {
  private cached: { hash: PasswordHash | null } | undefined;
  private checkedAt = 0;

  constructor(
    readonly file: string,
    private readonly recheckMs = 1000,
  ) {}

  /** How messages name it. */
  private get label(): string {
    return `The console password file ${this.file}`;
  }

  static inDataDir(dataDir: string): PasswordFile {
    return new PasswordFile(path.join(dataDir, 'secrets', 'console-password'));
  }

  /**
   * The stored hash, or null when no admin password has been set yet. `maxAgeMs` 0
   * looks at the file now (sign-in: a replaced password must stop working at once).
   */
  current(now = Date.now(), maxAgeMs = this.recheckMs): PasswordHash | null {
    if (this.cached && now - this.checkedAt < maxAgeMs) return this.cached.hash;
    this.checkedAt = now;
    // opened, checked and read as one file (readSecretText): a named pipe in its place
    // would otherwise hold the engine's thread at the next sign-in or session check.
    // A file that cannot be used is no password, until it can be read again.
    this.cached = undefined;
    const text = readSecretText(this.file, PASSWORD_RENEWAL, this.label);
    if (text === undefined) {
      this.cached = { hash: null };
      return null;
    }
    const hash = parsePasswordHash(text);
    if (!hash) {
      throw new UserError(
        `The console password file ${this.file} is damaged (not an scrypt hash).`,
        'Set a new admin password with: branchsan passwd --data DIR',
      );
    }
    this.cached = { hash };
    return hash;
  }

  /**
   * Stores a new password. `exclusive`: fail with 'already-exists' when one is set
   * (the first-run setup must never replace a password someone else set meanwhile).
   */
  async set(password: string, opts: { exclusive?: boolean } = {}): Promise<PasswordHash> {
    const problem = passwordProblem(password);
    if (problem) throw new UserError(problem, 'Choose another password.', 'usage', 'password');
    const hash = await hashPassword(password);
    const dir = path.dirname(this.file);
    makeDirs(dir, 0o700);
    fs.chmodSync(dir, 0o700);
    const tmp = `${this.file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    try {
      // on the medium before a link or rename names it, else a power cut can leave the
      // name on an empty file (ext4, XFS delay allocation): a damaged password file
      writeFileSynced(tmp, formatPasswordHash(hash) + '\n', 0o600);
      if (opts.exclusive)
        fs.linkSync(tmp, this.file); // atomic: EEXIST when one appeared
      else fs.renameSync(tmp, this.file);
    } catch (err) {
      // something else than a password file in its place (a directory: EISDIR from the
      // rename, EEXIST from the link) is no password set: say what is there (and, when it
      // cannot be looked at, the failure that stopped the change as well)
      checkReplaceable(this.file, PASSWORD_RENEWAL, this.label, err);
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        // a symbolic link to nothing is no password (reading it finds none) but takes the
        // name: 'already set' would send the owner to sign in with a password there is not
        const dangling = danglingLink(this.file);
        if (dangling !== null)
          throw new UserError(
            `${this.label} is a symbolic link to ${dangling}, which does not exist: no admin password is set.`,
            `Run: rm ${this.file}, then ${PASSWORD_RENEWAL.afresh} (or open the console's setup page again).`,
          );
        throw new UserError(
          'An admin password is already set.',
          'Sign in with it; to replace it, run `branchsan passwd --data DIR` as root on the server.',
          'already-exists',
        );
      }
      throw err;
    } finally {
      fs.rmSync(tmp, { force: true });
    }
    syncDirectory(dir); // the new name (and the temporary one gone) survive a power cut
    this.cached = undefined;
    return hash;
  }
}

/** Where `file` points when it is a symbolic link to nothing, else null. */
function danglingLink(file: string): string | null {
  try {
    if (!fs.lstatSync(file).isSymbolicLink() || fs.existsSync(file)) return null;
    return fs.readlinkSync(file);
  } catch {
    return null;
  }
}
