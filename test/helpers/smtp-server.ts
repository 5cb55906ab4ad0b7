/**
 * A small SMTP server for tests, on 127.0.0.1: EHLO, STARTTLS (with a throwaway
 * self-signed certificate made by openssl), AUTH PLAIN, MAIL/RCPT/DATA, QUIT.
 * It records the messages it accepted and can refuse the first N messages (451), given
 * recipients, or every message's content.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { tempDir } from './engine.js';

export interface ReceivedMail {
  from: string;
  to: string[];
  data: string;
  auth: { user: string; pass: string } | null;
  tls: boolean;
}

export interface TestSmtpServer {
  port: number;
  cert: string;
  received: ReceivedMail[];
  /** Answer 451 to MAIL FROM this many more times. */
  failNext: number;
  /** RCPT TO of these addresses is answered with the reply given ("550 no such user"). */
  refuseRcpt: Record<string, string>;
  /** A message's end (".") is answered with this reply instead of 250. */
  refuseMessage?: string;
  /** Connections made to it so far. */
  sessions: number;
  close(): Promise<void>;
  waitFor(n: number, timeoutMs?: number): Promise<ReceivedMail[]>;
}

export function makeCert(): { key: string; cert: string } {
  const dir = tempDir('smtp-cert-');
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
      .concat(['-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'])
      .concat(['-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost']),
    { stdio: 'ignore' },
  );
  return { key: fs.readFileSync(key, 'utf8'), cert: fs.readFileSync(cert, 'utf8') };
}

export async function startSmtpServer(
  opts: { starttls?: boolean; users?: Record<string, string> } = {},
): Promise<TestSmtpServer> {
  const { key, cert } = makeCert();
  const sockets = new Set<net.Socket>();
  const srv: TestSmtpServer = {
    port: 0,
    cert,
    received: [],
    failNext: 0,
    refuseRcpt: {},
    sessions: 0,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
    async waitFor(n, timeoutMs = 10_000) {
      const end = Date.now() + timeoutMs;
      while (srv.received.length < n) {
        if (Date.now() > end) throw new Error(`only ${srv.received.length} mails arrived`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return srv.received;
    },
  };
  const server = net.createServer((raw) => {
    sockets.add(raw);
    srv.sessions++;
    raw.on('close', () => sockets.delete(raw));
    let sock: net.Socket = raw;
    let secure = false;
    let auth: ReceivedMail['auth'] = null;
    let mail: Partial<ReceivedMail> = {};
    let inData = false;
    let data = '';
    let buf = '';
    const reply = (s: string) => sock.write(s + '\r\n');
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      let nl: number;
      while ((nl = buf.indexOf('\r\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (inData) {
          if (line === '.') {
            inData = false;
            if (srv.refuseMessage) {
              mail = {};
              data = '';
              reply(srv.refuseMessage);
              continue;
            }
            srv.received.push({
              from: mail.from!,
              to: mail.to ?? [],
              data,
              auth,
              tls: secure,
            });
            mail = {};
            data = '';
            reply('250 queued');
          } else data += (line.startsWith('..') ? line.slice(1) : line) + '\r\n';
          continue;
        }
        if (handle(line) === 'starttls') return;
      }
    };
    const handle = (line: string): void | 'starttls' => {
      const verb = line.split(' ')[0]!.toUpperCase();
      if (verb === 'EHLO') {
        const ext = [
          ...(opts.starttls && !secure ? ['STARTTLS'] : []),
          ...(opts.users ? ['AUTH PLAIN LOGIN'] : []),
          '8BITMIME',
        ];
        reply(
          [
            '250-test.local',
            ...ext.map((e, i) => `250${i === ext.length - 1 ? ' ' : '-'}${e}`),
          ].join('\r\n'),
        );
      } else if (verb === 'STARTTLS') {
        reply('220 go ahead');
        sock.off('data', onData);
        const t = new tls.TLSSocket(sock, { isServer: true, key, cert });
        t.on('error', () => undefined);
        sock = t;
        secure = true;
        buf = '';
        t.on('data', onData);
        return 'starttls';
      } else if (verb === 'AUTH') {
        const [, mech, token] = line.split(' ');
        const [, user, pass] = Buffer.from(token ?? '', 'base64')
          .toString()
          .split('\0');
        if (mech === 'PLAIN' && opts.users?.[user!] === pass) {
          auth = { user: user!, pass: pass! };
          reply('235 ok');
        } else reply('535 authentication failed');
      } else if (verb === 'MAIL') {
        if (srv.failNext > 0) {
          srv.failNext--;
          return void reply('451 try again later');
        }
        if (opts.users && !auth) return void reply('530 authentication required');
        mail.from = /<(.*)>/.exec(line)![1]!;
        reply('250 ok');
      } else if (verb === 'RCPT') {
        const to = /<(.*)>/.exec(line)![1]!;
        if (srv.refuseRcpt[to]) return void reply(srv.refuseRcpt[to]);
        (mail.to ??= []).push(to);
        reply('250 ok');
      } else if (verb === 'DATA') {
        inData = true;
        reply('354 end with .');
      } else if (verb === 'QUIT') {
        reply('221 bye');
        sock.end();
      } else reply('502 not implemented');
    };
    raw.on('data', onData);
    raw.on('error', () => undefined);
    reply('220 test.local ESMTP');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  srv.port = (server.address() as net.AddressInfo).port;
  return srv;
}
