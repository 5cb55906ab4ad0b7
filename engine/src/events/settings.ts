/**
 * Event, alert and notification settings: one JSON document in the settings table
 * (key `service.settings`), merged over defaults so a newer engine reads an older
 * document. Secrets (SMTP password, webhook signing secret) are never in it: they
 * are secret files (0600) and the API only says whether one is set.
 *
 * A stored value this version refuses (written by a newer engine that added a choice,
 * or allowed by an older one with looser bounds) is replaced field by field: that
 * field alone takes the nearest allowed value or its default, every other field is
 * kept, and the replacement is reported (resets()). The stored document keeps the
 * refused value until someone changes that very field, so an unrelated settings.set
 * never writes the replacement over it, and going back to the newer engine finds it.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { EngineSettings, SettingsSetParams } from '../../../contract/events.js';
import { getSetting, setSetting, type Db } from '../persistence/db.js';
import { storageProblem, UserError } from '../util/errors.js';

export interface SecretFiles {
  read(name: string): string | undefined;
  /** Writes `value` aside (synced) as the staged value `tag` of `name`; the one in use stays. */
  stage(name: string, tag: string, value: string): void;
  /**
   * Puts the staged value `tag` of `name` in its place (a rename); false when there is
   * none (put in place before). When the rename fails the staged value stays.
   */
  apply(name: string, tag: string): boolean;
  /** Removes every staged value but those named `${name}.${tag}` in `keep`. */
  discard(keep: ReadonlySet<string>): void;
  /**
   * Refuses, saying what to run, what would keep `name` from being deleted (a directory
   * in its place), before a change that deletes it is stored.
   */
  checkRemovable(name: string): void;
  remove(name: string): void;
}

export const SMTP_PASSWORD = 'smtp-password';
export const WEBHOOK_SECRET = 'webhook-secret';
const KEY = 'service.settings';
/**
 * The secret changes stored but maybe not in effect yet: {name: tag of the staged new
 * value, or null for a removal}. Written in the change's transaction, emptied once they
 * are in effect; what it still names is tried again at every change and every start.
 */
const PENDING_KEY = 'service.settings.secrets';
type Pending = Record<string, string | null>;

const SECRET_NAMES: Record<string, string> = {
  [SMTP_PASSWORD]: 'mail password',
  [WEBHOOK_SECRET]: 'webhook signing secret',
};

/** A secret change that was stored but could not be put in effect, and why. */
export interface SecretNotInPlace {
  name: string;
  removal: boolean;
  error: unknown;
}

/**
 * The settings change was stored (with its audit row), but a new or removed secret of
 * it is not in effect: its file could not be renamed into place or deleted. The old
 * secret stays in use, and the change is tried again at every save and every start.
 */
export class SecretsNotInPlace extends UserError {
  constructor(readonly failed: SecretNotInPlace[]) {
    super(
      `The settings were saved, but ${describeNotInPlace(failed)}.`,
      notInPlaceHint(failed),
      'unavailable',
    );
  }
}

/**
 * What to do about secret changes not in effect: what the failures that say so ask
 * (a directory in a secret's place: rm -r it), else NOT_IN_PLACE_HINT.
 */
export function notInPlaceHint(failed: readonly SecretNotInPlace[]): string {
  const asked = failed.flatMap((f) =>
    f.error instanceof UserError && f.error.hint ? [f.error.hint] : [],
  );
  if (asked.length === 0) return NOT_IN_PLACE_HINT;
  return `${asked.join(' ')} BranchSAN tries again at every settings change and at its next start.`;
}

export const NOT_IN_PLACE_HINT =
  'BranchSAN tries again at every settings change and at its next start. Fix the cause on the data directory ' +
  '(DATA/secrets: a full or read-only file system, a file held by another program), then restart the engine or save the settings again.';

/** "the new mail password could not be put in place (EBUSY: …): the old one stays in use". */
export function describeNotInPlace(failed: readonly SecretNotInPlace[]): string {
  return failed
    .map((f) => {
      const what = SECRET_NAMES[f.name] ?? f.name;
      const why = (f.error as Error).message ?? String(f.error);
      // one that says what is there (a directory in its place) has no old one in use
      if (f.error instanceof UserError)
        return `the ${f.removal ? '' : 'new '}${what} could not be ${f.removal ? 'deleted' : 'put in place'}: ${why.charAt(0).toLowerCase()}${why.slice(1).replace(/\.$/, '')}`;
      return f.removal
        ? `the ${what} could not be deleted (${why}): it stays in use`
        : `the new ${what} could not be put in place (${why}): the old one stays in use`;
    })
    .join('; ');
}

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

/** A stored setting this version cannot use as it is, and what it uses instead. */
export interface SettingsReset {
  /** "performance.cpuLatency"; "service.settings" when the whole document is unreadable. */
  field: string;
  /** For people: why, and what is used instead. */
  message: string;
}

