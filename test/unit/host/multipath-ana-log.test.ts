/**
 * ANA log parsing and the state a namespace has on a path (host side, facts §7),
 * table driven: well-formed logs built with the target's encoder, hand-made malformed
 * ones, RGO logs, and the ANA status codes.
 */
import { describe, expect, it } from 'vitest';
import {
  anaLogLength,
  anaLogUsedLength,
  anaStateOf,
  anaStateOfStatus,
  parseAnaLog,
  type AnaPathState,
} from '../../../engine/src/host/ana-log.js';
import { encodeAnaLog } from '../../../engine/src/protocol/logpages.js';
import { DNR, SC } from '../../../engine/src/protocol/status.js';

const twoGroups = encodeAnaLog(
  7,
  [
    { grpid: 1, chgcnt: 3, state: 0x01, nsids: [1, 2, 5] },
    { grpid: 4, chgcnt: 7, state: 0x03, nsids: [3] },
  ],
  false,
);

describe('parseAnaLog', () => {
  it('reads header, groups, states and NSID lists', () => {
    const log = parseAnaLog(twoGroups);
    expect(log.chgcnt).toBe(7n);
    expect(log.groups).toEqual([
      { anagrpid: 1, chgcnt: 3n, state: 'optimized', code: 1, nsids: [1, 2, 5] },
      { anagrpid: 4, chgcnt: 7n, state: 'inaccessible', code: 3, nsids: [3] },
    ]);
  });

  it.each([
    [0x01, 'optimized'],
    [0x02, 'non-optimized'],
    [0x03, 'inaccessible'],
    [0x04, 'persistent-loss'],
    [0x0f, 'change'],
    [0x05, 'unknown'],
    [0x00, 'unknown'],
  ] as [number, AnaPathState][])('state code 0x%s is %s', (code, state) => {
    const b = encodeAnaLog(1, [{ grpid: 2, chgcnt: 1, state: code, nsids: [1] }], false);
    expect(parseAnaLog(b).groups[0]!.state).toBe(state);
  });

  it('ignores the reserved upper STATE bits and trailing zero padding', () => {
    const b = Buffer.concat([
      encodeAnaLog(1, [{ grpid: 2, chgcnt: 1, state: 2, nsids: [1] }], false),
      Buffer.alloc(4096),
    ]);
    b[16 + 16] = 0xf2; // bits 7:4 reserved
    expect(parseAnaLog(b).groups[0]!.state).toBe('non-optimized');
  });

  const truncated: [string, Buffer, RegExp][] = [
    ['shorter than the header', Buffer.alloc(8), /header needs 16/],
    ['a group descriptor cut off', twoGroups.subarray(0, 16 + 20), /group 1 of 2.*runs past/],
    ['an NSID list cut off', twoGroups.subarray(0, 16 + 32 + 8), /group 1 lists 3 NSIDs past/],
    [
      'ANAGRPID 0',
      encodeAnaLog(1, [{ grpid: 0, chgcnt: 0, state: 1, nsids: [] }], false),
      /ANAGRPID 0/,
    ],
  ];
  it.each(truncated)('refuses a log with %s', (_what, b, msg) => {
    expect(() => parseAnaLog(b)).toThrow(msg);
  });

  it('refuses a group above the controller ANAGRPMAX, when given', () => {
    expect(() => parseAnaLog(twoGroups, 3)).toThrow(/names group 4, above .* ANAGRPMAX 3/);
    expect(parseAnaLog(twoGroups, 4).groups).toHaveLength(2);
  });

  it('refuses a log that lists one namespace in two groups', () => {
    const b = encodeAnaLog(
      2,
      [
        { grpid: 1, chgcnt: 1, state: 0x03, nsids: [1, 2] },
        { grpid: 2, chgcnt: 2, state: 0x01, nsids: [2] },
      ],
      false,
    );
    expect(() => parseAnaLog(b)).toThrow(/lists namespace 2 in groups 1 and 2/);
  });

  it('an empty log (no groups) parses', () => {
    expect(parseAnaLog(encodeAnaLog(0, [], false)).groups).toEqual([]);
  });
});

describe('anaStateOf', () => {
  const log = parseAnaLog(twoGroups);
  // Group 1 has no NSID list (as a log read with RGO would have): namespace 1 is not in
  // it for that, even if Identify Namespace names group 1.
  const unlisted = parseAnaLog(
    encodeAnaLog(
      9,
      [
        { grpid: 1, chgcnt: 9, state: 0x01, nsids: [] },
        { grpid: 4, chgcnt: 2, state: 0x02, nsids: [3] },
      ],
      false,
    ),
  );
  const cases: [string, ReturnType<typeof parseAnaLog>, number, AnaPathState][] = [
    ['listed in group 1', log, 2, 'optimized'],
    ['listed in group 4', log, 3, 'inaccessible'],
    ['not listed anywhere', log, 9, 'unknown'],
    ['not listed, its group listing no NSIDs', unlisted, 1, 'unknown'],
    ['listed next to a group with no NSIDs', unlisted, 3, 'non-optimized'],
  ];
  it.each(cases)('%s', (_what, l, nsid, want) => {
    expect(anaStateOf(l, nsid)).toBe(want);
  });
});

describe('anaStateOfStatus', () => {
  it.each([
    [SC.ANA_PERSISTENT_LOSS, 'persistent-loss'],
    [SC.ANA_INACCESSIBLE, 'inaccessible'],
    [SC.ANA_TRANSITION, 'change'],
    [SC.ANA_INACCESSIBLE | DNR, 'inaccessible'],
    [SC.INTERNAL_PATH_ERROR, null],
    [SC.LBA_RANGE, null],
    [0, null],
  ] as [number, AnaPathState | null][])('status 0x%s -> %s', (status, want) => {
    expect(anaStateOfStatus(status)).toBe(want);
  });

  it('sizes the whole log as Linux does', () => {
    expect(anaLogLength(32, 1024)).toBe(16 + 32 * 32 + 1024 * 4);
  });
});

describe('anaLogUsedLength', () => {
  // Header 16, group 1: 32 + 3 NSIDs, group 4: 32 + 1 NSID.
  const used = 16 + 32 + 12 + 32 + 4;

  it('is where the last group ends, padding or not', () => {
    expect(anaLogUsedLength(twoGroups)).toBe(used);
    expect(anaLogUsedLength(Buffer.concat([twoGroups, Buffer.alloc(4096)]))).toBe(used);
  });

  it('is null while the bytes end before a group descriptor does', () => {
    for (const n of [0, 8, 16, 16 + 31, 16 + 32 + 12 + 31]) {
      expect(anaLogUsedLength(twoGroups.subarray(0, n))).toBeNull();
    }
    // The last group's descriptor is in: its NSID list's length is known.
    expect(anaLogUsedLength(twoGroups.subarray(0, 16 + 32 + 12 + 32))).toBe(used);
  });
});
