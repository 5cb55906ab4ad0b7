/**
 * The composition root: builds every part of the engine from the data directory,
 * starts them in order and stops them in reverse. Nothing else wires parts together.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { API_VERSION, type SystemStatus } from '../../../contract/api.js';
import { DEFAULT_ADMIN_GROUP, socketAccessFor } from '../control/auth/admin-group.js';
import type { ConsoleServer } from '../control/console-server.js';
import { RpcDispatcher, type Handlers } from '../control/rpc.js';
import { SessionHub } from '../control/sessions.js';
import { SocketServer } from '../control/socket-server.js';
import {
  ensureNodeId,
  getSetting,
  openDatabase,
  recordEvent,
  setSetting,
  type Db,
} from '../persistence/db.js';
import { DbReader } from '../persistence/db-reader.js';
import { WalCheckpointer } from '../persistence/wal-checkpointer.js';
import { UserError, whereStorageAllows } from '../util/errors.js';
import { createLogger, type Logger } from '../util/log.js';
import { makeDirs, productVersion } from '../util/paths.js';
import {
  buildConsole,
  checkConsoleOptions,
  consoleProblem,
  describeConsole,
  type ConsoleAccess,
  type ConsoleOptions,
} from './console-access.js';
import { CpuLatencyGuard } from './cpu-latency.js';
import { HostSecretStore } from './host-secrets.js';
import { hostSecretHandlers } from './handlers/host-secrets.js';
import { acquireInstanceLock, type InstanceLock } from './instance-lock.js';
import { TargetRuntime } from './target-runtime.js';
import { TargetService } from './target-service.js';
import { targetHandlers } from './handlers/target.js';
import { metricsHandlers } from './handlers/metrics.js';
import { MetricsService } from './metrics-service.js';
import { EventStore } from '../events/event-store.js';
import { loadNativeAddon } from '../storage/io-worker-pool.js';
import type { ListenerDown } from '../events/rules.js';
import { InputCollector } from '../events/inputs.js';
import { EventsService } from '../events/service.js';
import { attachLogFile } from '../util/log-file.js';
import { secretFiles } from './secrets.js';
import { localPeerNamer } from './peer-identity.js';
import { alertsHandlers } from './handlers/alerts.js';
import { diagnosticsHandlers } from './handlers/diagnostics.js';
import { eventsHandlers } from './handlers/events.js';
import { settingsHandlers } from './handlers/settings.js';

export interface EngineOptions {
  dataDir: string;
  /** API socket path (default DATA/engine.sock). */
  socketPath?: string;
  /** Web console address, TLS and sign-in rules; port 0 picks a free port; null disables it. */
  console?: ConsoleOptions | null;
  /** Group whose members may use the API socket besides root (default branchsan-admin). */
  adminGroup?: string;
  log?: Logger;
}

export class Engine {
  private heartbeat?: NodeJS.Timeout;
  private metrics?: MetricsService;
  private eventsService?: EventsService;
  private closeLogFile?: () => void;
  private reader?: DbReader;
  private checkpointer?: WalCheckpointer;
  private cpuLatency?: CpuLatencyGuard;
  private stopping?: Promise<void>;

  private constructor(
    readonly dataDir: string,
    readonly nodeId: string,
    readonly db: Db,
    readonly schemaVersion: number,
    readonly socketPath: string,
    private readonly lock: InstanceLock,
    private readonly hub: SessionHub,
    private readonly socketServer: SocketServer,
    /** The web console (null: off); its server is null when it cannot be served this run. */
    readonly console: ConsoleAccess | null,
    readonly targets: TargetService,
    private readonly runtime: TargetRuntime,
    private readonly log: Logger,
    private readonly startedAt: number,
  ) {}

  get consoleServer(): ConsoleServer | null {
    return this.console?.server ?? null;
  }

