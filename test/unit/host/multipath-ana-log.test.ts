/**
 * ANA log parsing and the state a namespace has on a path (host side, facts §7),
 * table driven: well-formed logs built with the target's encoder, hand-made malformed
 * ones, RGO logs, and the ANA status codes.
 */
import { describe, expect, it } from 'vitest';
import {
  anaLogLength,
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

  it('an empty log (no groups) parses', () => {
    expect(parseAnaLog(encodeAnaLog(0, [], false)).groups).toEqual([]);
  });
});

describe('anaStateOf', () => {
  const log = parseAnaLog(twoGroups);
  const rgo = parseAnaLog(
    encodeAnaLog(
      9,
      [
        { grpid: 1, chgcnt: 9, state: 0x0f, nsids: [1] },
        { grpid: 4, chgcnt: 2, state: 0x02, nsids: [3] },
      ],
      true,
    ),
  );
  const cases: [string, ReturnType<typeof parseAnaLog>, number, number, AnaPathState][] = [
    ['listed in group 1', log, 2, 1, 'optimized'],
    ['listed in group 4', log, 3, 4, 'inaccessible'],
    // The NSID list wins over a stale ANAGRPID from Identify.
    ['listed elsewhere than its ANAGRPID', log, 3, 1, 'inaccessible'],
    ['not listed anywhere', log, 9, 1, 'unknown'],
    ['RGO: by ANAGRPID', rgo, 1, 1, 'change'],
    ['RGO: other group', rgo, 7, 4, 'non-optimized'],
    ['RGO: group absent', rgo, 7, 3, 'unknown'],
  ];
  it.each(cases)('%s', (_what, l, nsid, grp, want) => {
    expect(anaStateOf(l, nsid, grp)).toBe(want);
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
