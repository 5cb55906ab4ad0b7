import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { createSelfSigned, loadOrCreateConsoleTls } from '../../../engine/src/service/tls.js';

const HAVE_OPENSSL = spawnSync('openssl', ['version']).status === 0;

describe('console TLS certificate', () => {
  it('is a self-signed ECDSA P-256 server certificate for this host, valid for 5 years', () => {
    const now = new Date('2026-03-01T12:00:00Z');
    const t = createSelfSigned('san-a', ['10.1.2.3', '0.0.0.0'], now);
    const x = new X509Certificate(t.cert);
    expect(x.verify(x.publicKey)).toBe(true);
    expect(x.checkPrivateKey(createPrivateKey(t.key))).toBe(true);
    expect(x.subject).toContain('CN=BranchSAN console san-a');
    expect(x.subjectAltName).toContain('DNS:san-a');
    expect(x.subjectAltName).toContain('IP Address:10.1.2.3');
    expect(x.subjectAltName).not.toContain('0.0.0.0');
    expect(x.checkIP('::1')).toBe('::1');
    expect(x.ca).toBe(false);
    expect(x.keyUsage).toContain('1.3.6.1.5.5.7.3.1');
    expect(new Date(x.validFrom).getTime()).toBe(now.getTime() - 3_600_000);
    expect(new Date(x.validTo).getUTCFullYear()).toBe(2031);
    expect(t.fingerprint256).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  });

  it.skipIf(!HAVE_OPENSSL)('is accepted by openssl, which computes the same fingerprint', () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'bsan-tls-'));
    const t = createSelfSigned('san-a');
    const file = path.join(d, 'c.pem');
    fs.writeFileSync(file, t.cert);
    expect(
      execFileSync('openssl', ['verify', '-CAfile', file, file], { encoding: 'utf8' }),
    ).toContain('OK');
    const fp = execFileSync('openssl', ['x509', '-in', file, '-noout', '-fingerprint', '-sha256'], {
      encoding: 'utf8',
    });
    expect(fp.trim().split('=')[1]).toBe(t.fingerprint256);
    fs.rmSync(d, { recursive: true, force: true });
  });

  it('uses GeneralizedTime from 2050 on, as RFC 5280 asks', () => {
    const x = new X509Certificate(createSelfSigned('h', [], new Date('2049-06-01T00:00:00Z')).cert);
    expect(new Date(x.validTo).getUTCFullYear()).toBe(2054);
  });

  it('is kept as 0600 secrets, reused, and renewed when it nears expiry', () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'bsan-tls-'));
    const first = loadOrCreateConsoleTls(d, [], new Date());
    expect(first.created).toBe(true);
    for (const f of ['console-tls.key', 'console-tls.crt'])
      expect(fs.statSync(path.join(d, 'secrets', f)).mode & 0o777).toBe(0o600);
    const again = loadOrCreateConsoleTls(d);
    expect(again.created).toBe(false);
    expect(again.fingerprint256).toBe(first.fingerprint256);
    const late = loadOrCreateConsoleTls(d, [], new Date(first.notAfter.getTime() - 86_400_000));
    expect(late.created).toBe(true);
    expect(late.fingerprint256).not.toBe(first.fingerprint256);
    fs.chmodSync(path.join(d, 'secrets', 'console-tls.key'), 0o644);
    expect(() => loadOrCreateConsoleTls(d)).toThrow(/readable by other users/);
    fs.rmSync(d, { recursive: true, force: true });
  });

  it('reuses a pair written without the line end other secret files have (an older version)', () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), 'bsan-tls-'));
    const t = createSelfSigned('san-a');
    fs.mkdirSync(path.join(d, 'secrets'), { mode: 0o700 });
    fs.writeFileSync(path.join(d, 'secrets', 'console-tls.key'), t.key, { mode: 0o600 });
    fs.writeFileSync(path.join(d, 'secrets', 'console-tls.crt'), t.cert, { mode: 0o600 });
    const kept = loadOrCreateConsoleTls(d);
    expect(kept.created).toBe(false);
    expect(kept.fingerprint256).toBe(t.fingerprint256);
    expect(loadOrCreateConsoleTls(d).created).toBe(false); // and what it wrote reads back
    fs.rmSync(d, { recursive: true, force: true });
  });
});
