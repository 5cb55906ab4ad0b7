/**
 * Event, alert and notification settings: one JSON document in the settings table
 * (key `service.settings`), merged over defaults so a newer engine reads an older
 * document. Secrets (SMTP password, webhook signing secret) are never in it: they
 * are secret files (0600) and the API only says whether one is set.
 */
import { EngineSettings, type SettingsSetParams } from '../../../contract/events.js';
import { getSetting, setSetting, type Db } from '../persistence/db.js';
import { UserError } from '../util/errors.js';

export interface SecretFiles {
  read(name: string): string | undefined;
  write(name: string, value: string): void;
  remove(name: string): void;
}

export const SMTP_PASSWORD = 'smtp-password';
export const WEBHOOK_SECRET = 'webhook-secret';
const KEY = 'service.settings';

/** The stored part: everything but the "is a secret set" flags. */
export type StoredSettings = Omit<EngineSettings, 'smtp' | 'webhook'> & {
  smtp: Omit<EngineSettings['smtp'], 'passwordSet'>;
  webhook: Omit<EngineSettings['webhook'], 'secretSet'>;
};

export const DEFAULT_SETTINGS: StoredSettings = {
  events: { retentionDays: 90, maxEvents: 100_000 },
  alerts: {
    hostDisconnectedSec: 60,
    capacityWarningPct: 80,
    capacityCriticalPct: 90,
    latencyWarningMs: 50,
  },
  syslog: { enabled: true, minSeverity: 'info' },
  smtp: {
    enabled: false,
    host: '',
    port: 587,
    security: 'starttls',
    username: '',
    from: '',
    to: [],
    minSeverity: 'warning',
    allowInvalidCertificate: false,
  },
  webhook: { enabled: false, url: '', minSeverity: 'warning' },
  performance: { cpuLatency: 'when-busy' },
};

export class SettingsStore {
  private cached?: StoredSettings;

  constructor(
    private readonly db: Db,
    private readonly secrets: SecretFiles,
  ) {}

  /** The stored settings merged over the defaults (a damaged document falls back to them). */
  stored(): StoredSettings {
    if (this.cached) return this.cached;
    let doc: Partial<StoredSettings> = {};
    try {
      doc = JSON.parse(getSetting(this.db, KEY) ?? '{}') as Partial<StoredSettings>;
    } catch {
      doc = {};
    }
    this.cached = merge(DEFAULT_SETTINGS, doc);
    return this.cached;
  }

  /** What settings.get answers. */
  view(): EngineSettings {
    const s = this.stored();
    return {
      ...s,
      smtp: { ...s.smtp, passwordSet: this.secrets.read(SMTP_PASSWORD) !== undefined },
      webhook: { ...s.webhook, secretSet: this.secrets.read(WEBHOOK_SECRET) !== undefined },
    };
  }

  secret(name: typeof SMTP_PASSWORD | typeof WEBHOOK_SECRET): string | undefined {
    return this.secrets.read(name);
  }

  /**
   * Validates the merged result as a whole, then stores it and the secrets, all or
   * nothing: the secret files first, then the settings row and `alongside` (the audit
   * row) in one transaction. If any step fails, the secret files are put back as they
   * were and the error propagates: no change takes effect without its audit row.
   */
  update(p: SettingsSetParams, alongside: () => void = () => {}): EngineSettings {
    const { password, ...smtp } = p.smtp ?? {};
    const { secret, ...webhook } = p.webhook ?? {};
    const next = merge(this.stored(), { ...p, smtp, webhook } as Partial<StoredSettings>);
    check(
      next,
      password !== undefined ? password !== null : this.secrets.read(SMTP_PASSWORD) !== undefined,
    );
    const changes: [string, string | null | undefined][] = [
      [SMTP_PASSWORD, password],
      [WEBHOOK_SECRET, secret],
    ];
    const before = changes.map(([name]) => [name, this.secrets.read(name)] as const);
    try {
      for (const [name, value] of changes) this.putSecret(name, value);
      this.db.transaction(() => {
        setSetting(this.db, KEY, JSON.stringify(next));
        alongside();
      })();
    } catch (err) {
      for (const [name, value] of before) {
        try {
          this.putSecret(name, value ?? null);
        } catch {
          // the first error is the one to report; this one has the same cause
        }
      }
      throw err;
    }
    this.cached = next;
    return this.view();
  }

