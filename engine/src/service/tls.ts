/**
 * The web console's TLS identity for remote access: an ECDSA P-256 key and a
 * self-signed certificate, made on first need and kept as secret files
 * (DATA/secrets/console-tls.key and .crt, 0600), read and written as the others are
 * (secrets.ts).
 *
 * The certificate is built here with a small DER encoder and signed with node:crypto,
 * so it works wherever Node runs (a fresh Debian, a Windows service) without the
 * openssl command. Browsers cannot check a self-signed certificate against a CA;
 * people compare its SHA-256 fingerprint instead (shown by the API and in the log).
 */
import os from 'node:os';
import net from 'node:net';
import {
  X509Certificate,
  createPrivateKey,
  generateKeyPairSync,
  randomBytes,
  sign,
} from 'node:crypto';
import { readSecret, writeSecret, type SecretRenewal } from './secrets.js';

export interface ConsoleTls {
  /** PKCS#8 PEM. */
  key: string;
  /** X.509 PEM. */
  cert: string;
  /** SHA-256 of the certificate's DER, "AB:CD:…" as browsers show it. */
  fingerprint256: string;
  notAfter: Date;
}

const KEY_FILE = 'console-tls.key';
const CERT_FILE = 'console-tls.crt';
const VALID_DAYS = 5 * 365;
/** Renew at start when less than this is left, so a certificate never lapses in service. */
const RENEW_BEFORE_MS = 30 * 86_400_000;

/**
 * How the console's key and certificate are had anew, for the hint about a file that
 * cannot be used: made at the next start when missing, as a new identity that browsers
 * which trusted the old one ask about again.
 */
const TLS_RENEWAL: SecretRenewal = {
  orElse:
    'or delete it and restart the engine to have a new certificate made, whose new fingerprint browsers then ask to trust',
  afresh:
    'restart the engine: it makes a new certificate, whose new fingerprint browsers then ask to trust',
};

/**
 * The stored key and certificate, made (or remade, when missing, damaged or about to
 * expire) with names for this host and `extraAddresses`. `created` says it is new:
 * browsers that pinned the old fingerprint must be told.
 */
export function loadOrCreateConsoleTls(
  dataDir: string,
  extraAddresses: string[] = [],
  now = new Date(),
): ConsoleTls & { created: boolean } {
  const existing = readPair(dataDir);
  if (existing && existing.notAfter.getTime() - now.getTime() > RENEW_BEFORE_MS) {
    return { ...existing, created: false };
  }
  const made = createSelfSigned(os.hostname(), extraAddresses, now);
  writeSecret(dataDir, KEY_FILE, made.key);
  writeSecret(dataDir, CERT_FILE, made.cert);
  return { ...made, created: true };
}

/**
 * The stored pair, or null when either is missing or damaged (then a new pair is made).
 * A file that cannot be used (others can read it, the engine may not, a directory or
 * named pipe in its place) is refused with what to run (secrets.ts readSecret).
 */
function readPair(dataDir: string): ConsoleTls | null {
  const key = readSecret(dataDir, KEY_FILE, TLS_RENEWAL);
  const cert = readSecret(dataDir, CERT_FILE, TLS_RENEWAL);
  if (key === undefined || cert === undefined) return null;
  try {
    const x509 = new X509Certificate(cert);
    if (!x509.checkPrivateKey(createPrivateKey(key))) return null;
    return { key, cert, fingerprint256: x509.fingerprint256, notAfter: new Date(x509.validTo) };
  } catch {
    return null; // damaged: make a new pair
  }
}

/** A new P-256 key and a self-signed server certificate for `hostname` and the given addresses. */
export function createSelfSigned(
  hostname: string,
  extraAddresses: string[] = [],
  now = new Date(),
): ConsoleTls {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const notBefore = new Date(now.getTime() - 3_600_000); // tolerate a client clock a bit behind
  const notAfter = new Date(now.getTime() + VALID_DAYS * 86_400_000);
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive, and no leading zero byte
  const name = der.seq(
    der.set(der.seq(der.oid('2.5.4.3'), der.utf8(`BranchSAN console ${hostname}`.slice(0, 64)))),
    der.set(der.seq(der.oid('2.5.4.10'), der.utf8('BranchSAN'))),
  );
  const ecdsaWithSha256 = der.seq(der.oid('1.2.840.10045.4.3.2'));
  const tbs = der.seq(
    der.explicit(0, der.int(Buffer.from([2]))), // v3
    der.int(serial),
    ecdsaWithSha256,
    name,
    der.seq(der.time(notBefore), der.time(notAfter)),
    name,
    spki,
    der.explicit(3, der.seq(...extensions(hostname, extraAddresses))),
  );
  const signature = sign('sha256', tbs, privateKey); // DER ECDSA-Sig-Value
  const certDer = der.seq(tbs, ecdsaWithSha256, der.bitString(signature));
  const cert = pem('CERTIFICATE', certDer);
  const x509 = new X509Certificate(cert);
  return {
    key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    cert,
    fingerprint256: x509.fingerprint256,
    notAfter,
  };
}

