/**
 * The URL a person opens (the "engine ready" line's consoleUrl) carries the setup token
 * only while no admin password is set, which it learns from the password file. A file
 * that went bad since the console was built (a directory or named pipe put in its
 * place, a chmod) must not make asking for it throw: serve would report the start as
 * failed, print no "engine ready" line, and leave the engine running without its stop
 * signal handled (measured on a real engine whose console listen() was delayed).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../../engine/src/util/log.js';
import { loopbackConsole } from '../../helpers/console-server.js';

const cleanup: (() => unknown)[] = [];
afterEach(async () => {
  vi.useRealTimers();
  for (const f of cleanup.splice(0).reverse()) await f();
});

describe('web console URL', () => {
  it.each([
    ['a directory', (f: string) => fs.mkdirSync(f, { mode: 0o700 })],
    ['a named pipe', (f: string) => execFileSync('mkfifo', ['-m', '600', f])],
    ['a file others can read', (f: string) => fs.writeFileSync(f, 'x\n', { mode: 0o644 })],
  ])(
    'is the address without the token, not an exception, when %s is in the password file’s place',
    async (_, make) => {
      const top = fs.mkdtempSync(path.join(tmpdir(), 'bsan-console-url-'));
      cleanup.push(() => fs.rmSync(top, { recursive: true, force: true }));
      const { server, passwords } = loopbackConsole({
        root: top,
        dataDir: path.join(top, 'data'),
        port: 49000,
        log: createLogger({ sink: { write: () => undefined } }),
      });
      cleanup.push(() => server.close());
      expect(server.url).toBe('http://127.0.0.1:49000/?token=token'); // not listening: where it will
      await passwords.set('correct horse battery');
      expect(server.url).toBe('http://127.0.0.1:49000/');

      fs.rmSync(passwords.file);
      make(passwords.file);
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() + 2000); // past the second the file's reading is kept
      expect(() => passwords.current()).toThrow(passwords.file); // it did go bad
      expect(server.url).toBe('http://127.0.0.1:49000/');
    },
  );
});
