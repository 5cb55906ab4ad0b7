// @vitest-environment happy-dom
import { beforeEach, describe, expect, it } from 'vitest';
import { isUsableToken, takeAccessToken } from '../../../../renderer/src/api/token.js';

describe('takeAccessToken', () => {
  beforeEach(() => {
    window.sessionStorage.clear();
    window.history.replaceState(null, '', '/');
  });

  it('takes ?token= from the URL, keeps it for the tab and removes it from the address bar', () => {
    window.history.replaceState(null, '', '/?token=s3cr3t&lang=de#/status');
    const token = takeAccessToken(window.location, window.history, window.sessionStorage);
    expect(token).toBe('s3cr3t');
    expect(window.location.search).toBe('?lang=de');
    expect(window.location.hash).toBe('#/status');
    expect(window.location.href).not.toContain('s3cr3t');

    // A reload of the clean URL still finds it.
    expect(takeAccessToken(window.location, window.history, window.sessionStorage)).toBe('s3cr3t');
  });

  it('prefers a token in the URL over an older remembered one', () => {
    window.sessionStorage.setItem('branchsan.console.token', 'old');
    window.history.replaceState(null, '', '/?token=new');
    expect(takeAccessToken(window.location, window.history, window.sessionStorage)).toBe('new');
    expect(window.location.href).toBe(`${window.location.origin}/`);
  });

  it('returns null when there is none, and copes without storage', () => {
    expect(takeAccessToken(window.location, window.history, window.sessionStorage)).toBeNull();
    const broken = {
      getItem: () => {
        throw new Error('denied');
      },
      setItem: () => {
        throw new Error('denied');
      },
    };
    expect(takeAccessToken(window.location, window.history, broken)).toBeNull();
    window.history.replaceState(null, '', '/?token=abc');
    expect(takeAccessToken(window.location, window.history, broken)).toBe('abc');
  });
});

describe('isUsableToken', () => {
  it('accepts what a WebSocket subprotocol name can carry', () => {
    expect(isUsableToken('Zm9v_YmFy-0.9~')).toBe(true);
    expect(isUsableToken('')).toBe(false);
    expect(isUsableToken('a b')).toBe(false);
    expect(isUsableToken('a,b')).toBe(false);
    expect(isUsableToken('a/b')).toBe(false);
  });
});
