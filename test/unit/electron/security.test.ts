import { describe, expect, it } from 'vitest';
import {
  CONTENT_SECURITY_POLICY,
  isOwnPage,
  isSafeExternalUrl,
  windowWebPreferences,
  withCsp,
} from '../../../electron/src/security.js';

describe('windowWebPreferences', () => {
  it('isolates and sandboxes the renderer, with no Node and web security on', () => {
    const prefs = windowWebPreferences('/app/dist/electron/preload.cjs');
    expect(prefs).toMatchObject({
      preload: '/app/dist/electron/preload.cjs',
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      nodeIntegrationInSubFrames: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      webviewTag: false,
    });
  });
});

describe('CSP', () => {
  it('allows only our own scripts and no network', () => {
    expect(CONTENT_SECURITY_POLICY).toContain("default-src 'none'");
    expect(CONTENT_SECURITY_POLICY).toContain("script-src 'self'");
    expect(CONTENT_SECURITY_POLICY).toContain("connect-src 'none'");
    expect(CONTENT_SECURITY_POLICY).not.toMatch(/unsafe-eval|unsafe-inline|https?:|\*/);
  });

  it('replaces whatever CSP a response carried', () => {
    const h = withCsp({
      'content-security-policy': ['default-src *'],
      'Content-Type': 'text/html',
    });
    expect(h).toEqual({
      'Content-Type': ['text/html'],
      'Content-Security-Policy': [CONTENT_SECURITY_POLICY],
    });
    expect(withCsp(undefined)).toEqual({ 'Content-Security-Policy': [CONTENT_SECURITY_POLICY] });
  });
});

describe('isSafeExternalUrl', () => {
  it.each([
    ['https://branchsan.example/docs', true],
    ['http://branchsan.example/', false],
    ['file:///etc/passwd', false],
    ['javascript:alert(1)', false],
    ['smb://server/share', false],
    ['https://user:pw@example.com/', false],
    ['not a url', false],
  ])('%s -> %s', (url, ok) => expect(isSafeExternalUrl(url)).toBe(ok));
});

describe('isOwnPage', () => {
  const own = 'app://branchsan/index.html';
  it.each([
    [own, true],
    [`${own}#/volumes`, true],
    [`${own}?x=1`, true],
    ['app://branchsan/other.html', false],
    ['app://other/index.html', false],
    ['app://branchsan:8080/index.html', false],
    ['app://user@branchsan/index.html', false],
    ['file:///opt/BranchSAN/resources/app.asar/dist/renderer/index.html', false],
    ['file:///index.html', false],
    ['https://branchsan/index.html', false],
    [undefined, false],
    ['', false],
  ])('%s -> %s', (url, ok) => expect(isOwnPage(url, own)).toBe(ok));
});
