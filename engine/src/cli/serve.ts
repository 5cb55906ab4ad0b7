import path from 'node:path';
import {
  CONSOLE_ACCESS_FLAGS,
  consoleOptionsFromFlags,
  consoleProblem,
} from '../service/console-access.js';
import { Engine } from '../service/engine.js';
import { UserError } from '../util/errors.js';
import { createLogger, isLogLevel } from '../util/log.js';
import {
  parseCommandArgs,
  parsePort,
  requireDataDir,
  stopSignal,
  type Command,
} from './command.js';

export const serve: Command = {
  name: 'serve',
  help: `Usage: branchsan serve --data DIR [options]

Runs the BranchSAN engine: opens DIR/branchsan.db, serves the management API on a
local Unix socket and the web console on 127.0.0.1. Stops cleanly on SIGTERM, SIGINT
or SIGHUP.
Log lines are JSON on stdout; the line with "msg":"engine ready" carries the socket
path and the console URL (with the one-time setup token while no admin password
is set: open it to choose one, or run \`branchsan passwd\`).

The console listens on 127.0.0.1 unless --console-host names another address; it is
then served only over TLS, with a self-signed certificate made on first use
(DIR/secrets/console-tls.*; its SHA-256 fingerprint is logged and in system.console).
A console address that cannot be had (port taken, address not up yet) does not stop
the engine: storage is served, an alert says why, and the console is tried again
every 5 s ("engine ready" then carries consoleProblem). Neither does a console TLS
key, certificate, setup token or admin password file that cannot be used: the console
is then not served (never without TLS) until the engine's next start, once the file is
fixed (consoleProblem says which and what to run; also when the admin password file
goes bad once read, which leaves no one able to sign in).

Options:
  --data DIR            data directory (database, secrets, lock)   [required]
  --socket PATH         API socket path                      [DIR/engine.sock]
  --console-host ADDR   web console address                      [127.0.0.1]
  --console-port N      web console port; 0 picks a free port        [8450]
  --no-console          do not start the web console
  --console-tls MODE    auto (TLS unless loopback) | on | off        [auto]
  --session-idle SEC    console sign-in ends after this idle time    [1800]
  --session-max SEC     ... and this long after signing in          [43200]
  --login-lockout SEC   first lockout after 5 failed sign-ins; doubles [60]
  --admin-group NAME    group that may use the API socket [branchsan-admin]
  --log-level LEVEL     debug | info | warn | error                   [info]

Examples:
  branchsan serve --data /var/lib/branchsan
  branchsan serve --data ./lab/node-a --console-port 0
  branchsan serve --data /var/lib/branchsan --console-host 0.0.0.0   (https)`,
  async run(argv) {
    const { values } = parseCommandArgs('serve', argv, {
      data: { type: 'string' },
      socket: { type: 'string' },
      'console-host': { type: 'string' },
      'console-port': { type: 'string' },
      'no-console': { type: 'boolean' },
      ...CONSOLE_ACCESS_FLAGS,
      'admin-group': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(this.help);
      return 0;
    }
    const dataDir = requireDataDir('serve', values.data);
    const level = values['log-level'] ?? 'info';
    if (!isLogLevel(level))
      throw new UserError(
        `serve: unknown --log-level "${level}".`,
        'Use debug, info, warn or error.',
        'usage',
      );
    const log = createLogger({ level });
    // Checked even with --no-console: a typo is an error whatever else was given.
    const consolePort = parsePort('serve', 'console-port', values['console-port'], 8450);
    if (values['no-console']) {
      // Silently dropped, a --console-host 0.0.0.0 looks taken while nothing listens.
      // (--console-port stays allowed: launchers add it to every engine they start.)
      const given = ['console-host', ...Object.keys(CONSOLE_ACCESS_FLAGS)].filter(
        (f) => values[f as keyof typeof values] !== undefined,
      );
      if (given.length > 0) {
        throw new UserError(
          `serve: --no-console turns the web console off, so ${given.map((f) => `--${f}`).join(', ')} would do nothing.`,
          'Drop --no-console to serve the console with those settings, or drop them to run without it.',
          'usage',
        );
      }
    }
    // Caught from here on: a Ctrl-C while the engine starts stops it once it has started.
    const stopping = stopSignal('serve');
    const engine = await Engine.start({
      dataDir,
      ...(values.socket ? { socketPath: path.resolve(values.socket) } : {}),
      console: values['no-console']
        ? null
        : consoleOptionsFromFlags(values['console-host'] ?? '127.0.0.1', consolePort, values),
      ...(values['admin-group'] ? { adminGroup: values['admin-group'] } : {}),
      log,
    });
    // Always printed, whatever --log-level says: it holds the console URL (with the
    // first-run setup token) that people and scripts wait for.
    createLogger({ level: 'info' }).info('engine ready', {
      nodeId: engine.nodeId,
      pid: process.pid,
      dataDir: engine.dataDir,
      socket: engine.socketPath,
      consoleUrl: engine.consoleServer?.url ?? null,
      // not listening yet (its address is taken or not there): the URL is where it will be
      // or not served this run (a secret file of its cannot be used): the URL is null;
      // or served with its admin password file gone bad since it was read: no sign-in
      ...(consoleProblem(engine.console) !== null
        ? { consoleProblem: consoleProblem(engine.console) }
        : {}),
    });
    const sig = await stopping;
    await engine.stop(`signal ${sig}`).catch((err: unknown) => log.error('stop failed', { err }));
    return 0;
  },
};
