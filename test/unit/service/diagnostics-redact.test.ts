/**
 * Redacting a large log for a diagnostics bundle in pieces: the event loop runs
 * between them (hosts' I/O goes on), and the result is exactly what redacting it in one
 * go gives, private key blocks included, wherever the pieces end.
 */
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
