/**
 * The app://branchsan scheme that replaces file:// for the desktop window: real files
 * in a temporary bundle directory, real fetch Request/Response objects.
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { APP_INDEX_URL, appFilePath, serveAppRequest } from '../../../electron/src/app-protocol.js';
import { CONTENT_SECURITY_POLICY } from '../../../electron/src/security.js';

let top: string;
let root: string;

beforeAll(() => {
  top = mkdtempSync(join(tmpdir(), 'bsan-app-'));
  root = join(top, 'renderer');
  mkdirSync(join(root, 'assets'), { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>BranchSAN</title>');
  writeFileSync(join(root, 'assets', 'index-abc.js'), 'console.log(1)');
  writeFileSync(join(root, 'assets', 'index-abc.css'), 'body{}');
  writeFileSync(join(root, 'assets', 'index-abc.js.map'), '{}');
  writeFileSync(join(top, 'secret.html'), 'outside the bundle');
  mkdirSync(join(root, 'dir.html'));
  symlinkSync(join(top, 'secret.html'), join(root, 'assets', 'leak.html'));
  symlinkSync(top, join(root, 'up'));
  symlinkSync(join(root, 'index.html'), join(root, 'inside.html'));
});

afterAll(() => rmSync(top, { recursive: true, force: true }));

const get = (url: string, method = 'GET') => serveAppRequest(new Request(url, { method }), root);

describe('app:// scheme', () => {
  it('serves the bundle with its types, our CSP and nosniff', async () => {
    const index = await get(APP_INDEX_URL);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);
    expect(index.headers.get('x-content-type-options')).toBe('nosniff');
    expect(await index.text()).toContain('<title>BranchSAN</title>');
    const js = await get('app://branchsan/assets/index-abc.js');
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(await js.text()).toBe('console.log(1)');
    const css = await get('app://branchsan/assets/index-abc.css?v=1#x');
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
    const head = await get(APP_INDEX_URL, 'HEAD');
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it.each([
    ['a missing file', 'app://branchsan/nope.html'],
    ['a source map', 'app://branchsan/assets/index-abc.js.map'],
    ['a directory', 'app://branchsan/dir.html'],
    ['the bundle root', 'app://branchsan/'],
    ['dot segments', 'app://branchsan/../secret.html'],
    ['encoded dot segments', 'app://branchsan/%2e%2e/secret.html'],
    ['encoded slashes', 'app://branchsan/..%2fsecret.html'],
    ['encoded backslashes', 'app://branchsan/..%5csecret.html'],
    ['a NUL byte', 'app://branchsan/index.html%00.js'],
    ['broken percent-encoding', 'app://branchsan/%E0%A4%A.html'],
    ['another host', 'app://elsewhere/index.html'],
    ['another scheme', 'file:///etc/passwd'],
    ['a symbolic link out of the bundle', 'app://branchsan/assets/leak.html'],
    ['a path through a directory link out of the bundle', 'app://branchsan/up/secret.html'],
  ])('answers 404 for %s, revealing nothing', async (_what, url) => {
    const res = await get(url);
    expect(res.status).toBe(404);
    expect(await res.text()).toBe('not found');
  });

  it('follows a symbolic link that stays inside the bundle', async () => {
    const res = await get('app://branchsan/inside.html');
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('<title>BranchSAN</title>');
  });

  it('answers only GET and HEAD', async () => {
    const res = await get(APP_INDEX_URL, 'POST');
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('GET, HEAD');
  });

  it('maps URLs to files under the root only', () => {
    expect(appFilePath(APP_INDEX_URL, root)).toBe(join(root, 'index.html'));
    expect(appFilePath('app://branchsan/assets/index-abc.js', `${root}/`)).toBe(
      join(root, 'assets', 'index-abc.js'),
    );
    // a sibling directory whose name starts like the root's is outside it
    expect(appFilePath('app://branchsan/..%2frenderer-evil/x.html', root)).toBe(null);
    expect(appFilePath('not a url', root)).toBe(null);
  });
});
