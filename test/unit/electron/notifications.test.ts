import { describe, expect, it } from 'vitest';
import type { ConnectionState } from '../../../contract/api.js';
import { ConnectionNotifier } from '../../../electron/src/notifications.js';

function run(states: ConnectionState[]): (string | undefined)[] {
  const n = new ConnectionNotifier();
  return states.map((s) => n.next(s, 'the engine closed the connection')?.title);
}

describe('ConnectionNotifier', () => {
  it('is silent until the first connection', () => {
    expect(run(['connecting', 'disconnected', 'connecting', 'connected'])).toEqual([
      undefined,
      undefined,
      undefined,
      undefined,
    ]);
  });

  it('says "lost" once per outage and "reconnected" when it ends', () => {
    expect(
      run([
        'connecting',
        'connected',
        'disconnected',
        'connecting',
        'disconnected',
        'connecting',
        'connected',
        'disconnected',
      ]),
    ).toEqual([
      undefined,
      undefined,
      'Lost the connection to the BranchSAN engine',
      undefined,
      undefined,
      undefined,
      'BranchSAN engine reconnected',
      'Lost the connection to the BranchSAN engine',
    ]);
  });

  it('puts the reason first in the body', () => {
    const n = new ConnectionNotifier();
    n.next('connected');
    expect(n.next('disconnected', 'nothing listens on /run/branchsan/engine.sock')?.body).toMatch(
      /^Nothing listens on/,
    );
  });
});