  static async start(opts: EngineOptions): Promise<Engine> {
    const log = opts.log ?? createLogger();
    const dataDir = path.resolve(opts.dataDir);
    process.umask(0o027); // database and logs: service and admin group only; secrets tighten further
    const socketPath = path.resolve(opts.socketPath ?? path.join(dataDir, 'engine.sock'));
    checkSocketPath(socketPath, opts.socketPath === undefined);
    // a usage error is refused before anything is served
    const consoleOpts =
      opts.console === null
        ? null
        : checkConsoleOptions(opts.console ?? { host: '127.0.0.1', port: 0 });
    prepareDataDir(dataDir);
    // the C addon's flock makes the lock the kernel's (see instance-lock.ts)
    const lock = acquireInstanceLock(dataDir, socketPath, (await loadNativeAddon())?.lock);
    const cleanup: (() => unknown)[] = [() => lock.release()];
    if (!lock.socketRecorded && socketPath !== path.join(dataDir, 'engine.sock')) {
      log.warn(
        `The disk that holds ${dataDir} is full: the engine lock names no API socket, so ` +
          `\`status --data\` and \`diagnostics --data\` look for ${path.join(dataDir, 'engine.sock')}. ` +
          `Give them --socket ${socketPath}, or free space and restart the engine.`,
      );
    }
    const closeLogFile = attachLogFile(dataDir); // DATA/logs/engine.log, for diagnostics bundles
    cleanup.unshift(closeLogFile);
    try {
      const { db, schemaVersion, applied, exclusiveBecauseFull } = openDatabase(
        path.join(dataDir, 'branchsan.db'),
      );
      cleanup.unshift(() => db.close());
      // before anything of this start is recorded, with a clock that may be wrong
      const before = new EventStore(db);
      const [lastEventAt, lastEventId] = [before.newestTs(), before.newestId()];
      if (exclusiveBecauseFull) {
        // Serving the stored target matters more than the database's other readers.
        log.warn(
          `The disk that holds the data directory ${dataDir} is full, so the database was opened ` +
            `exclusively (with no shared-memory file): the engine serves the stored configuration, ` +
            `but tools that read the database file themselves (\`branchsan diagnostics --offline\`, sqlite3) ` +
            `cannot read it while the engine runs, and changes, events and metrics may fail until ` +
            `space is freed. Free space in ${dataDir} (\`df -h ${dataDir}\`), then restart the engine.`,
          { dataDir, reason: 'data-disk-full' },
        );
      }
      if (applied.length) log.info('database migrated', { schemaVersion, applied });
      // long reads (event pages, the history's size) on a thread of their own
      const reader = new DbReader(db, log.child({ component: 'db-reader' }), !exclusiveBecauseFull);
      cleanup.unshift(() => reader.close());
      // WAL checkpoints on a thread of their own too (not for a file held exclusively)
      const checkpointer = new WalCheckpointer(db, log.child({ component: 'db-checkpoint' }));
      if (!exclusiveBecauseFull) void checkpointer.start();
      cleanup.unshift(() => checkpointer.close());
      const nodeId = ensureNodeId(db);
      const hub = new SessionHub();
      const startedAt = Date.now();
      const runtime = new TargetRuntime(log.child({ component: 'target' }));
      cleanup.unshift(() => runtime.close());
      const targets = new TargetService(db, runtime, log.child({ component: 'target' }), dataDir);
      await targets.restore();
      cleanup.unshift(() => targets.stop());
      let consoleAccess: ConsoleAccess | null = null; // built once the API is
      const inputs = new InputCollector({
        dataDir,
        target: runtime.target,
        config: () => targets.config(),
        backing: (nqn, nsid) => runtime.backingState(nqn, nsid),
        ioThreadsDown: (nqn, nsid) => runtime.ioThreadsDown(nqn, nsid),
        storageGone: (nqn, nsid) => runtime.storageGone(nqn, nsid),
        listenersDown: () => [...targets.listenersDown(), ...consoleDown(consoleAccess)],
        metricsEndpointDown: () => metrics.endpointDown(),
        refusedBacking: (nqn, nsid) => targets.refusedBacking(nqn, nsid),
        events: new EventStore(db),
        now: Date.now,
      });
      const eventsService = new EventsService({
        db,
        nodeId,
        version: productVersion(),
        publish: (name, data) => hub.broadcast(name, data),
        secrets: secretFiles(dataDir),
        collect: () => inputs.collect(),
        log: log.child({ component: 'events' }),
        reader,
        checkpointer,
        // boot time: monotonic, and unlike performance.now() it runs on through a suspend
        clock: { monotonicSec: os.uptime, lastEventAt },
        // what restore, the console and the scrape token recorded before eventsService.start
        deliverAfterId: lastEventId,
      });
      cleanup.unshift(() => eventsService.stop());
      const metrics: MetricsService = new MetricsService({
        db,
        dataDir,
        io: runtime.target,
        hub,
        log: log.child({ component: 'metrics' }),
        alerts: () => eventsService.listAlerts(true, 1000),
        connections: () => runtime.memory.stats(),
        reader,
        checkpointer,
      });
      cleanup.unshift(() => metrics.stop());
      // eslint-disable-next-line prefer-const -- assigned after the handlers close over it
      let engine: Engine;
      const listedHosts = () => targets.config().subsystems.flatMap((s) => s.hosts);
      const hostSecrets = new HostSecretStore(dataDir, listedHosts);
      targets.onAccessLost = (hosts) => {
        const { gone, problem } = hostSecrets.forget(hosts);
        if (gone.length > 0)
          log.info('DH-HMAC-CHAP secrets deleted: no subsystem allows these hosts any more', {
            hosts: gone,
          });
        if (problem) throw problem; // logged by the target service, with what to run
      };
      // One spread per API area; the Handlers type checks that every method is served.
      const handlers: Handlers = {
        'system.status': () => engine.status(),
        'system.console': () => describeConsole(consoleAccess),
        ...hostSecretHandlers(hostSecrets, db),
        ...targetHandlers(targets),
        ...metricsHandlers(metrics),
        ...eventsHandlers(eventsService),
        ...alertsHandlers(eventsService),
        ...settingsHandlers(eventsService),
        ...diagnosticsHandlers({ dataDir, db, status: () => engine.status(), target: runtime }),
      };
      const rpc = new RpcDispatcher(handlers, log.child({ component: 'api' }));
      const socketAccess = socketAccessFor(
        opts.adminGroup ?? DEFAULT_ADMIN_GROUP,
        log.child({ component: 'api-socket' }),
      );
      const namePeer = (await localPeerNamer(log)) ?? undefined;
      const socketServer = new SocketServer(
        { path: socketPath, ...socketAccess, namePeer },
        rpc,
        hub,
        log.child({ component: 'api-socket' }),
      );
      await socketServer.listen();
      cleanup.unshift(() => socketServer.close());
      if (consoleOpts !== null) {
        // A console that cannot listen, or whose secret files cannot be used, must not
        // take the storage down with it (a service manager restarting the engine would
        // bring the target up and down in a loop).
        const access = buildConsole(
          dataDir,
          consoleOpts,
          rpc,
          hub,
          log.child({ component: 'console' }),
        );
        consoleAccess = access;
        const server = access.server;
        if (server) {
          server.addRoute(metrics.route()); // GET /metrics (Prometheus, opt-in)
          await server.start(CONSOLE_RETRY_MS, (problem) => noteConsole(db, log, server, problem));
          cleanup.unshift(() => server.close()); // a later step failing must not leave it serving
        } else if (access.unavailable) {
          noteConsoleEvent(db, log, {
            type: 'console.unavailable',
            severity: 'error',
            reason: access.unavailable.error.message,
            message: `${consoleProblem(access)} Storage keeps serving, and the desktop app and the branchsan command reach the engine through its API socket; the Prometheus endpoint /metrics, served by the console, is not served either.`,
          });
        }
      }
      engine = new Engine(
        dataDir,
        nodeId,
        db,
        schemaVersion,
        socketPath,
        lock,
        hub,
        socketServer,
        consoleAccess,
        targets,
        runtime,
        log,
        startedAt,
      );
      engine.eventsService = eventsService;
      engine.closeLogFile = closeLogFile;
      engine.reader = reader;
      engine.checkpointer = checkpointer;
      eventsService.start(); // before noteStart, so engine.started reaches syslog and clients too
      // A full data disk: serve the stored configuration all the same, without the
      // start-up event (the running engine keeps serving on a full disk too).
      whereStorageAllows(log, 'record the start', () => engine.noteStart());
      engine.metrics = metrics;
      metrics.start();
      engine.cpuLatency = new CpuLatencyGuard({
        mode: eventsService.settings.stored().performance.cpuLatency,
        activity: () => ioActivity(runtime),
        onChange: (s) =>
          s.unavailable
            ? log.warn('CPU wake-up latency request unavailable; I/O latency stays higher', {
                reason: s.unavailable,
              })
            : log.info(
                s.held
                  ? 'CPU wake-up latency request held'
                  : 'CPU wake-up latency request released',
                {
                  mode: s.mode,
                },
              ),
      });
      engine.heartbeat = setInterval(() => engine.beat(), 1000);
      return engine;
    } catch (err) {
      for (const undo of cleanup) await undo();
      throw err;
    }
  }

