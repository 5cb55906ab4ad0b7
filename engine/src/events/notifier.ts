/**
 * Routes each recorded event to the delivery channels: syslog (a stream), mail and
 * webhook (queues with retry). A channel's failure becomes a delivery.* event, which
 * goes to the event log, the UI and syslog but never to mail or webhook: two failing
 * channels must not report to each other forever.
 */
import os from 'node:os';
import { SEVERITIES, type EventRecord, type Severity } from '../../../contract/events.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import {
  DeliveryQueue,
  DEFAULT_QUEUE_OPTIONS,
  type Cancelled,
  type LoginRefused,
  type QueueOptions,
} from './delivery/queue.js';
import type { DeliveryState } from './rules.js';
import { quoteRemote } from './delivery/quote.js';
import { sendMail } from './delivery/smtp.js';
import { SyslogWriter } from './delivery/syslog.js';
import { postWebhook, redactUrl } from './delivery/webhook.js';
import { SMTP_PASSWORD, WEBHOOK_SECRET, type SettingsStore } from './settings.js';

export type Channel = 'syslog' | 'smtp' | 'webhook';

/** How the notifier records what goes wrong with a channel (as events). */
export type ReportFn = (ev: {
  type: string;
  severity: Severity;
  message: string;
  data?: Record<string, unknown>;
}) => void;

export interface NotifierOptions {
  settings: SettingsStore;
  report: ReportFn;
  nodeId: string;
  version: string;
  log?: Logger;
  syslogCommand?: string[];
  queue?: Partial<QueueOptions>;
}

const atLeast = (s: Severity, min: Severity) => SEVERITIES.indexOf(s) >= SEVERITIES.indexOf(min);

const CHANNEL_NAMES: Record<Channel, string> = {
  syslog: 'System log',
  smtp: 'Alert e-mail',
  webhook: 'Webhook',
};

/** A delivery failure's reason in an event: the server's words in it are clipped already. */
const MAX_REASON = 600;

export class Notifier {
  private readonly syslog: SyslogWriter;
  private readonly smtp: DeliveryQueue<EventRecord>;
  private readonly webhook: DeliveryQueue<EventRecord>;

  constructor(private readonly o: NotifierOptions) {
    const qopts = { ...DEFAULT_QUEUE_OPTIONS, ...o.queue };
    this.syslog = new SyslogWriter({
      ...(o.syslogCommand ? { command: o.syslogCommand } : {}),
      onFailing: (err) => this.failing('syslog', err),
      onRecovered: () => this.recovered('syslog'),
    });
    this.smtp = new DeliveryQueue((ev) => this.mail(ev), this.hooks('smtp'), qopts);
    this.webhook = new DeliveryQueue((ev) => this.post(ev), this.hooks('webhook'), qopts);
  }

  /** Called for every recorded event; returns the channels it was queued on. */
  deliver(ev: EventRecord): Channel[] {
    const s = this.o.settings.stored();
    const test = (ev.data as { test?: boolean } | undefined)?.test === true;
    const out: Channel[] = [];
    const ownFailure = (c: Channel) =>
      ev.type.startsWith('delivery.') &&
      (ev.data as { channel?: string } | undefined)?.channel === c;
    // the alert that a channel is paused waits in that channel's queue for nothing
    const d = ev.data as { rule?: unknown; subject?: unknown } | undefined;
    const ownAlert = (c: Channel) => d?.rule === 'delivery.paused' && d.subject === c;
    if (
      s.syslog.enabled &&
      (test || atLeast(ev.severity, s.syslog.minSeverity)) &&
      !ownFailure('syslog')
    ) {
      this.syslog.write(ev);
      out.push('syslog');
    }
    if (ev.type.startsWith('delivery.')) return out;
    if (s.smtp.enabled && (test || wanted(ev, s.smtp.minSeverity)) && !ownAlert('smtp')) {
      this.smtp.push(ev);
      out.push('smtp');
    }
    if (
      s.webhook.enabled &&
      s.webhook.url &&
      (test || wanted(ev, s.webhook.minSeverity)) &&
      !ownAlert('webhook')
    ) {
      this.webhook.push(ev);
      out.push('webhook');
    }
    return out;
  }

