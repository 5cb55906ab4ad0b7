/**
 * A minimal SMTP submission client (RFC 5321) over net/tls: EHLO, STARTTLS (RFC 3207)
 * or TLS from the start, AUTH PLAIN (RFC 4954), one message to a few recipients.
 * Enough to reach a branch's mail relay or a provider's submission port; no pooling,
 * no pipelining. A password is never sent over an unencrypted connection.
 */
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import tls from 'node:tls';
import { oneLine, quoteRemote } from './quote.js';

export interface SmtpOptions {
  host: string;
  port: number;
  security: 'starttls' | 'tls' | 'none';
  username?: string;
  password?: string;
  /** Extra TLS options (a test's CA, or rejectUnauthorized: false for a self-signed relay). */
  tls?: tls.ConnectionOptions;
  timeoutMs?: number;
  /** Our name in EHLO. */
  clientName?: string;
}

export interface Mail {
  from: string;
  to: string[];
  subject: string;
  text: string;
}

export class SmtpError extends Error {
  /** The server refused this message for good (queue.ts PermanentFailure). */
  readonly permanent: boolean;
  /** The server refused our login or wants one (queue.ts LoginRefused): `fix` says what to change. */
  readonly loginRefused: boolean;

  constructor(
    message: string,
    readonly code?: number,
    /** With a permanent refusal or a refused login: what to do about it. */
    readonly fix = '',
    login = false,
  ) {
    super(message);
    this.name = 'SmtpError';
    this.loginRefused = login;
    this.permanent = fix !== '' && !login;
  }
}

interface Reply {
  code: number;
  lines: string[];
}

/**
 * What one server may send before it is no mail server to us. RFC 5321 allows a reply
 * line 512 octets; EHLO answers run to a few dozen lines. Without bounds a broken or
 * hostile server streaming lines filled the engine's memory (2.6 GB in 20 s in a
 * review), and one sending bytes without a newline kept its thread rescanning them.
 */
export const MAX_REPLY_LINE = 2048;
export const MAX_REPLY_LINES = 100;
/** Replies the server sent before they were asked for (we never pipeline). */
const MAX_UNASKED_REPLIES = 8;

/** Reads SMTP replies (possibly multi-line: "250-…" then "250 …") from one socket. */
class ReplyReader {
  private buf = '';
  private waiting?: { resolve: (r: Reply) => void; reject: (e: Error) => void };
  private readonly ready: Reply[] = [];
  private failure?: Error;
  private lines: string[] = [];

  constructor(readonly sock: net.Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => this.feed(d));
    sock.on('error', (e) => this.fail(e));
    sock.on('close', () => this.fail(new SmtpError('the server closed the connection')));
  }

  next(): Promise<Reply> {
    if (this.ready.length) return Promise.resolve(this.ready.shift()!);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => (this.waiting = { resolve, reject }));
  }

  /** Stops reading (before the socket is handed to TLS). */
  detach(): void {
    this.sock.removeAllListeners('data');
    this.sock.removeAllListeners('close');
    this.sock.removeAllListeners('error');
  }

  private feed(d: string): void {
    if (this.failure) return;
    let from = this.buf.length; // only the new bytes can hold the next newline
    this.buf += d;
    let nl: number;
    while ((nl = this.buf.indexOf('\n', from)) >= 0) {
      const line = this.buf.slice(0, nl).replace(/\r$/, '');
      this.buf = this.buf.slice(nl + 1);
      from = 0;
      if (line.length > MAX_REPLY_LINE) return this.refuse(`a reply line of ${line.length} bytes`);
      this.lines.push(line.slice(4));
      if (this.lines.length > MAX_REPLY_LINES)
        return this.refuse(`a reply of more than ${MAX_REPLY_LINES} lines`);
      if (line[3] === '-') continue;
      const reply = { code: Number(line.slice(0, 3)) || 0, lines: this.lines };
      this.lines = [];
      const w = this.waiting;
      this.waiting = undefined;
      if (w) w.resolve(reply);
      else if (this.ready.push(reply) > MAX_UNASKED_REPLIES)
        return this.refuse(`more than ${MAX_UNASKED_REPLIES} replies nobody asked for`);
    }
    if (this.buf.length > MAX_REPLY_LINE)
      this.refuse(`${this.buf.length} bytes without a line end`);
  }

  /** The server broke the protocol's bounds: stop reading it and fail what waits. */
  private refuse(what: string): void {
    this.buf = '';
    this.lines = [];
    this.fail(
      new SmtpError(`the server sent ${what}: it does not speak SMTP as a mail server must`),
    );
    this.sock.destroy();
  }

  private fail(e: Error): void {
    this.failure ??= e;
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(this.failure);
  }
}