  status(): SystemStatus {
    return {
      version: productVersion(),
      apiVersion: API_VERSION,
      nodeId: this.nodeId,
      hostname: os.hostname(),
      pid: process.pid,
      startedAt: this.startedAt,
      uptimeSec: (Date.now() - this.startedAt) / 1000,
      dataDir: this.dataDir,
      dbSchemaVersion: this.schemaVersion,
      cpuLatency: this.cpuLatency?.status() ?? {
        mode: 'off',
        held: false,
        unavailable: null,
        noEffect: null,
      },
    };
  }

  /** Graceful stop: refuse new work, close clients, persist a clean-shutdown mark. */
  stop(reason = 'stop requested'): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info('engine stopping', { reason });
      clearInterval(this.heartbeat);
      this.cpuLatency?.close();
      await this.metrics?.stop(); // its last write lands before the database closes
      this.hub.closeAll('engine stopping');
      await this.consoleServer?.close();
      await this.socketServer.close();
      await this.targets.stop(); // no retry of what is offline may reopen anything now
      await this.runtime.close(); // disconnects hosts, drains and closes backends
      // On a full data disk these writes fail; the stop goes on all the same, so that the
      // database is closed (its WAL checkpointed) and the lock released.
      whereStorageAllows(this.log, 'record the stop', () =>
        recordEvent(this.db, {
          type: 'engine.stopped',
          severity: 'info',
          message: `Engine stopped (${reason}).`,
        }),
      );
      await this.eventsService?.stop(); // rules stop; syslog gets engine.stopped before the db closes
      whereStorageAllows(this.log, 'mark the clean stop', () =>
        setSetting(this.db, 'engine.running', '0'),
      );
      // their connections first: the engine's, closed last, checkpoints the whole WAL
      // into the file and removes DB-wal
      await this.reader?.close();
      await this.checkpointer?.close();
      this.db.close();
      this.lock.release();
      this.log.info('engine stopped');
      this.closeLogFile?.();
    })();
    return this.stopping;
  }

  private beat(): void {
    if (this.cpuLatency && this.eventsService) {
      this.cpuLatency.setMode(this.eventsService.settings.stored().performance.cpuLatency);
      this.cpuLatency.tick();
    }
    this.hub.broadcast('system.heartbeat', {
      at: Date.now(),
      uptimeSec: (Date.now() - this.startedAt) / 1000,
    });
  }

  /** Records the start, and a warning when the last run did not stop cleanly. */
  private noteStart(): void {
    if (getSetting(this.db, 'engine.running') === '1') {
      recordEvent(this.db, {
        type: 'engine.unclean-restart',
        severity: 'warning',
        message: 'The engine restarted after an unexpected stop (crash, kill or power loss).',
      });
      this.log.warn('previous run did not stop cleanly');
    }
    setSetting(this.db, 'engine.running', '1');
    recordEvent(this.db, { type: 'engine.started', severity: 'info', message: 'Engine started.' });
  }
}

