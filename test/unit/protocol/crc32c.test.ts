import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import {
  crc32c,
  crc32cNativeAvailable,
  crc32cSoftware,
  useCrc32c,
} from '../../../engine/src/protocol/crc32c.js';

// Check values: the classic "123456789" and the iSCSI vectors of RFC 3720 B.4.
const VECTORS: [string, Buffer, number][] = [
  ['empty', Buffer.alloc(0), 0],
  ['123456789', Buffer.from('123456789'), 0xe3069283],
  ['32 zero bytes', Buffer.alloc(32, 0), 0x8a9136aa],
  ['32 0xff bytes', Buffer.alloc(32, 0xff), 0x62a8ab43],
  ['0..31', Buffer.from(Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e],
  ['31..0', Buffer.from(Array.from({ length: 32 }, (_, i) => 31 - i)), 0x113fdb5c],
];

describe('crc32c', () => {
  afterEach(() => {
    useCrc32c('native');
  });

  it('loads the native addon in this environment', () => {
    expect(crc32cNativeAvailable).toBe(true);
    expect(useCrc32c('native')).toBe('native');
  });

  for (const kind of ['native', 'software'] as const) {
    it.each(VECTORS)(`${kind}: %s`, (_name, data, want) => {
      useCrc32c(kind);
      expect(crc32c(data)).toBe(want);
    });
  }

  it('can be forced to the software fallback', () => {
    expect(useCrc32c('software')).toBe('software');
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });

  it('native and software agree on random data, lengths and unaligned views', () => {
    const big = randomBytes(70_000);
    for (let i = 0; i < 300; i++) {
      const start = Math.floor(Math.random() * 64);
      const len = i < 40 ? i : Math.floor(Math.random() * (big.length - start));
      const view = big.subarray(start, start + len);
      useCrc32c('native');
      const a = crc32c(view);
      expect(crc32cSoftware(view)).toBe(a);
    }
  });

  it('chains: crc32c(b, crc32c(a)) equals crc32c(a ++ b) in both implementations', () => {
    const data = randomBytes(5000);
    for (const kind of ['native', 'software'] as const) {
      useCrc32c(kind);
      const whole = crc32c(data);
      for (const cut of [0, 1, 7, 8, 9, 4095, 4999, 5000]) {
        expect(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut)))).toBe(whole);
      }
    }
  });
});
