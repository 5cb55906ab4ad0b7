/**
 * Redacting a large log for a diagnostics bundle in pieces: the event loop runs
 * between them (hosts' I/O goes on), and the result is exactly what redacting it in one
 * go gives, private key blocks included, wherever the pieces end.
 */
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Redactor } from '../../../engine/src/service/diagnostics.js';
import { tempDir } from '../../helpers/engine.js';

describe('diagnostics redaction of a large log', () => {
  it('lets the event loop run between pieces and redacts exactly as in one go', async () => {
    const dataDir = tempDir('branchsan-redact-');
    fs.mkdirSync(path.join(dataDir, 'secrets'));
    const token = 'tok-4f8a9c2e7b1d3a6f';
    fs.writeFileSync(path.join(dataDir, 'secrets', 'console-token'), token);
    const r = new Redactor(dataDir);
    const pem = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      .privateKey.export({ type: 'pkcs8', format: 'pem' })
      .toString()
      .trim();
    // ~3 MiB of JSON log lines, with secrets sprinkled in, a private key block every
    // ~200 KiB, and one that starts just before the first piece (256 KiB) ends
    const lines: string[] = [];
    let size = 0;
    let straddled = false;
    for (let i = 0; size < 3 << 20; i++) {
      const straddle = !straddled && size > (256 << 10) - 100;
      if (straddle) straddled = true;
      const line =
        straddle || i % 997 === 0
          ? `key material follows\n${pem}`
          : JSON.stringify({
              level: 'info',
              msg: `request ${i} ${i % 13 === 0 ? `carried ${token}` : 'ok'}`,
              password: i % 17 === 0 ? 'hunter2' : undefined,
              url: `http://host/x?token=${i}`,
            });
      lines.push(line);
      size += line.length + 1;
    }
    const log = lines.join('\n') + '\n';

    let turns = 0;
    let spinning = true;
    const spin = (): void => {
      if (!spinning) return;
      turns++;
      setImmediate(spin);
    };
    spin();
    const stepped = await r.textInSteps(log);
    spinning = false;

    // Before: one call, and no other work in between (0 turns).
    expect(turns).toBeGreaterThan(8);
    expect(stepped).toBe(r.text(log));
    expect(stepped).not.toContain(token);
    expect(stepped).not.toContain('hunter2');
    expect(stepped).not.toContain('PRIVATE KEY-----\n');
    expect(stepped.split('[REDACTED PRIVATE KEY]').length - 1).toBe(
      log.split('-----BEGIN PRIVATE KEY-----').length - 1,
    );
  });
});

describe('diagnostics redaction: the secrets it knows', () => {
  // Before: only regular files were read, so a secret linked in (a TLS key kept with the
  // site's other certificates) was never known, and its value went into the bundle.
  it('knows a secret linked in, and passes over a link to a named pipe without waiting on it', () => {
    const dataDir = tempDir('branchsan-redact-');
    const secrets = path.join(dataDir, 'secrets');
    fs.mkdirSync(secrets);
    const elsewhere = tempDir('branchsan-redact-site-');
    const linked = 'linked-secret-9d27c4e1a0b8';
    fs.writeFileSync(path.join(elsewhere, 'webhook-secret'), linked, { mode: 0o600 });
    fs.symlinkSync(path.join(elsewhere, 'webhook-secret'), path.join(secrets, 'webhook-secret'));
    // a pipe read with a blocking open would wait for a writer for good (the test times out)
    execFileSync('mkfifo', ['-m', '600', path.join(elsewhere, 'pipe')]);
    fs.symlinkSync(path.join(elsewhere, 'pipe'), path.join(secrets, 'smtp-password'));
    fs.writeFileSync(path.join(secrets, 'console-token'), 'plain-token-5e1f', { mode: 0o600 });

    const r = new Redactor(dataDir);
    const out = r.text(`sent with ${linked} and plain-token-5e1f\n`);
    expect(out).not.toContain(linked);
    expect(out).not.toContain('plain-token-5e1f');
  });
});
