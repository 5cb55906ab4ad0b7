/**
 * The diagnostics bundle: one .tar.gz a person can attach to a support request.
 * It holds the engine's logs, its configuration, recent events and alerts, the
 * metric history of the last hour, and versions and system facts, with every
 * secret removed: values of the files in DATA/secrets, anything under a key that
 * names a password, token, secret or key, tokens in URLs, and webhook paths.
 *
 * The engine builds it over the API (with its live state); `branchsan diagnostics`
 * builds it straight from the data directory, so it works when the engine will not
 * start, which is when it is needed most. The tar format (ustar) is written here:
 * a 512-byte header per file is all it takes, and it keeps the engine free of a
 * dependency and of a `tar` binary it may not find on a minimal server.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { PassThrough } from 'node:stream';
import { createGzip } from 'node:zlib';
import { EventStore } from '../events/event-store.js';
import { AlertStore } from '../events/alert-store.js';
import { redactUrl } from '../events/delivery/webhook.js';
import { openDatabaseReadOnly, type Db } from '../persistence/db.js';
import { TargetStore } from '../persistence/target-store.js';
import { LOG_FILE, logDir } from '../util/log-file.js';
import { makeDirs, productVersion } from '../util/paths.js';
import { readIfRegular } from '../util/secret-file.js';

export interface BundleOptions {
  dataDir: string;
  /** The engine's open database; without it the file is opened read-only. */
  db?: Db;
  /** Live state from a running engine (status, connected hosts). */
  live?: () => unknown;
  /** Where to write the .tar.gz. */
  outFile: string;
  now?: Date;
}

export const DIAGNOSTICS_DIR = 'diagnostics';
const KEEP_BUNDLES = 5;
const MAX_EVENTS = 5000;

/** The default place the engine writes bundles: DATA/diagnostics/branchsan-diagnostics-HOST-STAMP.tar.gz. */
export function defaultBundlePath(dataDir: string, now = new Date()): string {
  return path.join(dataDir, DIAGNOSTICS_DIR, bundleName(now));
}

export function bundleName(now = new Date()): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, 'Z');
  const host = os.hostname().replace(/[^A-Za-z0-9.-]/g, '_') || 'node';
  return `branchsan-diagnostics-${host}-${stamp}.tar.gz`;
}

export async function buildDiagnosticsBundle(
  o: BundleOptions,
): Promise<{ path: string; sizeBytes: number }> {
  const now = o.now ?? new Date();
  const top = path.basename(o.outFile).replace(/\.tar\.gz$/, '') || 'branchsan-diagnostics';
  const redact = new Redactor(o.dataDir);
  const problems: string[] = [];
  const files: { name: string; body: () => string | Promise<string> }[] = [];
  const add = (name: string, body: () => string | Promise<string>) => files.push({ name, body });

  let db = o.db;
  let ownDb = false;
  if (!db) {
    try {
      db = openDatabaseReadOnly(path.join(o.dataDir, 'branchsan.db'));
      ownDb = true;
    } catch (err) {
      problems.push(`database: ${(err as Error).message}`);
    }
  }
  add('README.txt', () => readme(now));
  add('system.json', async () => json(await systemInfo(o.dataDir)));
  if (o.live) add('live.json', () => json(o.live!()));
  if (db) {
    const d = db;
    add('config/target.json', () => json(new TargetStore(d).load()));
    add('config/settings.json', () => json(settingsOf(d)));
    add('events.jsonl', async () =>
      (await new EventStore(d).list({ limit: MAX_EVENTS })).events
        .reverse()
        .map((e) => JSON.stringify(e))
        .join('\n'),
    );
    add('alerts.json', () => {
      const s = new AlertStore(d);
      return json({ active: s.active(), recent: s.list(false, 500) });
    });
    add('audit.jsonl', () =>
      (d.prepare('SELECT * FROM audit ORDER BY id DESC LIMIT 1000').all() as unknown[])
        .reverse()
        .map((r) => JSON.stringify(r))
        .join('\n'),
    );
    add('database.json', () => json(databaseInfo(d)));
    add('metrics-last-hour.jsonl', () => metricsExcerpt(d, now.getTime()));
  }
  add('config/secrets.txt', () => secretsListing(o.dataDir));
  for (const f of logFiles(o.dataDir))
    add(`logs/${f}`, () => fs.promises.readFile(path.join(logDir(o.dataDir), f), 'utf8'));

  makeDirs(path.dirname(o.outFile), 0o750);
  const tmp = `${o.outFile}.${process.pid}.tmp`;
  const tar = new PassThrough();
  const done = pipeline(tar, createGzip(), fs.createWriteStream(tmp, { mode: 0o600 }));
  try {
    const mtime = Math.floor(now.getTime() / 1000);
    for (const f of files) {
      let text: string;
      try {
        text = await redact.textInSteps(await f.body(), f.name.endsWith('.json'));
      } catch (err) {
        problems.push(`${f.name}: ${(err as Error).message}`);
        continue;
      }
      await writeEntry(tar, `${top}/${f.name}`, Buffer.from(text), mtime);
    }
    await writeEntry(
      tar,
      `${top}/problems.txt`,
      Buffer.from(problems.length ? problems.join('\n') + '\n' : 'none\n'),
      mtime,
    );
    tar.end(Buffer.alloc(1024)); // two zero blocks end the archive
    await done;
  } catch (err) {
    tar.destroy();
    fs.rmSync(tmp, { force: true });
    throw err;
  } finally {
    if (ownDb) db!.close();
  }
  fs.renameSync(tmp, o.outFile);
  return { path: o.outFile, sizeBytes: fs.statSync(o.outFile).size };
}