/** How often a console that cannot listen tries again. */
export const CONSOLE_RETRY_MS = 5_000;

/**
 * The console as a listener the alert rule watches: down while it cannot listen (tried
 * again every CONSOLE_RETRY_MS), or for this whole run when it is not served.
 */
function consoleDown(access: ConsoleAccess | null): ListenerDown[] {
  const problem = consoleProblem(access);
  const down = access?.unavailable ?? access?.server?.problem;
  if (!access || !down || problem === null) return [];
  return [
    {
      subject: 'console',
      kind: 'console',
      // with the port, even 443 (a URL's host drops it)
      address: access.server?.address ?? access.unavailable?.address ?? '',
      problem,
      since: down.since,
      retryEverySec: access.server ? CONSOLE_RETRY_MS / 1000 : null,
    },
  ];
}

/** Logs and records that the console cannot listen (`problem`), or listens after all (null). */
function noteConsole(db: Db, log: Logger, server: ConsoleServer, problem: UserError | null): void {
  noteConsoleEvent(
    db,
    log,
    problem
      ? {
          type: 'console.unavailable',
          severity: 'warning' as const,
          message:
            `The web console is not listening: ${problem.message} ${problem.hint ?? ''} ` +
            `Storage keeps serving; the console is tried again every ${CONSOLE_RETRY_MS / 1000} s.`,
          reason: problem.message,
        }
      : {
          type: 'console.listening',
          severity: 'info' as const,
          message: `The web console listens on ${server.baseUrl} now.`,
        },
  );
}

