/**
 * The blocks a multipath command names (Command.end), which decide the paths it may go
 * to while a node has not grown the volume yet.
 */
import { describe, expect, it } from 'vitest';
import {
  fillDeallocate,
  fillFlush,
  fillRw,
  fillWriteZeroes,
} from '../../../engine/src/host/commands.js';
import { Command } from '../../../engine/src/host/multipath-command.js';
import { NvmeRequest } from '../../../engine/src/host/request.js';
import { IO } from '../../../engine/src/protocol/opcodes.js';

const end = (req: NvmeRequest) => new Command(req, 'x', false, -1, () => {}).end;

describe('Command.end', () => {
  it('is SLBA + NLB for reads, writes, compares and write zeroes', () => {
    expect(end(fillRw(new NvmeRequest(), IO.READ, 1, 10, 8))).toBe(18);
    expect(end(fillRw(new NvmeRequest(), IO.WRITE, 1, 2 ** 40, 1, true))).toBe(2 ** 40 + 1);
    expect(end(fillRw(new NvmeRequest(), IO.COMPARE, 1, 0, 65536))).toBe(65536);
    const flags = { deac: false, fua: false };
    expect(end(fillWriteZeroes(new NvmeRequest(), 1, 4095, 1, flags))).toBe(4096);
  });

  it("is a deallocate's furthest range end, whatever their order", () => {
    const ranges = [
      { slba: 5000, nlb: 8 },
      { slba: 2 ** 33, nlb: 2 },
      { slba: 0, nlb: 1 },
    ];
    expect(end(fillDeallocate(new NvmeRequest(), 1, ranges))).toBe(2 ** 33 + 2);
  });

  it('is 0 for a flush, which names no blocks', () => {
    expect(end(fillFlush(new NvmeRequest(), 1))).toBe(0);
  });
});
