/**
 * DH-HMAC-CHAP secrets for NVMe hosts, one per allowed host NQN, in the textual
 * representation nvme-cli and the Linux kernel use (NVMe Base 2.0, "secret
 * representation"):
 *
 *   DHHC-1:<hh>:<base64(key || crc32(key) little-endian)>:
 *
 * hh is the hash the key is transformed with at authentication time: 00 none,
 * 01 SHA-256 (32-byte key), 02 SHA-384 (48), 03 SHA-512 (64). The CRC is CRC-32 as in
 * zlib. The stored string is the untransformed random key, exactly what goes into
 * `nvme connect --dhchap-secret=…`.
 *
 * Files: DATA/secrets/hosts/<sha256(host NQN)>.dhchap, 0600 (an NQN may be 223 bytes
 * and hold characters no file system likes, so its hash names the file). The secret
 * leaves the engine only as the answer to an API call: never in logs or events.
 *
 * A secret lives as long as its host is on some subsystem's allow list: one taken off
 * its last list, or whose last subsystem is deleted, loses it (forget), so a host
 * allowed back later does not come back with a secret someone may have kept meanwhile.
 *
 * The in-band DH-HMAC-CHAP exchange on connect is a later step: hosts can be
 * given their secret now and the target will check it once authentication lands.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash, randomBytes } from 'node:crypto';
import { UserError } from '../util/errors.js';
import { removeSecretFiles, replaceSecretFile, secretsDir } from './secrets.js';
import { makeDirs } from '../util/paths.js';
import {
  checkRemovable,
  checkReplaceable,
  readSecretWithStats,
  type SecretRenewal,
} from '../util/secret-file.js';

export type DhchapHash = 0 | 1 | 2 | 3;
/** Key length in bytes for each hash id that generation offers. */
export const DHCHAP_KEY_BYTES = { 1: 32, 2: 48, 3: 64 } as const;
export const DHCHAP_HASH_NAMES = { 0: 'none', 1: 'SHA-256', 2: 'SHA-384', 3: 'SHA-512' } as const;

export function formatDhchapSecret(key: Buffer, hash: DhchapHash): string {
  if (key.length !== 32 && key.length !== 48 && key.length !== 64)
    throw new RangeError(`a DH-HMAC-CHAP key is 32, 48 or 64 bytes, not ${key.length}`);
  const crc = Buffer.alloc(4);
  crc.writeUInt32LE(zlib.crc32(key) >>> 0);
  return `DHHC-1:${String(hash).padStart(2, '0')}:${Buffer.concat([key, crc]).toString('base64')}:`;
}

/** Parses and checks a secret (version, hash id, base64, length, CRC); throws UserError. */
export function parseDhchapSecret(text: string): { hash: DhchapHash; key: Buffer } {
  const m = /^DHHC-1:(0[0-3]):([A-Za-z0-9+/]+={0,2}):?$/.exec(text.trim());
  const bad = (why: string) =>
    new UserError(
      `Not a DH-HMAC-CHAP secret: ${why}.`,
      'Expected DHHC-1:<00-03>:<base64 of the key and its CRC-32>: as made by `nvme gen-dhchap-key`.',
    );
  if (!m) throw bad('it does not look like DHHC-1:hh:base64:');
  const hash = Number(m[1]) as DhchapHash;
  const raw = Buffer.from(m[2]!, 'base64');
  if (raw.length !== 36 && raw.length !== 52 && raw.length !== 68)
    throw bad(`the key is ${raw.length - 4} bytes, not 32, 48 or 64`);
  const key = raw.subarray(0, raw.length - 4);
  if (zlib.crc32(key) >>> 0 !== raw.readUInt32LE(raw.length - 4))
    throw bad('its CRC does not match');
  if (hash !== 0 && key.length !== DHCHAP_KEY_BYTES[hash])
    throw bad(
      `hash ${hash} (${DHCHAP_HASH_NAMES[hash]}) needs a ${DHCHAP_KEY_BYTES[hash]}-byte key`,
    );
  return { hash, key: Buffer.from(key) };
}

export function generateDhchapSecret(hash: 1 | 2 | 3): string {
  return formatDhchapSecret(randomBytes(DHCHAP_KEY_BYTES[hash]), hash);
}

