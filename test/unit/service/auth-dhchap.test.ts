import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import {
  formatDhchapSecret,
  generateDhchapSecret,
  parseDhchapSecret,
} from '../../../engine/src/service/host-secrets.js';

describe('DH-HMAC-CHAP secret representation (DHHC-1)', () => {
  it('parses the NVMe specification’s example secret and checks its CRC', () => {
    const spec = 'DHHC-1:00:ia6zGodOr4SEG0Zzaw398rpY0wqipUWj4jWjUh4HWUz6aQ2n:';
    const { hash, key } = parseDhchapSecret(spec);
    expect(hash).toBe(0);
    expect(key).toHaveLength(32);
    expect(formatDhchapSecret(key, 0)).toBe(spec);
  });

  it('generates 32, 48 and 64-byte keys for hashes 1, 2, 3 that round-trip', () => {
    for (const [hash, bytes] of [
      [1, 32],
      [2, 48],
      [3, 64],
    ] as const) {
      const secret = generateDhchapSecret(hash);
      expect(secret).toMatch(new RegExp(`^DHHC-1:0${hash}:[A-Za-z0-9+/]+={0,2}:$`));
      const raw = Buffer.from(secret.split(':')[2]!, 'base64');
      expect(raw).toHaveLength(bytes + 4);
      // CRC-32 (zlib) of the key, little-endian, after the key
      expect(raw.readUInt32LE(bytes)).toBe(zlib.crc32(raw.subarray(0, bytes)) >>> 0);
      const back = parseDhchapSecret(secret);
      expect(back.hash).toBe(hash);
      expect(back.key.equals(raw.subarray(0, bytes))).toBe(true);
    }
    expect(generateDhchapSecret(1)).not.toBe(generateDhchapSecret(1));
  });

  it('matches a key and CRC computed by hand', () => {
    const key = Buffer.from('0123456789abcdef0123456789abcdef');
    expect(formatDhchapSecret(key, 1)).toBe(
      'DHHC-1:01:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWYOtVl3:',
    );
  });

  it('refuses a wrong CRC, length, version or hash id, or a length that does not suit the hash', () => {
    const good = generateDhchapSecret(1);
    const raw = Buffer.from(good.split(':')[2]!, 'base64');
    raw[0]! ^= 1;
    expect(() => parseDhchapSecret(`DHHC-1:01:${raw.toString('base64')}:`)).toThrow(
      /CRC does not match/,
    );
    expect(() =>
      parseDhchapSecret('DHHC-1:01:' + Buffer.alloc(20).toString('base64') + ':'),
    ).toThrow(/not 32, 48 or 64/);
    expect(() => parseDhchapSecret(good.replace('DHHC-1', 'DHHC-2'))).toThrow(/does not look like/);
    expect(() => parseDhchapSecret(good.replace(':01:', ':04:'))).toThrow(/does not look like/);
    expect(() => parseDhchapSecret(generateDhchapSecret(3).replace(':03:', ':01:'))).toThrow(
      /needs a 32-byte key/,
    );
  });
});