type Section = keyof StoredSettings;
type Doc = Record<string, unknown>;
type Fields = Record<string, Record<string, unknown>>;

interface Loaded {
  /** What is stored (over the defaults), refused values included, to be written back. */
  doc: Doc;
  /** What the engine uses. */
  settings: StoredSettings;
  resets: SettingsReset[];
}

export class SettingsStore {
  private cached?: Loaded;

  constructor(
    private readonly db: Db,
    private readonly secrets: SecretFiles,
  ) {}

  /** The settings in use: the stored ones over the defaults, a refused field replaced alone. */
  stored(): StoredSettings {
    return this.load().settings;
  }

  /** The stored fields this version refused, with what it uses instead (empty: none). */
  resets(): readonly SettingsReset[] {
    return this.load().resets;
  }

  /** What settings.get answers. */
  view(): EngineSettings {
    const s = this.stored();
    return {
      ...s,
      smtp: { ...s.smtp, passwordSet: this.isSet(SMTP_PASSWORD) },
      webhook: { ...s.webhook, secretSet: this.isSet(WEBHOOK_SECRET) },
    };
  }

  /**
   * A secret is set: its file is there, usable or not. One that cannot be used (others
   * can read it, the engine may not) pauses its channel with an alert that says what to
   * run; the settings stay readable and savable meanwhile, else the owner could neither
   * see them nor enter the secret again, and could not change any other setting.
   */
  private isSet(name: typeof SMTP_PASSWORD | typeof WEBHOOK_SECRET): boolean {
    try {
      return this.secrets.read(name) !== undefined;
    } catch (err) {
      if (err instanceof UserError) return true;
      throw err;
    }
  }

  secret(name: typeof SMTP_PASSWORD | typeof WEBHOOK_SECRET): string | undefined {
    return this.secrets.read(name);
  }

  /**
   * Validates the change and the sections it touches as a whole, then stores it and
   * the secrets, all or nothing: each new secret is written aside (staged), then the
   * settings row, the list of secret changes to put in effect (PENDING_KEY) and
   * `alongside` (the audit row) go in one transaction, and only once that is stored do
   * the new secrets take their place (a rename) and removed ones go (neither needs room
   * on the disk). If a step before fails, the staged files are removed and the error
   * propagates: no change takes effect without its audit row. (Before, the secret files
   * were replaced first and put back after a failure: on a full disk putting back failed
   * too, and a new password was in use that the API said was not saved.) A rename or
   * removal that fails after the change is stored throws SecretsNotInPlace: the change
   * is in the settings, the old secret stays in use, and its staged value is put in
   * place at the next change or start (applyPending). Fields the change does not name
   * are written back as they were stored.
   */
  update(p: SettingsSetParams, alongside: () => void = () => {}): EngineSettings {
    const valid = SettingsSetParams.safeParse(p);
    if (!valid.success) {
      const issue = valid.error.issues[0]!;
      const field = issue.path.join('.');
      throw new UserError(
        `The setting ${field || '(unnamed)'} is not valid: ${issue.message}.`,
        'Correct the value and save again.',
        'invalid',
        field,
      );
    }
    const { password, ...smtp } = p.smtp ?? {};
    const { secret, ...webhook } = p.webhook ?? {};
    const doc = overlay(this.load().doc, { ...p, smtp, webhook });
    const { settings: next, resets } = readFields(doc);
    check(
      next,
      password !== undefined ? password !== null : this.isSet(SMTP_PASSWORD),
      new Set(Object.keys(p).filter((k) => p[k as Section] !== undefined) as Section[]),
    );
    const loaded: Loaded = { doc, settings: repair(next, resets), resets };
    const changes: [string, string | null | undefined][] = [
      [SMTP_PASSWORD, password],
      [WEBHOOK_SECRET, secret],
    ];
    const tag = randomBytes(6).toString('base64url');
    const mine: Pending = {};
    for (const [name, value] of changes) if (value !== undefined) mine[name] = value && tag;
    const before = this.pending();
    try {
      for (const [name, value] of changes) {
        if (value) this.secrets.stage(name, tag, value);
        else if (value === null) this.secrets.checkRemovable(name);
      }
      this.db.transaction(() => {
        setSetting(this.db, KEY, JSON.stringify(doc));
        if (Object.keys(mine).length > 0)
          setSetting(this.db, PENDING_KEY, JSON.stringify({ ...before, ...mine }));
        alongside();
      })();
    } catch (err) {
      try {
        this.secrets.discard(stagedIn(before));
      } catch {
        // the error that stopped the change is the one to report
      }
      throw err;
    }
    this.cached = loaded;
    const failed = this.applyPending();
    if (failed.length > 0) throw new SecretsNotInPlace(failed);
    return this.view();
  }

