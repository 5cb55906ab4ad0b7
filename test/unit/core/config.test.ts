/**
 * Target configuration: validation with readable messages, and nothing changed when
 * a request is refused.
 */
import { describe, expect, it } from 'vitest';
import { nqnProblem } from '../../../engine/src/core/nqn.js';
import { Target } from '../../../engine/src/core/target.js';
import { MemoryBackend } from '../../../engine/src/storage/memory.js';
import { DISC_NQN, HOSTNQN, NGUID, SUBNQN, makeTarget } from './helpers.js';

describe('NQN validation', () => {
  const good = [
    'nqn.2014-08.org.nvmexpress:uuid:6a0e8d6c-1b7a-4c4e-9b3e-0a1b2c3d4e5f',
    'nqn.2024-01.com.branchsan:vol1',
    'nqn.2024-12.io.example-corp.storage',
    'nqn.2024-01.com.example:a:b/c d',
  ];
  const bad: Array<[string, RegExp]> = [
    ['', /empty/],
    ['iqn.2024-01.com.example:x', /not of the form/],
    ['nqn.2024-13.com.example:x', /month 13/],
    ['nqn.24-01.com.example:x', /not of the form/],
    ['nqn.2024-01.-bad.com:x', /not of the form/],
    ['nqn.2014-08.org.nvmexpress:uuid:not-a-uuid', /not a UUID/],
    [`nqn.2024-01.com.example:${'x'.repeat(200)}`, /at most 223/],
    ['nqn.2024-01.com.example:a\u0001', /control characters/],
  ];
  it.each(good)('accepts %s', (nqn) => expect(nqnProblem(nqn)).toBeNull());
  it.each(bad)('rejects %j', (nqn, msg) => expect(nqnProblem(nqn)).toMatch(msg));
});

describe('Target configuration errors', () => {
  const backend = () => new MemoryBackend({ sizeBytes: 1 << 20 });
  const cases: Array<[string, (t: Target) => void, RegExp]> = [
    [
      'duplicate subsystem',
      (t) => t.addSubsystem({ nqn: SUBNQN, serial: 'S', model: 'M' }),
      /already exists/,
    ],
    [
      'discovery NQN as NVM subsystem',
      (t) => t.addSubsystem({ nqn: DISC_NQN, serial: 'S', model: 'M' }),
      /discovery NQN/,
    ],
    [
      'bad serial',
      (t) => t.addSubsystem({ nqn: 'nqn.2024-01.com.x:y', serial: 'é', model: 'M' }),
      /serial/,
    ],
    [
      'long model',
      (t) => t.addSubsystem({ nqn: 'nqn.2024-01.com.x:y', serial: 'S', model: 'M'.repeat(41) }),
      /model/,
    ],
    [
      'bad host NQN',
      (t) => t.addSubsystem({ nqn: 'nqn.2024-01.com.x:y', serial: 'S', model: 'M', hosts: ['h'] }),
      /host NQN/,
    ],
    [
      'namespace in unknown subsystem',
      (t) =>
        t.addNamespace('nqn.2024-01.com.x:nope', {
          nsid: 2,
          backend: backend(),
          nguid: 'aa'.repeat(16),
        }),
      /does not exist/,
    ],
    [
      'duplicate nsid',
      (t) => t.addNamespace(SUBNQN, { nsid: 1, backend: backend(), nguid: 'aa'.repeat(16) }),
      /already exists/,
    ],
    [
      'nsid 0',
      (t) => t.addNamespace(SUBNQN, { nsid: 0, backend: backend(), nguid: 'aa'.repeat(16) }),
      /out of range/,
    ],
    [
      'nsid beyond NN',
      (t) => t.addNamespace(SUBNQN, { nsid: 1025, backend: backend(), nguid: 'aa'.repeat(16) }),
      /out of range/,
    ],
    [
      'duplicate NGUID',
      (t) => t.addNamespace(SUBNQN, { nsid: 2, backend: backend(), nguid: NGUID }),
      /already used/,
    ],
    [
      'zero NGUID',
      (t) => t.addNamespace(SUBNQN, { nsid: 2, backend: backend(), nguid: '00'.repeat(16) }),
      /all zeroes/,
    ],
    [
      'short NGUID',
      (t) => t.addNamespace(SUBNQN, { nsid: 2, backend: backend(), nguid: 'abcd' }),
      /32 hex digits/,
    ],
    [
      'ANA group too big',
      (t) =>
        t.addNamespace(SUBNQN, {
          nsid: 2,
          backend: backend(),
          nguid: 'aa'.repeat(16),
          anagrpid: 33,
        }),
      /ANA group id 33/,
    ],
    [
      'duplicate port',
      (t) =>
        t.addPort({
          portId: 1,
          trtype: 'tcp',
          adrfam: 'ipv4',
          traddr: '10.0.0.1',
          trsvcid: '4420',
        }),
      /already exists/,
    ],
    ['unknown ANA state', (t) => t.setAnaState(1, 'sideways' as never), /Unknown ANA state/],
    ['remove unknown namespace', (t) => t.removeNamespace(SUBNQN, 9), /does not exist/],
  ];
  it.each(cases)('%s', (_n, act, msg) => {
    const { target } = makeTarget();
    expect(() => act(target)).toThrow(msg);
    expect(target.subsystemNqns()).toEqual([SUBNQN]);
  });

  it('rejects bad options', () => {
    expect(() => new Target({ cntlidMin: 0 })).toThrow(/CNTLID range/);
    expect(() => new Target({ cntlidMin: 0x8000, cntlidMax: 0xfff0 })).toThrow(/CNTLID range/);
    expect(() => new Target({ mqes: 15 })).toThrow(/mqes/);
    // MAXCMD (mqes + 1) must fit Identify Controller's 16 bits: before, 65535 was taken
    // and every Identify Controller then failed with Internal Error.
    expect(() => new Target({ mqes: 0xffff })).toThrow(/mqes must be 31\.\.65534/);
    expect(() => new Target({ mqes: 0xfffe })).not.toThrow();
  });

  it('refuses a subsystem whose ANA log could not be read in one transfer', () => {
    // Linux turns ANA off (no multipath failover by ANA state) when 16 + 32 x groups +
    // 4 x MNAN exceeds MDTS (1 MiB by default here).
    const { target } = makeTarget();
    const sub = (nqn: string, maxNamespaces: number) => ({
      nqn,
      serial: 'BIG',
      model: 'm',
      hosts: [HOSTNQN],
      maxNamespaces,
    });
    expect(() => target.addSubsystem(sub(`${SUBNQN}-big`, 1_000_000))).toThrow(
      /ANA log may reach 4001040 bytes, more than one transfer \(1048576 bytes\)/,
    );
    expect(target.subsystemNqns()).toEqual([SUBNQN]);
    target.addSubsystem(sub(`${SUBNQN}-fits`, (1048576 - 16 - 32 * 32) / 4));
  });
});