/**
 * Sends `mail`; resolves with the recipients the server refused for good while it took
 * the message for the others (each refusal says what to do). When it refuses every
 * recipient, that is the error.
 */
export async function sendMail(o: SmtpOptions, mail: Mail): Promise<SmtpError[]> {
  const timeoutMs = o.timeoutMs ?? 20_000;
  let sock: net.Socket =
    o.security === 'tls'
      ? tls.connect({ host: o.host, port: o.port, servername: sni(o.host), ...o.tls })
      : net.connect({ host: o.host, port: o.port });
  /** The message was sent: its QUIT ends the connection (quit). */
  let quitting = false;
  const timer = setTimeout(
    () =>
      sock.destroy(
        new SmtpError(`no answer from ${o.host}:${o.port} within ${timeoutMs / 1000} s`),
      ),
    timeoutMs,
  );
  try {
    await connected(sock, o.security === 'tls');
    let r = new ReplyReader(sock);
    /** `fix`: a 5xx here refuses this message for good (RFC 5321 4.2.1), and what to do. */
    const cmd = async (
      line: string | null,
      ok: number[],
      what: string,
      fix?: string,
    ): Promise<Reply> => {
      if (line !== null) sock.write(line + '\r\n');
      const reply = await r.next();
      if (!ok.includes(reply.code)) {
        const said =
          `${what}: the server answered ${reply.code} ${quoteRemote(reply.lines.join(' '))}`.trim();
        const login = refusesLogin(reply, what, o);
        if (login) throw new SmtpError(said, reply.code, login, true);
        throw new SmtpError(
          said,
          reply.code,
          fix !== undefined && refusesMessage(reply, what) ? fix : '',
        );
      }
      return reply;
    };
    // A 5xx before here (greeting, EHLO, MAIL FROM: the sender) refuses the channel's
    // settings, which every message would meet: that is retried, and retried at once
    // when the settings are corrected; one that refuses our login (AUTH, "authentication
    // required", a relay denied) pauses the channel instead (refusesLogin). From here on
    // a 5xx refuses this message: retrying it would only hold up the messages behind it;
    // but not a refusal on policy ("relay access denied": no or the wrong login), which
    // is the settings' again (refusesMessage).
    const refusedMessage =
      "the mail server refused this message itself (its size or content); the mail server's administrator can say why";
    await cmd(null, [220], 'greeting');
    const name = o.clientName ?? (os.hostname() || 'branchsan');
    let ehlo = await cmd(`EHLO ${name}`, [250], 'EHLO');
    if (o.security === 'starttls') {
      if (!offers(ehlo, 'STARTTLS')) {
        throw new SmtpError(`${o.host} does not offer STARTTLS; choose security "tls" or "none"`);
      }
      await cmd('STARTTLS', [220], 'STARTTLS');
      r.detach();
      sock = tls.connect({ socket: sock, servername: sni(o.host), ...o.tls });
      await connected(sock, true);
      r = new ReplyReader(sock);
      ehlo = await cmd(`EHLO ${name}`, [250], 'EHLO after STARTTLS');
    }
    if (o.username) {
      if (o.security === 'none') {
        throw new SmtpError(
          'refusing to send the SMTP password over an unencrypted connection; choose STARTTLS or TLS',
        );
      }
      if (!offers(ehlo, 'AUTH', 'PLAIN'))
        throw new SmtpError(`${o.host} does not offer AUTH PLAIN`);
      const token = Buffer.from(`\0${o.username}\0${o.password ?? ''}`).toString('base64');
      await cmd(`AUTH PLAIN ${token}`, [235], 'authentication');
    }
    await cmd(`MAIL FROM:<${mail.from}>`, [250], 'MAIL FROM');
    // one mistyped address among several must not keep the message from the others
    const refused: SmtpError[] = [];
    for (const to of mail.to) {
      try {
        await cmd(
          `RCPT TO:<${to}>`,
          [250, 251],
          `recipient ${to}`,
          `correct or remove the address ${to} in Settings > Notifications`,
        );
      } catch (err) {
        if (!(err instanceof SmtpError && err.permanent)) throw err;
        refused.push(err);
      }
    }
    if (refused.length === mail.to.length) {
      if (refused.length === 1) throw refused[0];
      throw new SmtpError(
        refused.map((e) => e.message).join('; '),
        refused[0]!.code,
        'correct the addresses in Settings > Notifications',
      );
    }
    await cmd('DATA', [354], 'DATA', refusedMessage);
    await cmd(dotStuff(formatMessage(mail)) + '\r\n.', [250], 'message', refusedMessage);
    quit(sock, r);
    quitting = true;
    return refused;
  } catch (err) {
    if (err instanceof SmtpError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new SmtpError(`cannot talk to ${o.host}:${o.port}: ${e.code ?? e.message}`);
  } finally {
    clearTimeout(timer);
    if (!quitting) sock.destroy();
  }
}

/** How long the QUIT after a sent message waits for the server's 221, in the background. */
export const QUIT_WAIT_MS = 2_000;

/**
 * Says QUIT once the server has taken the message, and waits for its answer (RFC 5321
 * 4.1.1.10: a client should) behind the caller's back, at most QUIT_WAIT_MS, without
 * holding the process: the message is sent whatever the answer, so the next message
 * does not wait for a server slow to say goodbye (before, one that never answered held
 * the channel up to the 20 s timeout, and an engine stopping meanwhile reported a
 * delivered message as 'may still arrive').
 */
function quit(sock: net.Socket, r: ReplyReader): void {
  sock.write('QUIT\r\n');
  sock.unref();
  const done = () => {
    clearTimeout(timer);
    sock.destroy();
  };
  const timer = setTimeout(done, QUIT_WAIT_MS);
  timer.unref();
  r.next().then(done, done); // 221; a server that just hangs up is fine too
}

/**
 * A refusal of who we are, with what to change; '' when it is not one. A relay behind
 * fail2ban bans an address after a few of these, so the queue pauses on them rather
 * than try each waiting message again (queue.ts LoginRefused): a 5xx to AUTH (535
 * authentication failed), 530 (authentication required), and a 5xx on security or
 * policy to the sender or a recipient (5.7.x, or "relay"/"auth" without an enhanced
 * code: "554 5.7.1 Relay access denied", "553 5.7.1 Sender address not owned by user").
 * A 4xx (454 temporary authentication failure) is retried as any 4xx is.
 */
function refusesLogin(reply: Reply, what: string, o: SmtpOptions): string {
  if (reply.code < 500 || reply.code > 599) return '';
  const where = `Settings > Notifications (mail server ${o.host}:${o.port})`;
  const login = o.username
    ? `correct the user name and password in ${where}`
    : `enter the user name and password this server logs in with in ${where}`;
  if (what === 'authentication') return `${login}, then save`;
  const text = reply.lines.join(' ');
  const policy = /^\s*5\.7\.\d/.test(text) || /relay|auth/i.test(text);
  if (reply.code !== 530 && !(policy && (what === 'MAIL FROM' || what.startsWith('recipient '))))
    return '';
  return (
    `the mail server wants a login it accepts before it takes mail from this sender: ${login}, ` +
    'or ask its administrator to let this server send (its address, the sender address); then save'
  );
}

/**
 * A 5xx that refuses the message, not the sender's standing: not 530, and to a
 * recipient not an enhanced status 5.7.x (RFC 3463: security or policy, as "554 5.7.1
 * Relay access denied" when the relay wants a login) nor one that says "relay" or
 * "auth" without such a code: those every message would meet until the settings
 * change. (To the content, 5.7.x is the content's: "rejected as spam".)
 */
function refusesMessage(reply: Reply, what: string): boolean {
  if (reply.code < 500 || reply.code > 599 || reply.code === 530) return false;
  const text = reply.lines.join(' ');
  if (!what.startsWith('recipient ')) return true;
  return !/^\s*5\.7\.\d/.test(text) && !/relay|auth/i.test(text);
}

function connected(sock: net.Socket, secure: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    sock.once(secure ? 'secureConnect' : 'connect', () => {
      sock.off('error', reject);
      resolve();
    });
    sock.once('error', reject);
  });
}