  /**
   * Puts the stored secret changes in effect: renames their staged values into place,
   * deletes the removed ones, and drops the staged values no stored change names (a
   * change the database refused). Returns those that failed: they stay named, and their
   * old secret in use, for the next try (the next change, or the start).
   */
  applyPending(): SecretNotInPlace[] {
    const pending = this.pending();
    const failed: SecretNotInPlace[] = [];
    const left: Pending = {};
    for (const [name, tag] of Object.entries(pending)) {
      try {
        if (tag === null) this.secrets.remove(name);
        else this.secrets.apply(name, tag);
      } catch (error) {
        failed.push({ name, removal: tag === null, error });
        left[name] = tag;
      }
    }
    try {
      this.secrets.discard(stagedIn(left));
    } catch {
      // a leftover staged value is never put in place: no stored change names it
    }
    if (Object.keys(left).length < Object.keys(pending).length) {
      try {
        setSetting(this.db, PENDING_KEY, JSON.stringify(left));
      } catch (err) {
        // in effect already; trying it again at the next start changes nothing
        if (!storageProblem(err)) throw err;
      }
    }
    return failed;
  }

  private pending(): Pending {
    const text = getSetting(this.db, PENDING_KEY);
    if (text === undefined) return {};
    try {
      const parsed: unknown = JSON.parse(text);
      if (!isObject(parsed)) return {};
      return Object.fromEntries(
        Object.entries(parsed).filter(
          (e): e is [string, string | null] =>
            e[0] in SECRET_NAMES && (e[1] === null || typeof e[1] === 'string'),
        ),
      );
    } catch {
      return {};
    }
  }

  private load(): Loaded {
    if (this.cached) return this.cached;
    const text = getSetting(this.db, KEY);
    const notes: SettingsReset[] = [];
    let stored: Doc = {};
    if (text !== undefined) {
      try {
        const parsed: unknown = JSON.parse(text);
        if (!isObject(parsed)) throw new Error('not an object');
        stored = parsed;
      } catch {
        notes.push({
          field: KEY,
          message:
            'the stored settings document is damaged and cannot be read, so every setting is at its default',
        });
      }
    }
    for (const section of Object.keys(DEFAULT_SETTINGS)) {
      if (stored[section] !== undefined && !isObject(stored[section])) {
        notes.push({
          field: section,
          message: `the stored ${section} settings are not a group of settings, so they are at their defaults`,
        });
      }
    }
    const doc = overlay(DEFAULT_SETTINGS as unknown as Doc, stored);
    const { settings, resets } = readFields(doc);
    resets.unshift(...notes);
    this.cached = { doc, settings: repair(settings, resets), resets };
    return this.cached;
  }
}

/** One sentence for the event log: which settings were replaced and what to do. */
export function describeResets(resets: readonly SettingsReset[]): string {
  return (
    `Some stored settings cannot be used by this engine version (a newer or older version may have written them): ` +
    `${resets.map((r) => `${r.field}: ${r.message}`).join('; ')}. ` +
    'All other settings are kept, and the stored values stay as they are until you change them. ' +
    'Check these settings in the console and save them, or go back to the engine version that wrote them.'
  );
}

