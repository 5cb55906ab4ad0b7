/**
 * AnaGroups.hold: a group whose storage is out reports 'change' (back by itself) or
 * 'inaccessible' (closed) over a usable state set, and the state set once released; a
 * state that is not usable stays as set.
 */
import { describe, expect, it } from 'vitest';
import { AnaGroups } from '../../../engine/src/core/ana.js';

describe('AnaGroups.hold', () => {
  it("reports 'change' over the state set while held, and that state once released", () => {
    const ana = new AnaGroups(4);
    ana.ensure(2);
    const count = ana.chgcnt;
    expect(ana.hold(2, 'change')).toBe(true);
    expect(ana.state(2)).toBe('change');
    expect(ana.chgcnt).toBe(count + 1);
    expect(ana.hold(2, 'change')).toBe(false); // nothing new: no event
    // set while held: reported once released
    expect(ana.set(2, 'non-optimized')).toBe(false);
    expect(ana.state(2)).toBe('change');
    expect(ana.hold(2, null)).toBe(true);
    expect(ana.state(2)).toBe('non-optimized');
    expect(ana.state(1)).toBe('optimized');
  });

  it('leaves a group set inaccessible or persistent-loss as set: hosts use other paths', () => {
    const ana = new AnaGroups(4);
    ana.set(3, 'inaccessible');
    expect(ana.hold(3, 'change')).toBe(false);
    expect(ana.state(3)).toBe('inaccessible');
    expect(ana.set(3, 'optimized')).toBe(true);
    expect(ana.state(3)).toBe('change'); // usable now, and still held
    expect(ana.set(3, 'persistent-loss')).toBe(true);
    expect(ana.state(3)).toBe('persistent-loss');
    expect(ana.hold(3, null)).toBe(false);
  });

  it("reports 'inaccessible' while its storage is closed, over a usable state or 'change'", () => {
    const ana = new AnaGroups(4);
    ana.ensure(2);
    expect(ana.hold(2, 'change')).toBe(true);
    expect(ana.hold(2, 'inaccessible')).toBe(true);
    expect(ana.state(2)).toBe('inaccessible');
    expect(ana.set(2, 'change')).toBe(false); // the owner's failover: still closed here
    expect(ana.state(2)).toBe('inaccessible');
    expect(ana.set(2, 'persistent-loss')).toBe(true);
    expect(ana.state(2)).toBe('persistent-loss');
    expect(ana.set(2, 'optimized')).toBe(true);
    expect(ana.hold(2, null)).toBe(true);
    expect(ana.state(2)).toBe('optimized');
  });
});
