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
  server: ConsoleServer;
  tls: ConsoleTls | null;
  remote: boolean;
}

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return h === 'localhost' || h === '::1' || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/** Creates (does not start) the console; refuses remote access without TLS. */
export function buildConsole(
  dataDir: string,
  opts: ConsoleOptions,
  rpc: RpcDispatcher,
  hub: SessionHub,
  log: Logger,
): ConsoleAccess {
  // 'localhost' names two addresses (127.0.0.1 and ::1) and the console holds one: it
  // listens, and answers, at 127.0.0.1 (see ConsoleAuth.hostProblem).
  if (opts.host.toLowerCase() === 'localhost') opts = { ...opts, host: '127.0.0.1' };
  const remote = !isLoopbackHost(opts.host);
  const mode = opts.tls ?? 'auto';
  if (remote && mode === 'off') {
    throw new UserError(
      `Refusing to serve the web console on ${opts.host} without TLS: passwords and storage settings would cross the network in clear text.`,
      'Drop --console-tls off (a self-signed certificate is then made and used), or keep the console on 127.0.0.1 and reach it through an SSH tunnel.',
      'usage',
    );
  }
  let tls: ConsoleTls | null = null;
  if (remote || mode === 'on') {
    const made = loadOrCreateConsoleTls(dataDir, [opts.host]);
    tls = made;
    const fields = { fingerprint256: made.fingerprint256, notAfter: made.notAfter.toISOString() };
    if (made.created)
      log.warn(
        'made a new self-signed TLS certificate for the console: browsers will ask to trust it; compare its SHA-256 fingerprint',
        fields,
      );
    else log.info('console TLS certificate', fields);
  }
  const token = loadOrCreateSecret(dataDir, 'console-token', () => randomToken());
  const auth = new ConsoleAuth({
    passwords: PasswordFile.inDataDir(dataDir),
    setupToken: token,
    tls: tls !== null,
    loopbackOnly: !remote,
    sessions: opts.sessions,
    throttle: opts.throttle,
    log,
  });
  if (auth.setupRequired)
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
  return { server, tls, remote };
}

export function describeConsole(access: ConsoleAccess | null): ConsoleInfo {
  return {
    enabled: access !== null,
    url: access ? access.server.baseUrl : null,
    listening: access?.server.listening ?? false,
    problem: consoleProblem(access?.server),
    remoteAccess: access?.remote ?? false,
    tls: access?.tls != null,
    certificateFingerprint: access?.tls?.fingerprint256 ?? null,
    certificateExpiresAt: access?.tls?.notAfter.getTime() ?? null,
  };
}

/** Why the console does not listen and what to do, or null while it does (or is off). */
export function consoleProblem(server: ConsoleServer | undefined | null): string | null {
  const p = server?.problem;
  return p ? `${p.error.message} ${p.error.hint ?? ''}`.trim() : null;
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
