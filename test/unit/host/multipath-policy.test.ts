/**
 * Multipath decisions as tables: path usability, round-robin choice with the
 * non-optimized fallback, the retry outcome of every kind of completion, and the
 * namespace identity checks.
 */
import { describe, expect, it } from 'vitest';
import type { NamespaceIdentity } from '../../../engine/src/host/admin.js';
import type { AnaPathState } from '../../../engine/src/host/ana-log.js';
import type { ControllerState } from '../../../engine/src/host/controller.js';
import { HostError } from '../../../engine/src/host/errors.js';
import {
  choosePath,
  classifyOutcome,
  namespaceMismatch,
  namespaceProblem,
  noPathHint,
  pathUsable,
  type NamespaceView,
  type Outcome,
  type PathView,
} from '../../../engine/src/host/multipath-policy.js';
import { DNR, MORE, SC } from '../../../engine/src/protocol/status.js';
import { MAX_STATUS_RETRIES, statusRetryDelayMs } from '../../../engine/src/host/status-retry.js';

const path = (
  ana: AnaPathState,
  controller: ControllerState = 'live',
  verified = true,
  nsze = 1000,
) => ({ ana, controller, verified, nsze }) satisfies PathView;

describe('pathUsable', () => {
  const cases: [ControllerState, AnaPathState, boolean, boolean][] = [
    ['live', 'optimized', true, true],
    ['live', 'non-optimized', true, true],
    ['live', 'inaccessible', true, false],
    ['live', 'persistent-loss', true, false],
    ['live', 'change', true, false],
    ['live', 'unknown', true, false],
    ['live', 'optimized', false, false],
    ['recovering', 'optimized', true, false],
    ['connecting', 'optimized', true, false],
    ['dead', 'optimized', true, false],
    ['deleting', 'optimized', true, false],
    ['closed', 'optimized', true, false],
    ['new', 'optimized', true, false],
  ];
  it.each(cases)('controller %s, ANA %s, verified %s -> %s', (c, ana, v, want) => {
    expect(pathUsable(path(ana, c, v))).toBe(want);
  });
});

describe('choosePath', () => {
  const O = path('optimized');
  const N = path('non-optimized');
  const I = path('inaccessible');
  const deadO = path('optimized', 'dead');
  const cases: [string, PathView[], number[]][] = [
    // [what, paths, choices for cursor 0..3]
    ['single optimized', [O, N], [0, 0, 0, 0]],
    ['round robin among optimized', [O, N, O], [0, 2, 0, 2]],
    ['non-optimized only when no optimized is usable', [I, N], [1, 1, 1, 1]],
    ['dead optimized path falls back', [deadO, N, N], [1, 2, 1, 2]],
    ['nothing usable', [I, deadO, path('change')], [-1, -1, -1, -1]],
    ['empty', [], [-1, -1, -1, -1]],
    ['unverified optimized is skipped', [path('optimized', 'live', false), N], [1, 1, 1, 1]],
  ];
  it.each(cases)('%s', (_what, paths, want) => {
    expect([0, 1, 2, 3].map((k) => choosePath(paths, k))).toEqual(want);
  });

  // A path whose MDTS is smaller than the command (its limit was learnt after the command
  // was sized) is no candidate; one that has not said (0) takes anything.
  const small = { ...O, maxTransferBytes: 8192 };
  const big = { ...O, maxTransferBytes: 1 << 20 };
  it.each([
    ['skips the optimized path too small for it', [small, big], 65536, [1, 1, 1, 1]],
    ['falls back to a non-optimized path that takes it', [small, N], 65536, [1, 1, 1, 1]],
    ['none that takes it', [small], 65536, [-1, -1, -1, -1]],
    ['a command within every limit goes round robin', [small, big], 8192, [0, 1, 0, 1]],
  ] as [string, PathView[], number, number[]][])('%s', (_, paths, bytes, want) => {
    expect([0, 1, 2, 3].map((k) => choosePath(paths, k, bytes))).toEqual(want);
  });

  // A path whose node has not grown the volume yet (500 of 1000 blocks) gets only those.
  const behind = path('optimized', 'live', true, 500);
  const sized: [string, PathView[], number, number[]][] = [
    ['within every path: round robin', [behind, O], 500, [0, 1, 0, 1]],
    ['past the behind one: only the other', [behind, O], 501, [1, 1, 1, 1]],
    ['an optimized path behind: the non-optimized one', [behind, N], 800, [1, 1, 1, 1]],
    ['no path has the blocks', [behind, I], 800, [-1, -1, -1, -1]],
    ['no blocks (a flush): any path', [behind, N], 0, [0, 0, 0, 0]],
  ];
  it.each(sized)('%s', (_what, paths, end, want) => {
    expect([0, 1, 2, 3].map((k) => choosePath(paths, k, 0, end))).toEqual(want);
  });
});

