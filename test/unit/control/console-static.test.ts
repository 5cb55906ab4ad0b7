/**
 * The web console's static files: a real ConsoleServer on loopback serving a real
 * bundle directory, fetched over HTTP. Only the bundle is served: no path, encoded
 * dot, symbolic link or file type leads to another file of the machine (the engine
 * runs as root).
 */
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConsoleServer } from '../../../engine/src/control/console-server.js';
import { createLogger } from '../../../engine/src/util/log.js';
import { loopbackConsole } from '../../helpers/console-server.js';

let top: string;
let server: ConsoleServer;
let base: string;

beforeAll(async () => {
  top = mkdtempSync(join(tmpdir(), 'bsan-console-'));
  const root = join(top, 'renderer');
  mkdirSync(join(root, 'assets'), { recursive: true });
  writeFileSync(join(root, 'index.html'), '<!doctype html><title>BranchSAN</title>');
  writeFileSync(join(root, 'assets', 'index-abc.js'), 'console.log(1)');
  writeFileSync(join(top, 'secret.json'), '{"outside":"the bundle"}');
  writeFileSync(join(root, 'notes.txt'), 'a type the bundle never has');
  symlinkSync(join(top, 'secret.json'), join(root, 'assets', 'leak.json'));
  symlinkSync(top, join(root, 'up')); // a directory link out of the bundle
  symlinkSync(join(root, 'assets', 'index-abc.js'), join(root, 'inside.js'));
  const log = createLogger({ sink: { write: () => undefined } });
  ({ server } = loopbackConsole({ root, dataDir: join(top, 'data'), log }));
  await server.listen();
  base = server.baseUrl;
});

afterAll(async () => {
  await server.close();
  rmSync(top, { recursive: true, force: true });
});

describe('web console: static files', () => {
  it('serves the bundle with its types and headers', async () => {
    const index = await fetch(base);
    expect(index.status).toBe(200);
    expect(index.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(index.headers.get('content-security-policy')).toContain("default-src 'self'");
    expect(await index.text()).toContain('<title>BranchSAN</title>');
    const js = await fetch(`${base}assets/index-abc.js`);
    expect(js.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(await js.text()).toBe('console.log(1)');
    const head = await fetch(`${base}assets/index-abc.js`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe('14');
  });

  it('follows a symbolic link that stays inside the bundle', async () => {
    const res = await fetch(`${base}inside.js`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('console.log(1)');
  });

  it('answers 404 for a symbolic link out of the bundle, to a file or through a directory', async () => {
    for (const p of ['assets/leak.json', 'up/secret.json']) {
      const res = await fetch(base + p);
      expect(res.status, p).toBe(404);
      expect(await res.text(), p).not.toContain('outside');
    }
  });

  it('answers 404 for paths out of the bundle and for file types the bundle never has', async () => {
    for (const p of ['..%2fsecret.json', '%2e%2e/secret.json', 'notes.txt', 'assets']) {
      expect((await fetch(base + p)).status, p).toBe(404);
    }
    expect((await fetch(base, { method: 'POST' })).status).toBe(405);
  });
});
