/**
 * The console's TLS key or certificate file the engine cannot use, on a real engine
 * process started with the console's TLS on: the start is refused with what happened
 * and what to run, as for the other secret files (service/secrets.ts). A named pipe in
 * the key's place used to hold the engine's thread in open() for good (SIGTERM too);
 * a file of another owner gave the raw EACCES, with a hint to run the command as root.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { killStarted, start } from '../helpers/cli-process.js';
import { startEngine, tempDir } from '../helpers/engine.js';

const NOBODY = { uid: 65534, gid: 65534 };
const root = process.getuid?.() === 0;
const dirs: string[] = [];

afterEach(() => killStarted());
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** `serve --data DATA` with these: the console on, over TLS. */
const flags = (data: string) => [
  ...['--socket', path.join(data, 'engine.sock')],
  ...['--console-port', '0', '--console-tls', 'on'],
];
const asNobody = (data: string) => startEngine({ dataDir: data, user: NOBODY, args: flags(data) });

describe('a console TLS file the engine cannot use', () => {
  it('refuses the start at once when a named pipe is in the key file’s place', async () => {
    const data = tempDir();
    dirs.push(data);
    const key = path.join(data, 'secrets', 'console-tls.key');
    fs.mkdirSync(path.dirname(key), { mode: 0o700 });
    execFileSync('mkfifo', ['-m', '600', key]);
    const r = await start(['serve', '--data', data, ...flags(data)], 15_000).exited;
    expect(r.timedOut).toBe(false);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(
      `The secret ${key} is a special file (a named pipe, socket or device), not a regular file.`,
    );
    expect(r.stderr).toContain(
      `Run: rm -r ${key}, then restart the engine: it makes a new certificate`,
    );
  });

  it.skipIf(!root)(
    'refuses the start with the owner, the mode and the chown to run; starts with the same certificate once it is the engine’s',
    async () => {
      // not under the run's TMPDIR, which only root may enter
      const base = fs.mkdtempSync('/dev/shm/branchsan-tls-access-');
      dirs.push(base);
      fs.chmodSync(base, 0o755);
      const data = path.join(base, 'data');
      fs.mkdirSync(data);
      fs.chownSync(data, NOBODY.uid, NOBODY.gid);
      const first = await asNobody(data);
      await first.stop();
      const made = first.lines.find((l) => l.fingerprint256 !== undefined)!;
      const key = path.join(data, 'secrets', 'console-tls.key');
      fs.chownSync(key, 0, 0);

      const refused = await asNobody(data)
        .then(async (e) => {
          await e.stop();
          return 'started';
        })
        .catch((err: Error) => err.message);
      expect(refused).toContain(
        `The secret ${key} cannot be read by the engine (EACCES: it belongs to uid 0 with mode 600, and the engine runs as nobody, uid 65534).`,
      );
      expect(refused).toContain(
        `Run as root: chown nobody ${key} && chmod 600 ${key}  (or delete it and restart the engine`,
      );

      fs.chownSync(key, NOBODY.uid, NOBODY.gid);
      const again = await asNobody(data);
      await again.stop();
      const kept = again.lines.find((l) => l.msg === 'console TLS certificate');
      expect(kept?.fingerprint256).toBe(made.fingerprint256);
    },
  );
});