/** Keeps the newest bundles in DATA/diagnostics; older ones are deleted. */
export function pruneBundles(dataDir: string, keep = KEEP_BUNDLES): void {
  const dir = path.join(dataDir, DIAGNOSTICS_DIR);
  let names: string[];
  try {
    names = fs
      .readdirSync(dir)
      .filter((n) => n.endsWith('.tar.gz'))
      .sort();
  } catch {
    return;
  }
  for (const n of names.slice(0, Math.max(0, names.length - keep)))
    fs.rmSync(path.join(dir, n), { force: true });
}

// ---------------------------------------------------------------- redaction

const SECRET_KEY = /pass(word)?|secret|token|private|credential|(^|[._-])key$|apikey|psk|dhchap/i;
/** Characters of a file redacted at one go before the event loop runs again. */
const STEP_CHARS = 256 * 1024;
const PEM_BEGIN = '-----BEGIN ';
const PEM_END = '-----END ';

/** Removes secrets from text: known secret values first, then secret-looking fields and URL tokens. */
export class Redactor {
  private readonly values: string[] = [];

  constructor(dataDir: string) {
    // Opened without blocking and read only if a regular file (a named pipe put there
    // would hold the thread for good); linked-in secrets (a TLS key) are read through the link.
    for (const file of walk(path.join(dataDir, 'secrets'), true)) {
      const content = safe(() => readIfRegular(file).text);
      if (content == null) continue;
      const whole = content.trim();
      if (whole.length >= 4) this.values.push(whole);
      // PEM keys and multi-line files: each substantial line on its own too
      for (const line of whole.split(/\r?\n/))
        if (line.trim().length >= 8) this.values.push(line.trim());
    }
    this.values.sort((a, b) => b.length - a.length); // longest first, so a part never leaves a remainder
  }

  /**
   * text(), for a large file of lines (a log of 10 MiB took the engine's thread 370 ms
   * in one go): a piece of about STEP_CHARS at a time, at line ends, letting the event
   * loop run between pieces, so hosts' I/O and other calls go on while a bundle is
   * made. A piece never ends inside a private key block, which is redacted whole.
   */
  async textInSteps(s: string, json = false): Promise<string> {
    if (json || s.length <= STEP_CHARS) return this.text(s, json);
    const out: string[] = [];
    let from = 0;
    while (from < s.length) {
      let to = s.indexOf('\n', Math.min(from + STEP_CHARS, s.length - 1));
      to = to < 0 ? s.length : to;
      const begin = s.lastIndexOf(PEM_BEGIN, to);
      if (begin >= from && s.lastIndexOf(PEM_END, to) < begin) {
        const end = s.indexOf(PEM_END, to);
        const eol = end < 0 ? -1 : s.indexOf('\n', end);
        to = end < 0 || eol < 0 ? s.length : eol;
      }
      out.push(this.text(s.slice(from, to)));
      from = to + 1; // past the newline the pieces are joined by
      if (from < s.length) await new Promise((resolve) => setImmediate(resolve));
    }
    return out.join('\n') + (s.endsWith('\n') ? '\n' : '');
  }