describe('classifyOutcome', () => {
  const sent = new HostError('timeout', 'timed out', true);
  const lost = new HostError('transport', 'connection reset', true);
  const notSent = new HostError('not-connected', 'controller is recovering', false);
  const busy = new HostError('busy', 'wait queue full', false);
  const cases: [string, number, HostError | null, boolean, Outcome][] = [
    ['success', 0, null, true, 'complete'],
    ['3/02 inaccessible write', SC.ANA_INACCESSIBLE, null, true, 'retry'],
    ['3/01 persistent loss', SC.ANA_PERSISTENT_LOSS, null, true, 'retry'],
    ['3/03 transition', SC.ANA_TRANSITION, null, true, 'retry'],
    ['3/00 internal path error', SC.INTERNAL_PATH_ERROR, null, false, 'retry'],
    ['3/02 with DNR', SC.ANA_INACCESSIBLE | DNR, null, true, 'fail'],
    ['LBA out of range', SC.LBA_RANGE | DNR, null, true, 'fail'],
    // A status without DNR outside SCT 3: the same path again, as Linux retries it.
    ['media write fault, no DNR', SC.WRITE_FAULT, null, true, 'again'],
    ['generic internal error, no DNR', SC.INTERNAL, null, false, 'again'],
    ['namespace not ready', SC.NS_NOT_READY, null, true, 'again'],
    ['transient transport error', SC.TRANSIENT_TR_ERR, null, true, 'again'],
    [
      'namespace not ready with a retry delay (CRD 1)',
      SC.NS_NOT_READY | (1 << 11),
      null,
      true,
      'again',
    ],
    ['media write fault with DNR', SC.WRITE_FAULT | DNR, null, true, 'fail'],
    ['write timed out (maybe executed)', 0, sent, true, 'hold'],
    ['write lost with its connection', 0, lost, true, 'hold'],
    ['read timed out: harmless to resend', 0, sent, false, 'retry'],
    ['write never sent (not connected)', 0, notSent, true, 'retry'],
    ['write never sent (busy)', 0, busy, true, 'retry'],
  ];
  it.each(cases)('%s', (_what, status, error, mutating, want) => {
    expect(classifyOutcome(status, error, mutating)).toBe(want);
  });

  it('resends LBA Out of Range only from a path that had shown those blocks', () => {
    expect(classifyOutcome(SC.LBA_RANGE | DNR, null, true, 0, true)).toBe('retry');
    expect(classifyOutcome(SC.LBA_RANGE | DNR, null, true, 0, false)).toBe('fail');
    expect(classifyOutcome(SC.WRITE_FAULT | DNR, null, true, 0, true)).toBe('fail');
  });

  it('gives up on a retryable status after MAX_STATUS_RETRIES retries', () => {
    expect(classifyOutcome(SC.WRITE_FAULT, null, true, MAX_STATUS_RETRIES - 1)).toBe('again');
    expect(classifyOutcome(SC.WRITE_FAULT, null, true, MAX_STATUS_RETRIES)).toBe('fail');
    // Path statuses fail over however often (rule 1 bounds them by time, not count).
    expect(classifyOutcome(SC.ANA_TRANSITION, null, true, MAX_STATUS_RETRIES)).toBe('retry');
  });
});

describe('statusRetryDelayMs', () => {
  const crdt = [3, 10, 600]; // CRDT1..3 in 100 ms units
  it.each([
    ['CRD 0: at once', SC.NS_NOT_READY, 0],
    ['CRD 1: CRDT1', SC.NS_NOT_READY | (1 << 11), 300],
    ['CRD 2: CRDT2', SC.NS_NOT_READY | (2 << 11), 1000],
    ['CRD 3: CRDT3, MORE beside it', SC.INTERNAL | (3 << 11) | MORE, 60_000],
  ])('%s', (_what, status, want) => {
    expect(statusRetryDelayMs(status, crdt)).toBe(want);
  });

  it('backs off a path status without a CRD delay, doubling per retry', () => {
    expect([0, 1, 2, 3, 4].map((n) => statusRetryDelayMs(SC.ANA_TRANSITION, crdt, n))).toEqual([
      50, 100, 200, 400, 800,
    ]);
    expect(statusRetryDelayMs(SC.ANA_INACCESSIBLE | (2 << 11), crdt, 3)).toBe(1000);
    expect(statusRetryDelayMs(SC.NS_NOT_READY, crdt, 3)).toBe(0);
  });
});