function extensions(hostname: string, extraAddresses: string[]): Buffer[] {
  const dnsNames = [...new Set([hostname, 'localhost'].filter((n) => /^[A-Za-z0-9.-]+$/.test(n)))];
  const ips = new Set(['127.0.0.1', '::1']);
  for (const a of extraAddresses) if (net.isIP(a) && a !== '0.0.0.0' && a !== '::') ips.add(a);
  // IPv4-mapped IPv6 ("::ffff:10.0.0.1") is the IPv4 entry already; the encoder takes plain forms.
  for (const a of ips) if (a.includes(':') && a.includes('.')) ips.delete(a);
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) if (!a.internal) ips.add(a.address.replace(/%.*$/, ''));
  const san = der.seq(
    ...dnsNames.map((n) => der.tagged(0x82, Buffer.from(n, 'ascii'))),
    ...[...ips].filter((a) => net.isIP(a)).map((a) => der.tagged(0x87, ipBytes(a))),
  );
  const ext = (oid: string, critical: boolean, value: Buffer) =>
    der.seq(der.oid(oid), ...(critical ? [der.bool(true)] : []), der.octets(value));
  return [
    ext('2.5.29.19', true, der.seq()), // basicConstraints: not a CA
    ext('2.5.29.15', true, der.tagged(0x03, Buffer.from([0x07, 0x80]))), // keyUsage: digitalSignature
    ext('2.5.29.37', false, der.seq(der.oid('1.3.6.1.5.5.7.3.1'))), // extKeyUsage: serverAuth
    ext('2.5.29.17', false, san), // subjectAltName
  ];
}

function ipBytes(ip: string): Buffer {
  if (net.isIPv4(ip)) return Buffer.from(ip.split('.').map(Number));
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const words = (s: string | undefined) => (s ? s.split(':').map((w) => parseInt(w, 16)) : []);
  const h = words(head);
  const t = words(tail);
  const all =
    tail === undefined ? h : [...h, ...Array<number>(8 - h.length - t.length).fill(0), ...t];
  const out = Buffer.alloc(16);
  all.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

function pem(label: string, body: Buffer): string {
  const b64 = body.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

/** Just enough DER for one certificate: definite lengths, the universal types it uses. */
const der = {
  tagged(tag: number, body: Buffer): Buffer {
    const n = body.length;
    const len =
      n < 0x80
        ? Buffer.from([n])
        : n < 0x100
          ? Buffer.from([0x81, n])
          : n < 0x10000
            ? Buffer.from([0x82, n >> 8, n & 0xff])
            : Buffer.from([0x83, n >> 16, (n >> 8) & 0xff, n & 0xff]);
    return Buffer.concat([Buffer.from([tag]), len, body]);
  },
  seq: (...items: Buffer[]) => der.tagged(0x30, Buffer.concat(items)),
  set: (...items: Buffer[]) => der.tagged(0x31, Buffer.concat(items)),
  explicit: (n: number, inner: Buffer) => der.tagged(0xa0 + n, inner),
  bool: (v: boolean) => der.tagged(0x01, Buffer.from([v ? 0xff : 0])),
  /** A non-negative integer from big-endian bytes. */
  int(bytes: Buffer): Buffer {
    let b = bytes;
    while (b.length > 1 && b[0] === 0 && b[1]! < 0x80) b = b.subarray(1);
    if (b[0]! >= 0x80) b = Buffer.concat([Buffer.from([0]), b]);
    return der.tagged(0x02, b);
  },
  oid(dotted: string): Buffer {
    const arcs = dotted.split('.').map(Number);
    const bytes = [arcs[0]! * 40 + arcs[1]!];
    for (const arc of arcs.slice(2)) {
      const chunk = [arc & 0x7f];
      for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128))
        chunk.unshift((v & 0x7f) | 0x80);
      bytes.push(...chunk);
    }
    return der.tagged(0x06, Buffer.from(bytes));
  },
  utf8: (s: string) => der.tagged(0x0c, Buffer.from(s, 'utf8')),
  octets: (b: Buffer) => der.tagged(0x04, b),
  bitString: (b: Buffer) => der.tagged(0x03, Buffer.concat([Buffer.from([0]), b])),
  /** RFC 5280: UTCTime through 2049, GeneralizedTime from 2050. */
  time(d: Date): Buffer {
    const iso = d.toISOString(); // 2026-01-31T12:34:56.789Z
    const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z';
    return d.getUTCFullYear() < 2050
      ? der.tagged(0x17, Buffer.from(digits.slice(2), 'ascii'))
      : der.tagged(0x18, Buffer.from(digits, 'ascii'));
  },
};