/** Rules that span fields, for the sections named (all by default); each failure names the field and what to do. */
function check(
  s: StoredSettings,
  hasPassword: boolean,
  sections: ReadonlySet<Section> = new Set(Object.keys(DEFAULT_SETTINGS) as Section[]),
): void {
  const bad = (field: string, message: string, hint: string) => {
    throw new UserError(message, hint, 'invalid', field);
  };
  if (sections.has('alerts') && s.alerts.capacityCriticalPct < s.alerts.capacityWarningPct) {
    bad(
      'alerts.capacityCriticalPct',
      `The critical capacity level (${s.alerts.capacityCriticalPct} %) is below the warning level (${s.alerts.capacityWarningPct} %).`,
      'Set the critical level at or above the warning level.',
    );
  }
  if (sections.has('smtp') && s.smtp.enabled) {
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
  if (sections.has('webhook') && s.webhook.enabled && !s.webhook.url) {
    bad(
      'webhook.url',
      'The webhook is enabled but has no URL.',
      'Enter the http:// or https:// address that receives the alerts.',
    );
  }
}

/** The staged values `pending` names, as SecretFiles.discard keeps them. */
function stagedIn(pending: Pending): Set<string> {
  return new Set(
    Object.entries(pending)
      .filter((e) => e[1] !== null)
      .map(([name, tag]) => `${name}.${tag}`),
  );
}

const isObject = (v: unknown): v is Doc => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `top` over `base`, two levels deep (all the settings have); arrays replace. */
function overlay(base: Doc, top: Doc): Doc {
  const out = structuredClone(base);
  for (const [section, values] of Object.entries(top)) {
    if (values === undefined) continue;
    const into = out[section];
    if (isObject(into) && isObject(values)) {
      for (const [k, v] of Object.entries(values))
        if (v !== undefined) into[k] = structuredClone(v);
    } else if (!(section in DEFAULT_SETTINGS)) {
      out[section] = structuredClone(values); // another version's section: kept as it is
    }
    // a known section stored as something else than a group is unusable (reported by load)
  }
  return out;
}

/** Each known field of `doc` this version accepts; a refused one alone takes a replacement. */
function readFields(doc: Doc): { settings: StoredSettings; resets: SettingsReset[] } {
  const out = structuredClone(DEFAULT_SETTINGS) as unknown as Fields;
  const resets: SettingsReset[] = [];
  const shapes = EngineSettings.shape as unknown as Record<string, z.ZodObject>;
  for (const [section, fields] of Object.entries(out)) {
    const stored = doc[section];
    if (!isObject(stored)) continue;
    for (const key of Object.keys(fields)) {
      const value = stored[key];
      if (value === undefined) continue;
      const schema = shapes[section]!.shape[key] as z.ZodType;
      if (schema.safeParse(value).success) {
        fields[key] = value;
        continue;
      }
      const near = nearest(schema, value);
      if (near !== undefined) fields[key] = near;
      resets.push({
        field: `${section}.${key}`,
        message: `${shown(section, key, value, 'the stored value')} is not valid in this version, so ${shown(section, key, fields[key], near === undefined ? 'the default' : 'the nearest allowed value')} is used`,
      });
    }
  }
  // A replaced capacity level never ends below / above the other one: it follows it.
  // (Both as stored but crossed is a mistake of the change itself, which check refuses.)
  const a = out.alerts as StoredSettings['alerts'];
  const reset = (f: string) => resets.find((r) => r.field === `alerts.${f}`);
  const replaced = reset('capacityCriticalPct') ?? reset('capacityWarningPct');
  if (a.capacityCriticalPct < a.capacityWarningPct && replaced) {
    const critical = replaced.field === 'alerts.capacityCriticalPct';
    const field = critical ? 'capacityCriticalPct' : 'capacityWarningPct';
    const level = critical ? a.capacityWarningPct : a.capacityCriticalPct;
    a[field] = level;
    const value = (doc.alerts as Doc)[field];
    replaced.message = `${shown('alerts', field, value, 'the stored value')} is not valid in this version, so ${level} is used, the ${critical ? 'warning' : 'critical'} level (the critical level may not be below the warning level)`;
  }
  return { settings: out as unknown as StoredSettings, resets };
}

/** A refused number clamped into its bounds, a list without its refused items; undefined: none. */
function nearest(schema: z.ZodType, value: unknown): unknown {
  let candidate: unknown;
  if (schema instanceof z.ZodNumber && typeof value === 'number' && Number.isFinite(value)) {
    let n = Math.min(Math.max(value, schema.minValue ?? -Infinity), schema.maxValue ?? Infinity);
    if (schema.isInt) n = Math.round(n);
    candidate = n;
  } else if (schema instanceof z.ZodArray && Array.isArray(value)) {
    const element = schema.element as z.ZodType;
    const items = value.filter((v) => element.safeParse(v).success);
    while (items.length > 0 && !schema.safeParse(items).success) items.pop();
    candidate = items;
  }
  return candidate !== undefined && schema.safeParse(candidate).success ? candidate : undefined;
}

/** A value for the event log; free text that may carry a token or a name is not repeated. */
function shown(section: string, key: string, value: unknown, what: string): string {
  const quiet =
    (section === 'webhook' && key === 'url') || (section === 'smtp' && key === 'username');
  const text = JSON.stringify(value);
  return quiet || text === undefined || text.length > 60 ? what : `${what} ${text}`;
}

/**
 * A channel left switched on with a required field replaced (a mail server name this
 * version refuses) cannot work: it is switched off in what the engine uses, and said
 * so. The stored switch stays on, so fixing the field turns the channel back on.
 */
function repair(s: StoredSettings, resets: SettingsReset[]): StoredSettings {
  const out = structuredClone(s);
  const channels = [
    ['smtp', 'e-mail alerts'],
    ['webhook', 'webhook alerts'],
  ] as const;
  for (const [section, what] of channels) {
    if (!out[section].enabled) continue;
    try {
      check(out, true, new Set([section]));
    } catch (err) {
      out[section].enabled = false;
      resets.push({
        field: `${section}.enabled`,
        message: `${what} are off until this is fixed: ${(err as Error).message.replace(/\.$/, '')}`,
      });
    }
  }
  return out;
}
