import { describe, expect, it } from 'vitest';
import { StateMachine } from '../../../engine/src/host/state.js';

type S = 'a' | 'b' | 'c';
const table: Record<S, readonly S[]> = { a: [], b: ['a'], c: ['b', 'a'] };

describe('StateMachine', () => {
  it('allows only listed predecessors and reports changes', () => {
    const seen: string[] = [];
    const sm = new StateMachine<S>('thing', 'a', table, (n, p) => seen.push(`${p}>${n}`));
    sm.transition('b');
    expect(sm.state).toBe('b');
    expect(sm.is('a', 'b')).toBe(true);
    expect(() => sm.transition('b')).toThrow('thing: illegal state transition b -> b');
    expect(() => sm.transition('a')).toThrow(/b -> a/);
    sm.transition('c');
    expect(seen).toEqual(['a>b', 'b>c']);
  });
});