function view(
  over: Partial<NamespaceIdentity> = {},
  ids: NamespaceView['ids'] = {},
): NamespaceView {
  const nguid = Buffer.from('0123456789abcdef0123456789abcdef', 'hex');
  const identity: NamespaceIdentity = {
    nsid: 1,
    nsze: 1000,
    ncap: 1000,
    nuse: 1000,
    lbads: 12,
    blockSize: 4096,
    ms: 0,
    nmic: 1,
    nsattr: 0,
    dlfeat: 0,
    anagrpid: 1,
    nguid,
    eui64: Buffer.alloc(8),
    active: true,
    raw: Buffer.alloc(0),
    ...over,
  };
  return { identity, ids: { nguid: identity.nguid, ...ids } };
}

describe('namespace identity checks', () => {
  const other = Buffer.from('ffeeddccbbaa99887766554433221100', 'hex');
  const problems: [string, NamespaceView, RegExp | null][] = [
    ['a good shared namespace', view(), null],
    ['inactive', view({ active: false }), /not active/],
    ['not shared', view({ nmic: 0 }), /not shared/],
    [
      'no ids at all',
      view({ nguid: Buffer.alloc(16) }, { nguid: undefined }),
      /no NGUID, EUI64 or UUID/,
    ],
    ['CNS 0 and CNS 3 disagree', view({}, { nguid: other }), /NGUID differs between/],
    ['only a UUID', view({ nguid: Buffer.alloc(16) }, { nguid: undefined, uuid: 'a-b' }), null],
  ];
  it.each(problems)('%s', (_what, v, want) => {
    const p = namespaceProblem(v);
    if (want) expect(p).toMatch(want);
    else expect(p).toBeNull();
  });

  const mismatches: [string, NamespaceView, RegExp | null][] = [
    ['identical', view(), null],
    ['NGUID', view({ nguid: other }), /^NGUID 0123.* vs ffee/],
    ['UUID', view({}, { uuid: '11111111-2222-3333-4444-555555555555' }), /^UUID none vs 1111/],
    ['EUI64', view({ eui64: Buffer.alloc(8, 1) }), /^EUI64/],
    ['CSI', view({}, { csi: 2 }), /^CSI 0 vs 2/],
    ['block size', view({ blockSize: 512, lbads: 9 }), /^block size 4096 vs 512/],
    ['size: smaller', view({ nsze: 500 }), /^size in blocks \(NSZE\) 1000 vs 500: smaller/],
    ['size: grown (the caller follows it)', view({ nsze: 2000 }), null],
  ];
  it.each(mismatches)('mismatch: %s', (_what, v, want) => {
    const m = namespaceMismatch(view(), v);
    if (want) expect(m).toMatch(want);
    else expect(m).toBeNull();
  });

  it('takes a path no smaller than it showed before, behind the namespace or not', () => {
    expect(namespaceMismatch(view(), view({ nsze: 500 }), 500)).toBeNull();
    expect(namespaceMismatch(view(), view({ nsze: 400 }), 500)).toMatch(/NSZE\) 500 vs 400/);
  });
});

describe('noPathHint', () => {
  it('explains the states the paths were in, once each, and says what to do', () => {
    const hint = noPathHint([
      { controller: 'live', ana: 'inaccessible', problem: null },
      { controller: 'dead', ana: 'unknown', problem: null },
      { controller: 'live', ana: 'inaccessible', problem: null },
      { controller: 'live', ana: 'unknown', problem: 'refused: namespace 1 is another disk' },
    ]);
    expect(hint).toMatch(/^; inaccessible: that node does not serve the namespace now/);
    expect(hint).toMatch(/; dead: its controller gave up reconnecting/);
    expect(hint.match(/inaccessible:/g)).toHaveLength(1);
    expect(hint).not.toMatch(/unknown:/); // the refused path's problem says itself
    expect(hint).toMatch(/check the target's event log .* raise noPathTimeoutMs/);
  });
});