const sni = (host: string) => (net.isIP(host) ? undefined : host);

function offers(ehlo: Reply, keyword: string, arg?: string): boolean {
  return ehlo.lines.some((l) => {
    const words = l.toUpperCase().split(/[\s=]+/);
    return words[0] === keyword && (!arg || words.includes(arg));
  });
}

/** RFC 5322 (2.1.1): a line holds at most this many characters before its CRLF. */
export const MAX_LINE = 998;

/**
 * RFC 5322 message: headers, a blank line, the body; UTF-8 where needed. No line is
 * longer than MAX_LINE: a body that has one (an alert naming long NQNs and paths) goes
 * base64 like a non-ASCII one, and a long recipient list is folded. Relays refuse, or
 * break up and so corrupt, longer lines.
 */
export function formatMessage(mail: Mail, now = new Date()): string {
  const ascii = (s: string) => /^[\x20-\x7e\r\n\t]*$/.test(s);
  const short = (s: string) => s.split('\r\n').every((l) => l.length <= MAX_LINE);
  // One line: a line break in a subject would end the header and start another one
  // (Bcc: …), and subjects carry names other machines chose (a host's NQN).
  const line = oneLine(mail.subject);
  const subject = ascii(line) ? line : encodedWords(line);
  const text = mail.text.replace(/\r\n|\r|\n/g, '\r\n');
  const headers = [
    `From: ${mail.from}`,
    `To: ${mail.to.join(', ').length + 4 <= MAX_LINE ? mail.to.join(', ') : mail.to.join(',\r\n ')}`,
    `Subject: ${subject}`,
    `Date: ${now.toUTCString().replace('GMT', '+0000')}`,
    `Message-ID: <${randomUUID()}@${mail.from.split('@')[1] ?? 'branchsan'}>`,
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
  ];
  if (ascii(text) && short(text))
    return [...headers, 'Content-Transfer-Encoding: 7bit', '', text].join('\r\n');
  const b64 = Buffer.from(text).toString('base64').replace(/.{76}/g, '$&\r\n');
  return [...headers, 'Content-Transfer-Encoding: base64', '', b64].join('\r\n');
}

/**
 * Header text as RFC 2047 encoded words, folded one to a line: each word at most 75
 * characters and each line at most 76 (2047 section 2), each word whole characters
 * (a UTF-8 sequence split across two words decodes as garbage in both).
 * 39 bytes are 52 base64 characters: 64 with =?UTF-8?B? and ?=, 73 after "Subject: ".
 */
export function encodedWords(text: string, maxBytes = 39): string {
  const words: string[] = [];
  let chunk = '';
  for (const ch of text) {
    if (chunk && Buffer.byteLength(chunk + ch) > maxBytes) {
      words.push(chunk);
      chunk = '';
    }
    chunk += ch;
  }
  words.push(chunk);
  return words.map((w) => `=?UTF-8?B?${Buffer.from(w).toString('base64')}?=`).join('\r\n ');
}

/** A line starting with "." gets another (RFC 5321 4.5.2), so it cannot end the message. */
function dotStuff(s: string): string {
  return s.replace(/^\./gm, '..');
}