  /** json: s is one JSON document (else JSON lines or plain text). */
  text(s: string, json = false): string {
    let out: string;
    try {
      if (!json) throw new Error('not one document');
      out = JSON.stringify(redactObject(JSON.parse(s)), null, 2) + '\n';
    } catch {
      // JSON lines (logs, events) or plain text: each JSON line on its own
      out = s
        .split('\n')
        .map((line) => {
          if (!line.startsWith('{')) return line;
          try {
            return JSON.stringify(redactObject(JSON.parse(line)));
          } catch {
            return line;
          }
        })
        .join('\n');
    }
    out = out
      .replace(/([?&](?:token|key|secret|password|access_token|sig)=)[^&\s"']+/gi, '$1[REDACTED]')
      .replace(/(\b[a-z][a-z0-9+.-]*:\/\/)[^/\s:@"']+:[^/\s@"']+@/gi, '$1[REDACTED]@')
      .replace(
        /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----/g,
        '[REDACTED PRIVATE KEY]',
      )
      .replace(/DHHC-1:[0-9a-f]{2}:[A-Za-z0-9+/=]+:?/g, 'DHHC-1:[REDACTED]');
    for (const v of this.values) out = out.split(v).join('[REDACTED]');
    return out;
  }
}

/** Blanks string values under secret-looking keys; webhook URLs keep only scheme and host. */
function redactObject(v: unknown, key = '', parent = ''): unknown {
  if (typeof v === 'string') {
    if (v !== '' && SECRET_KEY.test(key)) return '[REDACTED]';
    if (/^[[{]/.test(v)) {
      try {
        return JSON.stringify(redactObject(JSON.parse(v), key, parent)); // JSON kept in a column
      } catch {
        // just text that starts with a bracket
      }
    }
    if (v !== '' && key === 'url' && /webhook/i.test(parent)) return redactUrl(v); // its token is in the path
    return v;
  }
  if (Array.isArray(v)) return v.map((x) => redactObject(x, key, parent));
  if (v && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redactObject(x, k, key)]));
  }
  return v;
}

// ---------------------------------------------------------------- sections

function readme(now: Date): string {
  return `BranchSAN diagnostics bundle, created ${now.toISOString()} on ${os.hostname()}.

system.json         versions, OS, CPU, memory, network interfaces, data directory usage
live.json           the running engine's status and connected hosts (when the engine built it)
config/             target configuration and settings; secrets are replaced by [REDACTED]
config/secrets.txt  which secret files exist (names, modes, sizes; never their contents)
events.jsonl        the newest ${MAX_EVENTS} events, oldest first
alerts.json         active alerts and recently cleared ones
audit.jsonl         the newest configuration changes
database.json       schema version, migrations, row counts
metrics-last-hour.jsonl  one-minute metric history of the last hour, where recorded
logs/               the engine's log files (newest: ${LOG_FILE})
problems.txt        what could not be collected, and why
`;
}

async function systemInfo(dataDir: string): Promise<unknown> {
  let disk: unknown = null;
  try {
    const st = await fs.promises.statfs(dataDir);
    disk = { totalBytes: st.blocks * st.bsize, freeBytes: st.bavail * st.bsize };
  } catch (err) {
    disk = { error: (err as Error).message };
  }
  let osRelease = '';
  try {
    osRelease = fs.readFileSync('/etc/os-release', 'utf8');
  } catch {
    // not Linux, or a minimal container
  }
  return {
    product: { name: 'BranchSAN', version: safe(productVersion) },
    node: process.versions,
    platform: process.platform,
    arch: process.arch,
    kernel: { release: os.release(), version: os.version() },
    osRelease: Object.fromEntries(
      osRelease
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [
          l.slice(0, l.indexOf('=')),
          l.slice(l.indexOf('=') + 1).replace(/^"|"$/g, ''),
        ]),
    ),
    hostname: os.hostname(),
    uptimeSec: os.uptime(),
    loadavg: os.loadavg(),
    cpus: { count: os.cpus().length, model: os.cpus()[0]?.model ?? '' },
    memory: { totalBytes: os.totalmem(), freeBytes: os.freemem() },
    network: Object.fromEntries(
      Object.entries(os.networkInterfaces()).map(([n, addrs]) => [
        n,
        (addrs ?? []).map((a) => ({
          address: a.address,
          family: a.family,
          mac: a.mac,
          internal: a.internal,
        })),
      ]),
    ),
    dataDir: { path: dataDir, disk },
    collector: { pid: process.pid, uid: process.getuid?.(), time: new Date().toISOString() },
  };
}

function settingsOf(db: Db): unknown {
  const rows = db.prepare('SELECT key, value FROM settings ORDER BY key').all() as {
    key: string;
    value: string;
  }[];
  return Object.fromEntries(
    rows.map((r) => {
      try {
        return [r.key, JSON.parse(r.value)];
      } catch {
        return [r.key, r.value];
      }
    }),
  );
}

function databaseInfo(db: Db): unknown {
  const tables = (
    db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as {
      name: string;
    }[]
  ).map((t) => t.name);
  return {
    migrations: db
      .prepare('SELECT version, name, applied_at FROM schema_migrations ORDER BY version')
      .all(),
    rows: Object.fromEntries(
      tables.map((t) => [
        t,
        (db.prepare(`SELECT COUNT(*) AS n FROM "${t.replace(/"/g, '""')}"`).get() as { n: number })
          .n,
      ]),
    ),
    pageSize: db.pragma('page_size', { simple: true }),
    pageCount: db.pragma('page_count', { simple: true }),
  };
}

/** The last hour of one-minute points, if the metrics store exists in this build. */
function metricsExcerpt(db: Db, nowMs: number): string {
  const has = db
    .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'metric_1m'")
    .get();
  if (!has) return '';
  const since = Math.floor(nowMs / 1000) - 3600;
  // ts in seconds or in ms depending on the store: take the last hour of either
  const rows = db
    .prepare(
      `SELECT s.key AS series, m.ts AS ts, m.value AS value FROM metric_1m m JOIN metric_series s ON s.id = m.series_id
       WHERE m.ts >= ? OR m.ts >= ? * 1000 ORDER BY s.key, m.ts LIMIT 50000`,
    )
    .all(since, since) as unknown[];
  return rows.map((r) => JSON.stringify(r)).join('\n');
}

function secretsListing(dataDir: string): string {
  const dir = path.join(dataDir, 'secrets');
  const lines = walk(dir).map((f) => {
    const st = fs.statSync(f);
    return `${(st.mode & 0o777).toString(8).padStart(4, '0')}  ${String(st.size).padStart(6)}  ${path.relative(dir, f)}`;
  });
  return lines.length
    ? `mode  bytes  name (contents never included)\n${lines.join('\n')}\n`
    : 'no secret files\n';
}

function logFiles(dataDir: string): string[] {
  try {
    return fs
      .readdirSync(logDir(dataDir))
      .filter((n) => n === LOG_FILE || /^engine\.log\.\d+$/.test(n))
      .sort();
  } catch {
    return [];
  }
}

/** Regular files under `dir`, and symbolic links too with `links` (what they name unchecked). */
function walk(dir: string, links = false): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const at = path.join(dir, e.name);
    if (e.isDirectory()) return walk(at, links);
    return e.isFile() || (links && e.isSymbolicLink()) ? [at] : [];
  });
}

