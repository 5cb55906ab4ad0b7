/**
 * serve's session and lockout times (--session-idle, --session-max, --login-lockout) are
 * decimal seconds from 1 to a week. Before, Number() read 1e3 as 1000 s, 0x10 as 16 s,
 * and took 0.001 (a session that ends at once, a lockout that locks nothing).
 */
import { describe, expect, it } from 'vitest';
import { consoleOptionsFromFlags } from '../../../engine/src/service/console-access.js';

const flags = (v: string) => ({ 'session-idle': v });

describe('console session times', () => {
  it('are decimal seconds', () => {
    expect(consoleOptionsFromFlags('127.0.0.1', 0, flags('900')).sessions).toEqual({
      idleMs: 900_000,
    });
    expect(consoleOptionsFromFlags('127.0.0.1', 0, flags('1.5')).sessions).toEqual({
      idleMs: 1500,
    });
    expect(consoleOptionsFromFlags('127.0.0.1', 0, { 'login-lockout': '604800' }).throttle).toEqual(
      { lockoutMs: 604_800_000 },
    );
  });

  it('refuse exponents, hex, binary, below a second and above a week', () => {
    for (const v of [
      '1e3',
      '0x10',
      '0b11',
      '0.001',
      '0',
      '-5',
      ' 60',
      '60s',
      '604801',
      'Infinity',
    ]) {
      expect(() => consoleOptionsFromFlags('127.0.0.1', 0, flags(v)), v).toThrow(
        `serve: --session-idle must be a number of seconds from 1 to 604800 (a week), such as 900 or 1.5; not "${v}".`,
      );
    }
  });
});
