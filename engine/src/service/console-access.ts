/**
 * Builds the web console with its access control: where it listens, whether it
 * needs TLS, the sign-in rules. The rule that matters: the console is reachable from
 * other machines only over TLS, and never without a password (or, before one is set,
 * the per-install setup token).
 */
import type { ConsoleInfo } from '../../../contract/api.js';
import { ConsoleAuth } from '../control/auth/console-auth.js';
import type { ThrottleLimits } from '../control/auth/login-throttle.js';
import { PasswordFile } from '../control/auth/password.js';
import type { SessionLimits } from '../control/auth/session-store.js';
import { ConsoleServer } from '../control/console-server.js';
import type { RpcDispatcher } from '../control/rpc.js';
import type { SessionHub } from '../control/sessions.js';
import { UserError } from '../util/errors.js';
import { joinHostPort } from '../util/host-port.js';
import type { Logger } from '../util/log.js';
import { consoleBundleDir } from '../util/paths.js';
import { loadOrCreateSecret, randomToken } from './secrets.js';
import { loadOrCreateConsoleTls, type ConsoleTls } from './tls.js';

/** 'auto': TLS exactly when the console listens beyond loopback. */
export type ConsoleTlsMode = 'auto' | 'on' | 'off';

export interface ConsoleOptions {
  host: string;
  port: number;
  tls?: ConsoleTlsMode;
  /** Sign-in tuning; the defaults (30 min idle, 12 h, 5 failures → 60 s doubling) suit production. */
  sessions?: Partial<SessionLimits>;
  throttle?: Partial<ThrottleLimits>;
}

export interface ConsoleAccess {
  /** null: not served this run, see `unavailable`. */
  server: ConsoleServer | null;
  tls: ConsoleTls | null;
  remote: boolean;
  /**
   * Why the console is not served at all this run (its TLS key or certificate, its
   * setup token or its admin password file cannot be used), since when, and where it would listen; null when
   * served. Never served without them: no plain HTTP where TLS was asked for.
   */
  unavailable: { error: UserError; since: number; address: string } | null;
}

/**
 * What brings a console back whose secret files could not be used: they are read at the
 * engine's start only (the console is built once).
 */
export const CONSOLE_SECRETS_AGAIN =
  "Once they are fixed, restart the engine: the console's files are read at its start only.";

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * The console's options as buildConsole uses them; refuses remote access without TLS
 * (a usage error, refused before anything is served: no start can ever fix it).
 */
export function checkConsoleOptions(opts: ConsoleOptions): ConsoleOptions {
  // 'localhost' names two addresses (127.0.0.1 and ::1) and the console holds one: it
  // listens, and answers, at 127.0.0.1 (see ConsoleAuth.hostProblem).
  if (opts.host.toLowerCase() === 'localhost') opts = { ...opts, host: '127.0.0.1' };
  if (!isLoopbackHost(opts.host) && opts.tls === 'off') {
    throw new UserError(
      `Refusing to serve the web console on ${opts.host} without TLS: passwords and storage settings would cross the network in clear text.`,
      'Drop --console-tls off (a self-signed certificate is then made and used), or keep the console on 127.0.0.1 and reach it through an SSH tunnel.',
      'usage',
    );
  }
  return opts;
}

/**
 * Creates (does not start) the console; refuses remote access without TLS. A secret
 * file it needs that cannot be used (its TLS key or certificate, its setup token, its
 * admin password file: others can read it, the engine may not, a directory or named pipe in its place, a failing
 * disk) leaves it unavailable (no server) rather than refusing the engine's start, which
 * has restored the storage already.
 */
