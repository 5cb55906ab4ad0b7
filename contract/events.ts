/**
 * The events, alerts, notification settings and diagnostics part of the API contract.
 * api.ts wires these into its method and event tables; this file imports nothing from
 * api.ts so the two never form an initialisation cycle.
 *
 * An event is something that happened (engine started, a port could not listen, an
 * alert was raised). An alert is a condition that is true now (a host is gone, a
 * filesystem is 91 % full): raised once, acknowledged by a person, cleared when the
 * condition ends.
 */
import { z } from 'zod';

export const CLEARED_WHY = ['resolved', 'superseded', 'acknowledged'] as const;
export type ClearedWhy = (typeof CLEARED_WHY)[number];

/** Ordered: a filter "at least warning" keeps warning, error and critical. */
export const SEVERITIES = ['info', 'warning', 'error', 'critical'] as const;
export const Severity = z.enum(SEVERITIES);
export type Severity = z.infer<typeof Severity>;

export const EventRecord = z.object({
  id: z.number().int(),
  ts: z.number(), // ms since epoch
  severity: Severity,
  /** Dotted type, e.g. engine.started, alert.raised, delivery.failing. */
  type: z.string(),
  /** What happened and what to do, for a person. */
  message: z.string(),
  data: z.unknown().optional(),
});
export type EventRecord = z.infer<typeof EventRecord>;

export const EventsListParams = z
  .object({
    /** ms since epoch, inclusive. */
    since: z.number().nonnegative().optional(),
    /** ms since epoch, exclusive. */
    until: z.number().nonnegative().optional(),
    /** At least this severe. */
    severity: Severity.optional(),
    /** An exact type, or a prefix ending in ".*" (alert.*). */
    type: z
      .string()
      .max(128)
      .regex(/^[a-z0-9][a-z0-9.-]*(\.\*)?$/, 'a dotted event type, optionally ending in .*')
      .optional(),
    limit: z.number().int().min(1).max(1000).default(100),
    /** Paging: only events with a smaller id (pass the previous page's nextBefore). */
    before: z.number().int().positive().optional(),
  })
  .strict();

export const EventsListResult = z.object({
  /** Newest first. */
  events: z.array(EventRecord),
  /** The `before` of the next (older) page; null when this was the last one. */
  nextBefore: z.number().int().nullable(),
});

export const Alert = z.object({
  id: z.number().int(),
  /** The rule that raised it: host.disconnected, capacity, io.errors, io.latency, volume.backing-file, volume.offline, volume.io-threads, listener.down, filesystem.not-answering, delivery.paused, metrics.endpoint, engine.unclean-restart, mirror.*. */
  rule: z.string(),
  /** What it is about, unique per rule while active (a host on a volume, a filesystem, a namespace). */
  subject: z.string(),
  severity: Severity,
  /** A short title for lists and mail subjects. */
  title: z.string(),
  /** What happened and what to do. */
  message: z.string(),
  raisedAt: z.number(),
  clearedAt: z.number().nullable(),
  ackedAt: z.number().nullable(),
  ackedBy: z.string().nullable(),
  /**
   * How a cleared alert ended: its condition ended, an alert of the same rule and
   * subject at another severity replaced it, or acknowledging it closed it. Absent
   * while active, and for alerts cleared before the engine stored the reason.
   */
  clearedWhy: z.enum(CLEARED_WHY).optional(),
});
export type Alert = z.infer<typeof Alert>;

export const AlertsListParams = z
  .object({
    /**
     * true: only alerts not yet cleared; false: only cleared ones, the last cleared
     * first; absent: both. Otherwise the newest raised come first.
     */
    active: z.boolean().optional(),
    limit: z.number().int().min(1).max(1000).default(200),
  })
  .strict();

// ---------------------------------------------------------------- settings

const Email = z
  .string()
  .max(254)
  .regex(/^[^\s@<>]+@[^\s@<>]+$/, 'an e-mail address');
/** A DNS name or an IPv4 address (dotted labels), or an IPv6 address, without brackets. */
function hostNameProblem(v: string): string | null {
  if (
    v === '' ||
    /^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?$/.test(v)
  )
    return null;
  if (/^[0-9A-Fa-f:.]+$/.test(v) && v.includes(':')) {
    try {
      new URL(`http://[${v}]/`); // parses only as an IPv6 address
      return null;
    } catch {
      // not one: said below
    }
  }
  if (/^[^:[\]]+:\d+$/.test(v))
    return 'a host name without a port (the port is a setting of its own)';
  if (v.startsWith('[')) return 'an IPv6 address without brackets';
  return 'a host name or IP address';
}