  /**
   * A channel's queue tries its oldest message again now instead of after its backoff
   * (up to 5 minutes), or after its pause (the server refused the login): its settings
   * changed (a password corrected), or a test message was queued behind it.
   */
  retryNow(channel: 'smtp' | 'webhook'): void {
    this[channel].retryNow();
  }

  /**
   * A channel's settings were saved: switched on, what waits is tried now (retryNow);
   * switched off, what waits is not sent, and one event says which messages those are.
   * They are dropped rather than kept for a later switch-on: alerts sent days late,
   * long after they cleared, would mislead, and the queue is in memory only, so a
   * restart would lose them anyway. The event log keeps every one.
   */
  settingsChanged(channel: 'smtp' | 'webhook'): void {
    if (this.on(channel)) return this.retryNow(channel);
    const gone = this[channel].clear();
    if (gone.length === 0) return;
    const { ids, which } = whichEvents(gone);
    this.o.report({
      type: 'delivery.dropped',
      severity: 'warning',
      message:
        `${CHANNEL_NAMES[channel]} was switched off while ${gone.length} message${gone.length === 1 ? '' : 's'} waited to be sent: ` +
        `${gone.length === 1 ? 'it was' : 'they were'} not sent (${which}). Switching it on again sends new alerts only.`,
      data: { channel, eventIds: ids, count: gone.length, reason: 'switched off' },
    });
  }

  private on(channel: 'smtp' | 'webhook'): boolean {
    const s = this.o.settings.stored();
    return channel === 'smtp' ? s.smtp.enabled : s.webhook.enabled && !!s.webhook.url;
  }

  /** Mail and webhook for the delivery.paused rule. */
  state(): DeliveryState[] {
    const s = this.o.settings.stored();
    return (['smtp', 'webhook'] as const).map((channel) => {
      const q = this[channel];
      const p = q.paused;
      return {
        channel,
        label: CHANNEL_NAMES[channel],
        enabled: s[channel].enabled,
        tried: q.hasTried,
        ...(p
          ? {
              paused: {
                since: p.since,
                reason: quoteRemote(p.error.message, MAX_REASON),
                fix: p.error.fix,
                ...(p.error.cause ? { cause: p.error.cause } : {}),
              },
            }
          : {}),
      };
    });
  }

  /**
   * Stops the channels (a send in progress gets graceMs) and returns, for each of mail
   * and webhook that had messages left, the warning event that says which were not sent
   * (waiting out a backoff or a pause, or tried and failed) and which was still being
   * sent: the queues are in memory, so nothing sends them at the next start. The caller
   * logs and records it (the notifier's own reports stop with the engine).
   */
  async close(graceMs = 2_000): Promise<Parameters<ReportFn>[0][]> {
    const [smtp, webhook] = await Promise.all([
      this.smtp.close(graceMs),
      this.webhook.close(graceMs),
      this.syslog.close(graceMs),
    ]);
    const out: Parameters<ReportFn>[0][] = [];
    for (const [channel, left] of [
      ['smtp', smtp],
      ['webhook', webhook],
    ] as const) {
      const { unsent, sending } = left;
      if (unsent.length === 0 && sending === undefined) continue;
      const gone = sending === undefined ? unsent : [sending, ...unsent];
      const { ids, which } = whichEvents(gone);
      const k = gone.length;
      const inFlight =
        sending === undefined
          ? ''
          : ` (${k === 1 ? 'it' : 'one'} was being sent and may still arrive)`;
      out.push({
        type: 'delivery.dropped',
        severity: 'warning',
        message:
          `The engine stopped with ${k} ${CHANNEL_NAMES[channel].toLowerCase()} message${k === 1 ? '' : 's'} not sent${inFlight} (${which}). ` +
          'Messages not sent are not kept over a restart: check the alerts in the console for what they told of.',
        data: {
          channel,
          eventIds: ids,
          count: gone.length,
          ...(sending === undefined ? {} : { sendingId: sending.id }),
          reason: 'engine stopped',
        },
      });
    }
    return out;
  }