  /** undefined: leave it; null: remove it; a string: store it. */
  private putSecret(name: string, value: string | null | undefined): void {
    if (value === null) this.secrets.remove(name);
    else if (value !== undefined) this.secrets.write(name, value);
  }
}

/** Rules that span fields; each failure names the field and what to do. */
function check(s: StoredSettings, hasPassword: boolean): void {
  const bad = (field: string, message: string, hint: string) => {
    throw new UserError(message, hint, 'invalid', field);
  };
  if (s.alerts.capacityCriticalPct < s.alerts.capacityWarningPct) {
    bad(
      'alerts.capacityCriticalPct',
      `The critical capacity level (${s.alerts.capacityCriticalPct} %) is below the warning level (${s.alerts.capacityWarningPct} %).`,
      'Set the critical level at or above the warning level.',
    );
  }
  if (s.smtp.enabled) {
    if (!s.smtp.host)
      bad(
        'smtp.host',
        'E-mail is enabled but no mail server is set.',
        'Enter the host name of your mail relay.',
      );
    if (!s.smtp.from)
      bad(
        'smtp.from',
        'E-mail is enabled but no sender address is set.',
        'Enter the address alerts are sent from.',
      );
    if (s.smtp.to.length === 0)
      bad(
        'smtp.to',
        'E-mail is enabled but no recipient is set.',
        'Enter at least one address to send alerts to.',
      );
    if (s.smtp.username && s.smtp.security === 'none') {
      bad(
        'smtp.security',
        'A mail password cannot be sent over an unencrypted connection.',
        'Choose STARTTLS (port 587) or TLS (port 465).',
      );
    }
    if (s.smtp.username && !hasPassword)
      bad(
        'smtp.password',
        `No password is set for the mail user ${s.smtp.username}.`,
        'Enter the password, or clear the user name if the relay needs none.',
      );
  }
  if (s.webhook.enabled && !s.webhook.url) {
    bad(
      'webhook.url',
      'The webhook is enabled but has no URL.',
      'Enter the http:// or https:// address that receives the alerts.',
    );
  }
}

/** Two levels deep, which is all the settings have; arrays replace. */
function merge(base: StoredSettings, patch: Partial<StoredSettings>): StoredSettings {
  const out = structuredClone(base) as unknown as Record<string, Record<string, unknown>>;
  for (const [section, values] of Object.entries(patch ?? {})) {
    if (!(section in out) || !values || typeof values !== 'object') continue;
    for (const [k, v] of Object.entries(values)) {
      if (k in out[section]! && v !== undefined) out[section]![k] = v;
    }
  }
  // A stored document from another version may hold a value the schema now refuses
  // (an older engine reading a newer choice): that field, and only it, takes its
  // default. Resetting the whole document lost the mail and webhook settings, and
  // shortened retention, which the next prune then applied.
  const schema = EngineSettings.omit({ smtp: true, webhook: true });
  const defaults = base as unknown as Record<string, Record<string, unknown>>;
  for (let round = 0; round < 4; round++) {
    const parsed = schema.safeParse(out);
    if (parsed.success) return out as unknown as StoredSettings;
    for (const issue of parsed.error.issues) {
      const [section, key] = issue.path as string[];
      if (section === undefined || !(section in defaults)) continue;
      if (key === undefined || !(key in defaults[section]!))
        out[section] = structuredClone(defaults[section]!);
      else out[section]![key] = structuredClone(defaults[section]![key]);
    }
  }
  return structuredClone(base);
}