/** The console's event, in the log at its severity too. */
function noteConsoleEvent(
  db: Db,
  log: Logger,
  {
    reason,
    ...event
  }: { type: string; severity: 'info' | 'warning' | 'error'; message: string; reason?: string },
): void {
  log[event.severity === 'warning' ? 'warn' : event.severity](
    event.message,
    reason === undefined ? undefined : { reason },
  );
  whereStorageAllows(log, 'record an event', () => recordEvent(db, event), { type: event.type });
}

/** Grows with every command the target completes (for CpuLatencyGuard). */
function ioActivity(runtime: TargetRuntime): number {
  let n = 0;
  for (const c of runtime.target.listControllers()) {
    n += c.stats.readOps + c.stats.writeOps + c.stats.otherOps;
  }
  return n;
}

function prepareDataDir(dataDir: string): void {
  try {
    makeDirs(dataDir, 0o750);
    fs.accessSync(dataDir, fs.constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    let notDir = false;
    try {
      notDir = !fs.statSync(dataDir).isDirectory();
    } catch {
      // missing, or a path through a file: the code says which
    }
    if (notDir || code === 'ENOTDIR') {
      throw new UserError(
        `The data directory ${dataDir} cannot be used: it (or a directory above it) is a file.`,
        'Pass a directory with --data (it is created when missing), for example /var/lib/branchsan.',
      );
    }
    if (code === 'EROFS' || (code === 'ENOENT' && readOnlyParent(dataDir))) {
      throw new UserError(
        `The data directory ${dataDir} cannot be used: its file system is read-only.`,
        'Remount it read-write, or pass another --data directory.',
      );
    }
    if (code === 'ENOENT') {
      throw new UserError(
        `The data directory ${dataDir} cannot be created: its file system takes no new directories there (ENOENT; /proc and /sys are like that).`,
        'Pass a directory on a disk with --data, for example /var/lib/branchsan.',
      );
    }
    if (code === 'EACCES' || code === 'EPERM') {
      throw new UserError(
        `The data directory ${dataDir} cannot be used: the engine's user (uid ${process.getuid?.() ?? '?'}) may not write ${whoseDir(dataDir, code)}.`,
        'Run the engine as root (or as the user that owns the directory), or pass another --data directory.',
      );
    }
    throw new UserError(
      `The data directory ${dataDir} cannot be used (${code ?? (err as Error).message}).`,
      'Create it and make it writable for the engine, or pass another --data directory.',
    );
  }
}

/**
 * `dir`, or the nearest directory above it that is there (where it would be made), with
 * `code` and its owner and mode: 'in /srv, where it would be made (EACCES: it belongs
 * to uid 0, mode 755)'.
 */
function whoseDir(dir: string, code: string): string {
  for (let d = dir; ; d = path.dirname(d)) {
    try {
      const st = fs.statSync(d);
      return `${d === dir ? 'in it' : `in ${d}, where it would be made`} (${code}: it belongs to uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`;
    } catch {
      if (d === path.dirname(d)) return `in it (${code})`;
    }
  }
}

/** Whether the nearest existing directory above `dir` is on a read-only file system. */
function readOnlyParent(dir: string): boolean {
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    try {
      fs.accessSync(d, fs.constants.W_OK);
      return false;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EROFS') return true;
      if (code !== 'ENOENT' || d === path.dirname(d)) return false;
    }
  }
}

/** The most bytes a Unix socket's path may have on Linux (sun_path less its final NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * Linux would shorten a longer path without a word, and the socket would appear under
 * another name (in the parent directory, even), where no client looks for it.
 */
function checkSocketPath(socketPath: string, inDataDir: boolean): void {
  const bytes = Buffer.byteLength(socketPath);
  if (bytes <= MAX_SOCKET_PATH) return;
  throw new UserError(
    `The API socket path ${socketPath} is ${bytes} bytes long; Unix sockets allow at most ${MAX_SOCKET_PATH}.`,
    inDataDir
      ? 'Use a data directory with a shorter path, or put the socket elsewhere: --socket /run/branchsan/engine.sock.'
      : 'Give --socket a shorter path, for example /run/branchsan/engine.sock.',
    'usage',
  );
}
