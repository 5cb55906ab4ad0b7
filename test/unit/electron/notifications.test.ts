import { describe, expect, it } from 'vitest';
import type { Alert, ConnectionState } from '../../../contract/api.js';
import {
  AlertNotifier,
  ConnectionNotifier,
  forDesktop,
} from '../../../electron/src/notifications.js';
import { threadsDownAlert } from '../renderer/support/fixtures.js';

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

describe('AlertNotifier', () => {
  const alert = (o: Partial<Alert> = {}): Alert => threadsDownAlert({ raisedAt: 1_000, ...o });

  it('shows a raised alert of warning and above once, with its severity and what to do', () => {
    const n = new AlertNotifier();
    expect(n.raised(alert())).toEqual({
      title: 'Critical: Volume vol1 (namespace 1) is down: its storage threads failed',
      body: 'No new threads serve it yet, so its I/O fails and hosts keep retrying.',
    });
    expect(n.raised(alert())).toBeUndefined(); // the same raise again (a replay)
    // the same pair escalating, or raised again later, is news
    expect(n.raised(alert({ severity: 'error', title: 'Storage threads failed' }))?.title).toBe(
      'Error: Storage threads failed',
    );
    expect(n.raised(alert({ raisedAt: 9_000 }))?.title).toMatch(/^Critical: /);
    // an unstored one (id 0) is shown too
    expect(n.raised(alert({ id: 0, subject: '/data', rule: 'capacity' }))).toBeDefined();
  });

  it('keeps info alerts and already cleared ones out of the notifications', () => {
    const n = new AlertNotifier();
    expect(n.raised(alert({ severity: 'info' }))).toBeUndefined();
    expect(n.raised(alert({ clearedAt: 2_000 }))).toBeUndefined();
    expect(n.raised(alert({ severity: 'warning' }))?.title).toMatch(/^Warning: /);
  });
});

describe('what reaches the desktop', () => {
  it('ignores a pushed raise that is not an alert, instead of throwing in main', () => {
    const n = new AlertNotifier();
    for (const bad of [null, undefined, 7, 'alert', {}, { severity: 'critical' }])
      expect(n.raised(bad)).toBeUndefined();
  });

  // A host on the network names itself (its NQN) and that name reaches alert texts;
  // a Linux notification server renders the body as markup.
  it('escapes markup in the body on Linux, where the body is markup; the title is plain text', () => {
    const hostile = {
      title: 'Warning: Host nqn.x:<b>a</b> disconnected',
      body: 'Host nqn.x:<a href="https://evil.example">Re-authenticate</a> & more',
    };
    expect(forDesktop(hostile, 'linux')).toEqual({
      title: hostile.title,
      body: 'Host nqn.x:&lt;a href="https://evil.example"&gt;Re-authenticate&lt;/a&gt; &amp; more',
    });
    expect(forDesktop(hostile, 'win32')).toEqual(hostile);
    expect(forDesktop(hostile, 'darwin')).toEqual(hostile);
  });
});
