import { describe, expect, it } from 'vitest';
import {
  fillDeallocate,
  fillGetLogPage,
  fillPropertyGet,
  fillRw,
  fillWriteZeroes,
  fillSetFeatures,
} from '../../../engine/src/host/commands.js';
import { NvmeRequest } from '../../../engine/src/host/request.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';

describe('command fillers', () => {
  it('packs Get Log Page NUMD, LSP, RAE and LPO', () => {
    const r = fillGetLogPage(new NvmeRequest(), {
      lid: 0x70,
      length: 0x40004 * 4,
      lsp: 1,
      rae: true,
      lpo: 2 ** 32 + 1024,
      lsi: 9,
    });
    const numd = 0x40004 - 1;
    expect(r.cdw10 >>> 0).toBe((0x70 | (1 << 8) | (1 << 15) | ((numd & 0xffff) << 16)) >>> 0);
    expect(r.cdw11).toBe((numd >>> 16) | (9 << 16));
    expect(r.cdw12).toBe(1024);
    expect(r.cdw13).toBe(1);
    expect(r.readLength).toBe(0x40004 * 4);
    expect(() => fillGetLogPage(new NvmeRequest(), { lid: 2, length: 6 })).toThrow(RangeError);
  });

  it('packs Read/Write SLBA, 0-based NLB and FUA', () => {
    const r = fillRw(new NvmeRequest(), IO.WRITE, 1, 2 ** 40 + 3, 65536, true);
    expect(r.cdw10).toBe(3);
    expect(r.cdw11).toBe(2 ** 8);
    expect(r.cdw12 >>> 0).toBe((0xffff | (1 << 30)) >>> 0);
    expect(() => fillRw(new NvmeRequest(), IO.READ, 1, 0, 65537)).toThrow(RangeError);
    expect(() => fillRw(new NvmeRequest(), IO.READ, 1, 0, 0)).toThrow(RangeError);
  });

  it('packs Write Zeroes flags and DSM ranges', () => {
    const wz = fillWriteZeroes(new NvmeRequest(), 1, 0, 8, { deac: true, fua: true });
    expect(wz.cdw12 >>> 0).toBe((7 | (1 << 25) | (1 << 30)) >>> 0);
    const d = fillDeallocate(new NvmeRequest(), 1, [
      { slba: 10, nlb: 8 },
      { slba: 2 ** 33, nlb: 1 },
    ]);
    expect(d.cdw10).toBe(1);
    expect(d.cdw11).toBe(4);
    expect(d.dataOut!.readUInt32LE(4)).toBe(8);
    expect(d.dataOut!.readUInt32LE(8)).toBe(10);
    expect(d.dataOut!.readUInt32LE(16 + 12)).toBe(2);
  });

  it('refuses an SLBA or DSM range the command would not carry as given', () => {
    // Before: split into the SLBA dwords, 1.9 addressed LBA 1 and NaN LBA 0, and a DSM
    // range of -1 blocks became 2^32-1 of them.
    for (const slba of [1.9, Number.NaN, -1, Infinity, 2 ** 53]) {
      expect(() => fillRw(new NvmeRequest(), IO.WRITE, 1, slba, 1)).toThrow(
        /starting LBA must be a whole number/,
      );
      expect(() => fillWriteZeroes(new NvmeRequest(), 1, slba, 1)).toThrow(RangeError);
      expect(() => fillDeallocate(new NvmeRequest(), 1, [{ slba, nlb: 1 }])).toThrow(
        /range 0's starting LBA/,
      );
    }
    for (const nlb of [0, -1, 1.5, Number.NaN, 2 ** 32]) {
      const ranges = [
        { slba: 0, nlb: 1 },
        { slba: 8, nlb },
      ];
      expect(() => fillDeallocate(new NvmeRequest(), 1, ranges)).toThrow(
        /range 1's block count must be 1\.\.4294967295/,
      );
    }
    const last = fillDeallocate(new NvmeRequest(), 1, [{ slba: 2 ** 53 - 1, nlb: 2 ** 32 - 1 }]);
    expect(last.dataOut!.readUInt32LE(4)).toBe(2 ** 32 - 1);
    expect(last.dataOut!.readBigUInt64LE(8)).toBe(2n ** 53n - 1n);
  });

  it('fills fabrics and feature commands', () => {
    const p = fillPropertyGet(new NvmeRequest(), 0, true);
    expect(p.isFabrics).toBe(true);
    expect(p.cdw10).toBe(1);
    const s = fillSetFeatures(new NvmeRequest(), 0x0b, { cdw11: 0x900, save: true });
    expect(s.cdw10 >>> 0).toBe(0x8000000b);
    expect(s.cdw11).toBe(0x900);
  });
});