export interface HostSecret {
  hostNqn: string;
  secret: string;
  hash: 1 | 2 | 3;
  hashName: string;
  /** When this secret was made (ms since epoch). */
  createdAt: number;
}

/** A host no subsystem allows any more needs no secret: nothing to make anew. */
const FORGET_RENEWAL: SecretRenewal = {
  orElse: 'or leave it: no subsystem allows the host, so it is not used',
  afresh: 'nothing more: no subsystem allows the host, so it needs no secret',
};

/**
 * How a host's secret is had anew, for the hints about a file that cannot be used; one
 * others could read may have been read, so a new one is the better cure.
 */
const HOST_SECRET_RENEWAL: SecretRenewal = {
  orElse:
    'or, since others may have read it, replace it with host.secret.rotate and give the host the new secret',
  afresh: 'create a new one with host.secret.create and give the host the new secret',
};

/** Records a secret change (the audit row) before it takes effect. */
type Record = (change: { hostNqn: string; hash: 1 | 2 | 3 }) => void;

export class HostSecretStore {
  constructor(
    private readonly dataDir: string,
    /** The hosts some subsystem allows: secrets exist only for those. */
    private readonly listedHosts: () => Iterable<string>,
  ) {}

  private isAllowedHost(hostNqn: string): boolean {
    for (const h of this.listedHosts()) if (h === hostNqn) return true;
    return false;
  }

  /**
   * Makes the first secret for a host; refuses when it has one (use rotate). `record`
   * (the audit row) runs once the new secret is on disk under a temporary name and
   * before it takes effect: if it throws, nothing changed.
   */
  create(hostNqn: string, hash: 1 | 2 | 3 = 1, record: Record = () => {}): HostSecret {
    this.requireAllowed(hostNqn);
    if (this.hasSecretFile(hostNqn)) {
      throw new UserError(
        `The host ${hostNqn} already has a DH-HMAC-CHAP secret.`,
        'Read it with host.secret.get, or replace it with host.secret.rotate.',
        'already-exists',
      );
    }
    return this.write(hostNqn, hash, record);
  }

  /**
   * Replaces a host's secret (the host must be given the new one to connect), with the
   * same hash unless `hash` names another; one that cannot be read (damaged, readable
   * by others) is replaced too, with SHA-256 unless `hash` says. `record` as for
   * create: when it throws, the old secret stays.
   */
  rotate(hostNqn: string, hash?: 1 | 2 | 3, record: Record = () => {}): HostSecret {
    this.requireAllowed(hostNqn);
    let oldHash: 1 | 2 | 3 | undefined;
    try {
      oldHash = this.get(hostNqn).hash;
    } catch (err) {
      // None at all: create one. One that cannot be used (damaged, readable by others)
      // is what a rotation replaces.
      if (!(err instanceof UserError) || err.code === 'not-found') throw err;
    }
    return this.write(hostNqn, hash ?? oldHash ?? 1, record);
  }

  get(hostNqn: string): HostSecret {
    const file = this.fileOf(hostNqn);
    const read = this.readFile(hostNqn);
    if (read === undefined) {
      throw new UserError(
        `The host ${hostNqn} has no DH-HMAC-CHAP secret.`,
        'Create one with host.secret.create.',
        'not-found',
      );
    }
    const { text, stats } = read;
    const secret = text.trim();
    if (secret === '') {
      throw new UserError(
        `The host ${hostNqn} has no DH-HMAC-CHAP secret: its file ${file} is empty (a write the system did not finish, a power cut).`,
        'Create one with host.secret.create.',
        'not-found',
      );
    }
    let hash: DhchapHash;
    try {
      ({ hash } = parseDhchapSecret(secret));
    } catch (err) {
      throw new UserError(
        `The DH-HMAC-CHAP secret of ${hostNqn} in ${file} is damaged: ${(err as Error).message}`,
        'Replace it with host.secret.rotate, and give the host the new secret.',
        'unavailable',
      );
    }
    const h = hash === 0 ? 1 : hash;
    return {
      hostNqn,
      secret,
      hash: h,
      hashName: DHCHAP_HASH_NAMES[h],
      createdAt: stats.mtimeMs,
    };
  }

