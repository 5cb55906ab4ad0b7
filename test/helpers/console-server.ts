/**
 * A real ConsoleServer on 127.0.0.1 for unit tests, with the sign-in rules of a
 * loopback console (setup token "token") and, unless a test gives some, no API methods:
 * the tests drive its HTTP side (files, sign-in, connections, binding) and its socket,
 * never the engine behind it.
 */
import { ConsoleAuth } from '../../engine/src/control/auth/console-auth.js';
import { PasswordFile } from '../../engine/src/control/auth/password.js';
import { ConsoleServer, type ConnectionLimits } from '../../engine/src/control/console-server.js';
import { RpcDispatcher, type Handlers } from '../../engine/src/control/rpc.js';
import { SessionHub } from '../../engine/src/control/sessions.js';
import type { Logger } from '../../engine/src/util/log.js';

export function loopbackConsole(opts: {
  /** The bundle directory it serves. */
  root: string;
  /** Holds the password file (DIR/secrets/console-password). */
  dataDir: string;
  log: Logger;
  port?: number;
  limits?: Partial<ConnectionLimits>;
  /** API methods the console serves (default none: every call fails). */
  handlers?: Partial<Handlers>;
}): { server: ConsoleServer; passwords: PasswordFile } {
  const passwords = PasswordFile.inDataDir(opts.dataDir);
  const auth = new ConsoleAuth({
    passwords,
    setupToken: 'token',
    tls: false,
    loopbackOnly: true,
    log: opts.log,
  });
  const server = new ConsoleServer(
    {
      host: '127.0.0.1',
      port: opts.port ?? 0,
      root: opts.root,
      token: 'token',
      auth,
      ...(opts.limits ? { limits: opts.limits } : {}),
    },
    new RpcDispatcher((opts.handlers ?? {}) as Handlers, opts.log),
    new SessionHub(),
    opts.log,
  );
  return { server, passwords };
}