/** A refinement that refuses a value with what `problemOf` says of it (null: fine). */
function saying(problemOf: (v: string) => string | null) {
  return (v: string, ctx: z.RefinementCtx) => {
    const problem = problemOf(v);
    if (problem) ctx.addIssue({ code: 'custom', message: problem });
  };
}

const HostName = z.string().max(253).superRefine(saying(hostNameProblem));

const EventsSettings = z.object({
  /** Events older than this are deleted. */
  retentionDays: z.number().int().min(1).max(3650),
  /** At most this many events are kept, and as many closed alerts; the oldest go first. */
  maxEvents: z.number().int().min(1000).max(10_000_000),
});
const AlertThresholds = z.object({
  /** A host that had a connection and has none for this long raises host.disconnected. */
  hostDisconnectedSec: z.number().int().min(5).max(86_400),
  capacityWarningPct: z.number().int().min(50).max(99),
  capacityCriticalPct: z.number().int().min(50).max(100),
  /** Read or write latency (p99 where known, else the mean) above this for 30 s raises io.latency. */
  latencyWarningMs: z.number().min(1).max(60_000),
});
const SyslogSettings = z.object({
  enabled: z.boolean(),
  minSeverity: Severity,
});
const SmtpSettings = z.object({
  enabled: z.boolean(),
  host: HostName,
  port: z.number().int().min(1).max(65535),
  /** starttls: plain connection upgraded (port 587); tls: TLS from the start (465); none: no encryption. */
  security: z.enum(['starttls', 'tls', 'none']),
  /** Empty: no authentication. The password is stored as a secret file, never returned. */
  username: z.string().max(256),
  from: Email.or(z.literal('')),
  to: z.array(Email).max(20),
  minSeverity: Severity,
  /** Accept a self-signed relay certificate (a branch's own mail server). */
  allowInvalidCertificate: z.boolean(),
});
/**
 * A webhook URL: http(s), one that parses (a port past 65535 or a bad escape would only
 * fail at the first event), and without user:password@, which the request could not
 * carry and an error would have spelled out in the event log.
 */
function webhookUrlProblem(u: string): string | null {
  if (u === '') return null;
  if (!/^https?:\/\/\S+$/.test(u)) return 'an http:// or https:// URL';
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    return 'an http:// or https:// URL that parses (check the host, port and % escapes)';
  }
  if (url.username || url.password)
    return 'a URL without user:password@ (put a token in the path or use the signing secret)';
  return null;
}

const WebhookSettings = z.object({
  enabled: z.boolean(),
  url: z.string().max(2048).superRefine(saying(webhookUrlProblem)),
  minSeverity: Severity,
});

/**
 * How the node trades power for I/O latency. cpuLatency: while held, the CPUs never
 * enter an idle state that is slow to wake from (PM QoS, like tuned's
 * latency-performance profile): 'when-busy' holds it while I/O flows, 'always' while
 * the engine runs, 'off' never. Needs the engine to run as root.
 */
export const PerformanceSettings = z.object({
  cpuLatency: z.enum(['when-busy', 'always', 'off']),
});

export const EngineSettings = z.object({
  events: EventsSettings,
  alerts: AlertThresholds,
  syslog: SyslogSettings,
  smtp: SmtpSettings.extend({ passwordSet: z.boolean() }),
  webhook: WebhookSettings.extend({ secretSet: z.boolean() }),
  performance: PerformanceSettings,
});
export type EngineSettings = z.infer<typeof EngineSettings>;

/** A partial change; secrets are write-only: a string sets one, null deletes it. */
export const SettingsSetParams = z
  .object({
    events: EventsSettings.partial().strict().optional(),
    alerts: AlertThresholds.partial().strict().optional(),
    syslog: SyslogSettings.partial().strict().optional(),
    performance: PerformanceSettings.partial().strict().optional(),
    smtp: SmtpSettings.partial()
      .extend({ password: z.string().min(1).max(1024).nullable().optional() })
      .strict()
      .optional(),
    webhook: WebhookSettings.partial()
      .extend({
        /** Signs each POST: X-BranchSAN-Signature: sha256=HMAC(secret, body). */
        secret: z.string().min(8).max(1024).nullable().optional(),
      })
      .strict()
      .optional(),
  })
  .strict();
export type SettingsSetParams = z.infer<typeof SettingsSetParams>;

export const NotificationsTestResult = z.object({
  /** The channels the test message was queued on (ui is always there). */
  channels: z.array(z.enum(['ui', 'syslog', 'smtp', 'webhook'])),
  eventId: z.number().int(),
});

export const DiagnosticsBundle = z.object({
  /** Where the engine wrote it (DATA/diagnostics/…); readable by the service user. */
  path: z.string(),
  sizeBytes: z.number().int(),
  createdAt: z.number(),
});