  private async mail(ev: EventRecord): Promise<void> {
    const s = this.o.settings.stored().smtp;
    if (!s.enabled) throw switchedOff('smtp'); // while it waited, or was being sent
    const host = os.hostname();
    const refused = await sendMail(
      {
        host: s.host,
        port: s.port,
        security: s.security,
        ...(s.username
          ? { username: s.username, password: this.secret('smtp', SMTP_PASSWORD) ?? '' }
          : {}),
        ...(s.allowInvalidCertificate ? { tls: { rejectUnauthorized: false } } : {}),
      },
      {
        from: s.from,
        to: s.to,
        subject: `[BranchSAN ${ev.severity}] ${titleOf(ev)} (${host})`,
        text:
          `${ev.message}\n\n` +
          `Server: ${host}\nWhen: ${new Date(ev.ts).toISOString()}\nSeverity: ${ev.severity}\nEvent: ${eventRef(ev)}\n\n` +
          '-- \nSent by the BranchSAN engine. Change who gets these in the console: Settings > Notifications.\n',
      },
    );
    if (refused.length > 0) {
      const reason = quoteRemote(
        `the server refused ${refused.length === 1 ? 'this recipient' : 'these recipients'} for good: ${refused.map((e) => `${e.message}; ${e.fix}`).join('; ')}`,
        MAX_REASON,
      );
      this.o.report({
        type: 'delivery.dropped',
        severity: 'error',
        message: `${CHANNEL_NAMES.smtp} for ${unstored(ev) ? `"${titleOf(ev)}"` : `event #${ev.id} ("${titleOf(ev)}")`} did not reach every recipient: ${reason}. The other recipients got it.`,
        data: { channel: 'smtp', eventId: ev.id, reason, partial: true },
      });
    }
  }

  private async post(ev: EventRecord): Promise<void> {
    const s = this.o.settings.stored().webhook;
    if (!s.enabled || !s.url) throw switchedOff('webhook');
    await postWebhook(
      { url: s.url, secret: this.secret('webhook', WEBHOOK_SECRET) },
      {
        source: 'branchsan',
        version: this.o.version,
        nodeId: this.o.nodeId,
        hostname: os.hostname(),
        event: ev,
      },
    );
  }

  /**
   * A channel's password or secret. A file that cannot be used (others can read it, the
   * engine may not, a directory is in its place) is
   * the channel's settings' fault, as a wrong password is: every message would meet it,
   * so the channel pauses (LoginRefused) with what to run, rather than fail each message
   * 8 times without it.
   */
  private secret(
    channel: 'smtp' | 'webhook',
    name: typeof SMTP_PASSWORD | typeof WEBHOOK_SECRET,
  ): string | undefined {
    try {
      return this.o.settings.secret(name);
    } catch (err) {
      if (!(err instanceof UserError)) throw err;
      const what = channel === 'smtp' ? 'password' : 'signing secret';
      const refused: LoginRefused = Object.assign(new Error(err.message.replace(/\.$/, '')), {
        loginRefused: true as const,
        cause: `its ${what} file cannot be used`,
        fix: `${asClause(err.hint ?? '')}; then save the settings in Settings > Notifications`,
      });
      throw refused;
    }
  }

  private hooks(channel: Channel) {
    return {
      failing: (err: Error) => this.failing(channel, err),
      recovered: () => this.recovered(channel),
      paused: (err: Error) =>
        this.o.log?.warn('notification delivery paused: its login is refused or unusable', {
          channel,
          error: quoteRemote(err.message, MAX_REASON),
        }),
      dropped: (ev: EventRecord, why: string) => {
        const reason = quoteRemote(why, MAX_REASON);
        this.o.report({
          type: 'delivery.dropped',
          severity: 'error',
          message: unstored(ev)
            ? `${CHANNEL_NAMES[channel]} for "${titleOf(ev)}" was given up: ${reason}. It is not in the event log either (the data directory could not be written); check the alerts in the console.`
            : `${CHANNEL_NAMES[channel]} for event #${ev.id} ("${titleOf(ev)}") was given up: ${reason}. The event stays in the event log.`,
          data: { channel, eventId: ev.id, reason },
        });
      },
    };
  }