  /**
   * Deletes the secrets of those of `hostNqns` that no subsystem allows any more;
   * returns those whose secret was deleted, and, when a directory is in the place of a
   * secret file of theirs (not deleted), the error that says so and to rm -r it.
   */
  forget(hostNqns: Iterable<string>): { gone: string[]; problem: UserError | null } {
    const listed = new Set(this.listedHosts()); // one read of the configuration, not one per host
    const unlisted = [...new Set(hostNqns)].filter(
      (h) => !listed.has(h) && fs.existsSync(this.fileOf(h)),
    );
    // a directory in a secret file's place is not deleted with it (what an administrator
    // put there): said, with the rm -r to run; the others are deleted
    const inTheWay: UserError[] = [];
    const gone = unlisted.filter((h) => {
      try {
        checkRemovable(this.fileOf(h), FORGET_RENEWAL, this.labelOf(h));
        return true;
      } catch (err) {
        if (!(err instanceof UserError)) throw err;
        inTheWay.push(err);
        return false;
      }
    });
    removeSecretFiles(
      this.hostsDir(),
      gone.map((h) => path.basename(this.fileOf(h))),
    );
    const problem =
      inTheWay.length === 0
        ? null
        : new UserError(
            inTheWay.map((e) => e.message).join(' '),
            inTheWay.map((e) => e.hint).join(' '),
            'unavailable',
          );
    return { gone, problem };
  }

  /** The new secret is written aside, recorded, then renamed over the old one. */
  private write(hostNqn: string, hash: 1 | 2 | 3, record: Record): HostSecret {
    const dir = path.join(secretsDir(this.dataDir), 'hosts');
    makeDirs(dir, 0o700);
    fs.chmodSync(dir, 0o700);
    const file = this.fileOf(hostNqn);
    // a directory in its place: the rename would fail, after the audit row said it was made
    asUnavailable(() => checkReplaceable(file, HOST_SECRET_RENEWAL, this.labelOf(hostNqn)));
    const secret = generateDhchapSecret(hash);
    replaceSecretFile(file, secret, () => record({ hostNqn, hash }));
    return {
      hostNqn,
      secret,
      hash,
      hashName: DHCHAP_HASH_NAMES[hash],
      createdAt: fs.statSync(file).mtimeMs,
    };
  }

  /** A secret file with something in it (an empty one counts as none, as get() reads it). */
  private hasSecretFile(hostNqn: string): boolean {
    return (this.readFile(hostNqn)?.text.trim() ?? '') !== '';
  }

  /**
   * The host's secret file, opened, checked and read as one file (readSecretWithStats):
   * a named pipe in its place would hold the engine's thread, SIGTERM included. One that
   * cannot be used (others can read it, something else in its place) is refused with
   * what to run; rotate() replaces a file others can read.
   */
  private readFile(hostNqn: string): { text: string; stats: fs.Stats } | undefined {
    return asUnavailable(() =>
      readSecretWithStats(this.fileOf(hostNqn), HOST_SECRET_RENEWAL, this.labelOf(hostNqn)),
    );
  }

  private labelOf(hostNqn: string): string {
    return `The DH-HMAC-CHAP secret file ${this.fileOf(hostNqn)} (of ${hostNqn})`;
  }

  private requireAllowed(hostNqn: string): void {
    if (this.isAllowedHost(hostNqn)) return;
    throw new UserError(
      `The host ${hostNqn} is not allowed on any subsystem, so it gets no DH-HMAC-CHAP secret.`,
      'Allow it first with target.host.allow, then create its secret.',
      'not-found',
    );
  }

  private fileOf(hostNqn: string): string {
    const name = createHash('sha256').update(hostNqn).digest('hex');
    return path.join(this.hostsDir(), `${name}.dhchap`);
  }

  private hostsDir(): string {
    return path.join(this.dataDir, 'secrets', 'hosts');
  }
}

/** `step`'s result; the UserError of a secret file that cannot be used, as 'unavailable'. */
function asUnavailable<T>(step: () => T): T {
  try {
    return step();
  } catch (err) {
    if (err instanceof UserError) throw new UserError(err.message, err.hint, 'unavailable');
    throw err;
  }
}
