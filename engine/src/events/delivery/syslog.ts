/**
 * Events to the local system log as RFC 5424 messages.
 *
 * Node's dgram has no Unix-datagram sockets, so /dev/log cannot be written directly.
 * We keep one `logger(1)` process (util-linux; in Debian's essential bsdutils) running
 * with `--rfc5424 --prio-prefix` and feed it one line per event, each prefixed with
 * its own <PRI>: one process for the engine's lifetime, not one per event. logger
 * writes to /dev/log, which journald (or rsyslog) serves, so `journalctl -t branchsan`
 * and /var/log/syslog both show the events with their severities.
 *
 * If logger is missing or exits, lines are dropped (the event log in SQLite keeps
 * them) and it is restarted with backoff. It counts as working again only once a
 * restarted logger has stayed up for stableMs: one that starts and exits at once (its
 * socket refused) is one failure streak with a growing backoff, not a "failing" and
 * "recovered" pair per event. The command can be replaced (tests use a
 * fake that appends stdin to a file) through BRANCHSAN_SYSLOG_COMMAND, never through
 * the API: an API setting that names a program run as root would be a way in.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { EventRecord, Severity } from '../../../../contract/events.js';
import { oneLine } from './quote.js';

/** RFC 5424 severities; facility daemon (3). */
const SYSLOG_SEVERITY: Record<Severity, number> = { info: 6, warning: 4, error: 3, critical: 2 };
const FACILITY_DAEMON = 3;

export interface SyslogOptions {
  /** Program and leading arguments; default logger with RFC 5424 and per-line priorities. */
  command?: string[];
  tag?: string;
  /** Told once per failure streak (to record an event) and when it works again. */
  onFailing?: (err: Error) => void;
  onRecovered?: () => void;
  /** How long a started logger must stay up to count as working (default 5 s). */
  stableMs?: number;
}

const MAX_BACKLOG = 1 << 20;

/**
 * The most a line may carry after its <PRI> (bytes). logger cuts a longer line into
 * messages of its --size (1 KiB unless told) and reads a "<PRI>" at the start of each
 * piece as that piece's priority: a long alert reached the journal in pieces, and a
 * host's name at a cut could set a piece's priority (<8>: user.emerg, which rsyslog
 * writes to every terminal). So logger is given this size and no line is longer; 8 KiB
 * is what rsyslog takes by default (journald takes more).
 */
export const MAX_SYSLOG_MESSAGE = 8192;

export function defaultSyslogCommand(tag = 'branchsan'): string[] {
  const custom = process.env.BRANCHSAN_SYSLOG_COMMAND;
  if (custom) return [custom];
  return [
    'logger',
    '--rfc5424',
    '--prio-prefix',
    '--size',
    String(MAX_SYSLOG_MESSAGE),
    '-t',
    tag,
    `--id=${process.pid}`,
  ];
}

const CLIPPED = ' … (clipped: the event log holds all of it)';

/**
 * One line for logger: <PRI>, the type in brackets, the message on one line (no control
 * characters: a NUL would end it early), clipped to MAX_SYSLOG_MESSAGE bytes.
 */
export function syslogLine(ev: EventRecord): string {
  const pri = FACILITY_DAEMON * 8 + SYSLOG_SEVERITY[ev.severity];
  let text = oneLine(`[${ev.type}] ${ev.message}`);
  if (Buffer.byteLength(text) > MAX_SYSLOG_MESSAGE) {
    const room = MAX_SYSLOG_MESSAGE - Buffer.byteLength(CLIPPED);
    // cut on a character: a piece of one decodes as U+FFFD, left out
    text =
      Buffer.from(text)
        .subarray(0, room)
        .toString('utf8')
        .replace(/\uFFFD+$/, '') + CLIPPED;
  }
  return `<${pri}>${text}\n`;
}

export class SyslogWriter {
  private child?: ChildProcess;
  private failing = false;
  private restartAt = 0;
  private backoffMs = 1_000;
  private closed = false;

  constructor(private readonly opts: SyslogOptions = {}) {}

  write(ev: EventRecord): void {
    if (this.closed) return;
    const child = this.ensure();
    const stdin = child?.stdin;
    if (!stdin || !stdin.writable) return;
    if (stdin.writableLength > MAX_BACKLOG) return; // logger is stuck: drop, never buffer without bound
    stdin.write(syslogLine(ev));
  }

  /** Ends logger's input and waits (briefly) for it to pass the last lines on. */
  async close(graceMs = 2_000): Promise<void> {
    this.closed = true;
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    // held (ref'd) while we wait: otherwise a stopping engine has nothing keeping its
    // event loop alive and exits in the middle of its own shutdown
    child.ref();
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        child.kill();
        resolve();
      }, graceMs);
      child.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      child.stdin?.end();
    });
  }

  private ensure(): ChildProcess | undefined {
    if (this.child && this.child.exitCode === null && !this.child.killed) return this.child;
    if (Date.now() < this.restartAt) return undefined;
    const [cmd, ...args] = this.opts.command ?? defaultSyslogCommand(this.opts.tag);
    const child = spawn(cmd!, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-500)));
    child.stdin!.on('error', () => undefined); // EPIPE when it died: handled by 'exit'
    // Started is not working: a logger whose socket is refused starts and exits at
    // once. Only one that stays up ends a failure streak and resets the backoff.
    let stable: NodeJS.Timeout | undefined;
    child.once('error', (err) => {
      clearTimeout(stable);
      this.failed(err);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(stable);
      if (this.closed) return;
      if (this.child === child) this.child = undefined;
      this.failed(
        new Error(`${cmd} exited (${signal ?? code})${stderr ? `: ${stderr.trim()}` : ''}`),
      );
    });
    child.once('spawn', () => {
      stable = setTimeout(() => {
        if (this.closed || this.child !== child || child.exitCode !== null) return;
        this.backoffMs = 1_000;
        if (this.failing) {
          this.failing = false;
          this.opts.onRecovered?.();
        }
      }, this.opts.stableMs ?? 5_000);
      stable.unref();
    });
    // the engine's exit must not wait for logger
    child.unref();
    (child.stdin as unknown as { unref?: () => void }).unref?.();
    (child.stderr as unknown as { unref?: () => void }).unref?.();
    this.child = child;
    return child;
  }

  private failed(err: Error): void {
    this.child = undefined;
    this.restartAt = Date.now() + this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, 5 * 60_000);
    if (!this.failing) {
      this.failing = true;
      this.opts.onFailing?.(err);
    }
  }
}