  private failing(channel: Channel, err: Error): void {
    // the reason may quote a server at length: each event stores it (quote.ts)
    const why = quoteRemote(err.message, MAX_REASON);
    this.o.log?.warn('notification delivery failing', { channel, error: why });
    this.o.report({
      type: 'delivery.failing',
      severity: 'warning',
      message: `${CHANNEL_NAMES[channel]} cannot be delivered: ${why}. BranchSAN keeps retrying with growing pauses; ${HINTS[channel]}`,
      data: {
        channel,
        error: why,
        ...(channel === 'webhook' ? { url: redactUrl(this.o.settings.stored().webhook.url) } : {}),
      },
    });
  }

  private recovered(channel: Channel): void {
    this.o.report({
      type: 'delivery.recovered',
      severity: 'info',
      message: `${CHANNEL_NAMES[channel]} works again.`,
      data: { channel },
    });
  }
}

/** A message tried after its channel was switched off: dropped (queue.ts Cancelled), never "sent". */
function switchedOff(channel: Channel): Cancelled {
  const what = channel === 'smtp' ? 'e-mail' : 'the webhook';
  return Object.assign(new Error(`${what} was switched off before it could be sent`), {
    cancelled: true as const,
  });
}

const HINTS: Record<Channel, string> = {
  syslog: 'check that the logger program (package bsdutils) is installed.',
  smtp: 'check the mail server, port, security mode and password in Settings > Notifications.',
  webhook: 'check that the webhook URL is reachable from this server and accepts POST requests.',
};

/** A hint as a clause of the alert's "To resume: …": "Run: chmod 600 F." → "run chmod 600 F". */
function asClause(hint: string): string {
  return hint
    .replace(/^Run: /, 'run ')
    .replace(/^[A-Z]/, (c) => c.toLowerCase())
    .replace(/\.$/, '');
}

/** Mail and webhooks get events at or above their level, and the "resolved" of alerts that were. */
function wanted(ev: EventRecord, min: Severity): boolean {
  if (atLeast(ev.severity, min)) return true;
  const d = ev.data as { alertSeverity?: Severity } | undefined;
  return ev.type === 'alert.cleared' && !!d?.alertSeverity && atLeast(d.alertSeverity, min);
}

/** Which events dropped messages told of, for a delivery.dropped event: their ids, shown up to 20. */
function whichEvents(gone: EventRecord[]): { ids: number[]; which: string } {
  const ids = gone.filter((e) => !unstored(e)).map((e) => e.id);
  const shown = ids.slice(0, 20).map((id) => `#${id}`);
  const more = ids.length - shown.length + (gone.length - ids.length);
  const which =
    shown.length > 0
      ? `event${ids.length === 1 ? '' : 's'} ${shown.join(', ')}${more > 0 ? ` and ${more} more` : ''}; the event log keeps ${ids.length === 1 ? 'it' : 'them'}`
      : 'alerts the data directory could not store; check the alerts in the console';
  return { ids, which };
}

/** Delivered although the database refused to store it (a full disk): id 0, no log entry. */
function unstored(ev: EventRecord): boolean {
  return (ev.data as { unstored?: unknown } | undefined)?.unstored === true;
}

function eventRef(ev: EventRecord): string {
  return unstored(ev)
    ? `${ev.type} (not in the event log: the data directory could not be written when it happened)`
    : `${ev.type} #${ev.id}`;
}

function titleOf(ev: EventRecord): string {
  const t = (ev.data as { title?: unknown } | undefined)?.title;
  if (typeof t === 'string') return t;
  const first = ev.message.split(/(?<=\.)\s/)[0] ?? ev.message;
  return first.length > 100 ? `${first.slice(0, 97)}…` : first.replace(/\.$/, '');
}