const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';

function safe<T>(f: () => T): T | null {
  try {
    return f();
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- ustar

/** One regular file: a 512-byte ustar header, the data, zero padding to 512. */
async function writeEntry(
  out: PassThrough,
  name: string,
  data: Buffer,
  mtime: number,
): Promise<void> {
  const h = Buffer.alloc(512);
  let prefix = '';
  let base = name;
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf('/', 155);
    prefix = name.slice(0, cut);
    base = name.slice(cut + 1);
  }
  h.write(base, 0, 100, 'utf8');
  h.write('0000600\0', 100, 'ascii'); // mode
  h.write('0000000\0', 108, 'ascii'); // uid
  h.write('0000000\0', 116, 'ascii'); // gid
  h.write(data.length.toString(8).padStart(11, '0') + '\0', 124, 'ascii');
  h.write(mtime.toString(8).padStart(11, '0') + '\0', 136, 'ascii');
  h.write('        ', 148, 'ascii'); // checksum field counts as spaces while summing
  h.write('0', 156, 'ascii'); // regular file
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  h.write(prefix, 345, 155, 'utf8');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'ascii');
  const pad = (512 - (data.length % 512)) % 512;
  for (const chunk of [h, data, Buffer.alloc(pad)]) {
    if (!out.write(chunk)) await new Promise((resolve) => out.once('drain', resolve));
  }
}
