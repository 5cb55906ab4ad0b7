/**
 * `npm start` (scripts/start.js) on a machine without the Electron binary, as here and
 * in CI: it runs the lab engine in the foreground and says where its console is, or,
 * when another program holds the console port, why the console does not listen yet.
 */
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, tempDir } from '../helpers/engine.js';
import { freePort } from '../helpers/linux-host.js';

function electronPresent(): boolean {
  try {
    const bin = createRequire(import.meta.url)('electron') as unknown;
    return typeof bin === 'string' && fs.existsSync(bin);
  } catch {
    return false;
  }
}

/**
 * `npm start` on the lab data directory `data` with the console on `consolePort`; its
 * stdout and stderr gathered together, until `marker` appears (or it exits: an error).
 */
async function startLab(data: string, consolePort: number, marker: string) {
  const p = spawn(process.execPath, [path.join(REPO_ROOT, 'scripts', 'start.js')], {
    env: { ...process.env, BRANCHSAN_DATA: data, BRANCHSAN_CONSOLE_PORT: String(consolePort) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  p.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  p.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
  const end = Date.now() + 30_000;
  while (!out.includes(marker)) {
    if (p.exitCode !== null || Date.now() > end) {
      p.kill('SIGINT');
      throw new Error(`no notice:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { p, out: () => out, exited };
}

describe.skipIf(electronPresent())('npm start without an Electron binary', () => {
  it('serves the lab engine, and says why its console does not listen when its port is taken', async () => {
    const port = await freePort();
    const squatter = net.createServer();
    await new Promise<void>((r) => squatter.listen(port, '127.0.0.1', r));
    const data = path.join(tempDir(), 'lab');
    try {
      const { p, out, exited } = await startLab(data, port, 'The console does not listen yet');
      try {
        expect(out()).toContain(`open the console at http://127.0.0.1:${port}/?token=`);
        expect(out()).toMatch(
          new RegExp(
            `The console does not listen yet: Cannot listen for the web console on 127\\.0\\.0\\.1:${port}: EADDRINUSE\\. .* set to a free port\\.`,
          ),
        );
        expect(fs.existsSync(path.join(data, 'branchsan.db'))).toBe(true);
      } finally {
        p.kill('SIGINT');
      }
      expect(await exited).toBe(0);
    } finally {
      await new Promise((r) => squatter.close(r));
    }
  }, 60_000);

  // Before: 'open the console at the URL in that engine's "engine ready" log line' (it has
  // none) and 'The console does not listen yet: The web console is not served: … The
  // engine keeps trying; or … BRANCHSAN_CONSOLE_PORT set to a free port.'
  it('says the console is not served, and what to run, when its password file cannot be used', async () => {
    const data = path.join(tempDir(), 'lab');
    const file = path.join(data, 'secrets', 'console-password');
    fs.mkdirSync(file, { recursive: true, mode: 0o700 });
    const { p, out, exited } = await startLab(data, 51523, 'Electron binary not installed');
    try {
      await new Promise((r) => setTimeout(r, 200)); // the rest of the notice
      const notice = out()
        .split('\n')
        .filter((l) => !l.startsWith('{'));
      expect(notice).toContain(
        `Electron binary not installed (ELECTRON_SKIP_BINARY_DOWNLOAD / offline machine). The web console is not served: The console password file ${file} is a directory, not a regular file. ` +
          `Run: rm -r ${file}, then set a new password with: branchsan passwd --data DIR. Once they are fixed, restart the engine: the console's files are read at its start only.`,
      );
      expect(out()).not.toContain('keeps trying');
      expect(out()).not.toContain('open the console at');
    } finally {
      p.kill('SIGINT');
    }
    expect(await exited).toBe(0);
  }, 60_000);
});