export function buildConsole(
  dataDir: string,
  opts: ConsoleOptions,
  rpc: RpcDispatcher,
  hub: SessionHub,
  log: Logger,
): ConsoleAccess {
  opts = checkConsoleOptions(opts);
  const remote = !isLoopbackHost(opts.host);
  const mode = opts.tls ?? 'auto';
  const passwords = PasswordFile.inDataDir(dataDir);
  let tls: (ConsoleTls & { created: boolean }) | null;
  let token: string;
  let setupRequired: boolean;
  try {
    tls = remote || mode === 'on' ? loadOrCreateConsoleTls(dataDir, [opts.host]) : null;
    token = loadOrCreateSecret(dataDir, 'console-token', () => randomToken());
    setupRequired = passwords.current() === null;
  } catch (err) {
    const error = new UserError(
      `The web console is not served: ${err instanceof UserError ? err.message : `its secret files (TLS key and certificate, setup token, admin password) under ${dataDir}/secrets could not be read or written (${(err as Error).message}).`}`,
      `${err instanceof UserError ? (err.hint ?? '') : `Check the data directory's disk (dmesg, df -h ${dataDir}).`} ${CONSOLE_SECRETS_AGAIN}`.trim(),
    );
    const address = joinHostPort(opts.host, opts.port);
    return { server: null, tls: null, remote, unavailable: { error, since: Date.now(), address } };
  }
  if (tls) {
    const fields = { fingerprint256: tls.fingerprint256, notAfter: tls.notAfter.toISOString() };
    if (tls.created)
      log.warn(
        'made a new self-signed TLS certificate for the console: browsers will ask to trust it; compare its SHA-256 fingerprint',
        fields,
      );
    else log.info('console TLS certificate', fields);
  }
  const auth = new ConsoleAuth({
    passwords,
    setupToken: token,
    tls: tls !== null,
    loopbackOnly: !remote,
    sessions: opts.sessions,
    throttle: opts.throttle,
    log,
  });
  if (setupRequired)
    log.warn(
      'No console admin password is set: open the console URL printed below (it carries the one-time setup token) or run `branchsan passwd --data DIR`.',
    );
  const server = new ConsoleServer(
    {
      host: opts.host,
      port: opts.port,
      root: consoleBundleDir(),
      token,
      auth,
      ...(tls ? { tls: { key: tls.key, cert: tls.cert } } : {}),
    },
    rpc,
    hub,
    log,
  );
  return { server, tls, remote, unavailable: null };
}

export function describeConsole(access: ConsoleAccess | null): ConsoleInfo {
  return {
    enabled: access !== null,
    url: access?.server?.baseUrl ?? null,
    listening: access?.server?.listening ?? false,
    problem: consoleProblem(access),
    remoteAccess: access?.remote ?? false,
    tls: access?.tls != null,
    certificateFingerprint: access?.tls?.fingerprint256 ?? null,
    certificateExpiresAt: access?.tls?.notAfter.getTime() ?? null,
  };
}

/**
 * Why the console does not listen, or no one can sign in to it (its admin password file
 * went bad since the start), and what to do; null while it serves (or is off).
 */
export function consoleProblem(access: ConsoleAccess | null): string | null {
  const p = access?.unavailable ?? access?.server?.problem;
  if (p) return `${p.error.message} ${p.error.hint ?? ''}`.trim();
  const signIn = access?.server?.signInProblem;
  return signIn
    ? `The web console is served, but no one can sign in to it: ${signIn.message} ${signIn.hint ?? ''}`.trim()
    : null;
}

/** `branchsan serve` flags of the console's access control, checked; values in seconds. */
export const CONSOLE_ACCESS_FLAGS = {
  'console-tls': { type: 'string' },
  'session-idle': { type: 'string' },
  'session-max': { type: 'string' },
  'login-lockout': { type: 'string' },
} as const;

export function consoleOptionsFromFlags(
  host: string,
  port: number,
  flags: Partial<Record<keyof typeof CONSOLE_ACCESS_FLAGS, string>>,
): ConsoleOptions {
  const tls = flags['console-tls'] ?? 'auto';
  if (tls !== 'auto' && tls !== 'on' && tls !== 'off') {
    throw new UserError(
      `serve: --console-tls must be auto, on or off, not "${tls}".`,
      'auto (the default) uses TLS whenever --console-host is not a loopback address.',
      'usage',
    );
  }
  const seconds = (flag: keyof typeof CONSOLE_ACCESS_FLAGS): number | undefined => {
    const v = flags[flag];
    if (v === undefined) return undefined;
    // decimal only: Number() would also take 1e3, 0x10 and 0b11
    const n = /^\d+(\.\d+)?$/.test(v) ? Number(v) : NaN;
    if (!(n >= 1) || n > 7 * 86_400)
      throw new UserError(
        `serve: --${flag} must be a number of seconds from 1 to 604800 (a week), such as 900 or 1.5; not "${v}".`,
        undefined,
        'usage',
      );
    return n * 1000;
  };
  const idleMs = seconds('session-idle');
  const absoluteMs = seconds('session-max');
  const lockoutMs = seconds('login-lockout');
  return {
    host,
    port,
    tls,
    sessions: { ...(idleMs ? { idleMs } : {}), ...(absoluteMs ? { absoluteMs } : {}) },
    throttle: lockoutMs ? { lockoutMs } : {},
  };
}
