/**
 * The composition root: builds every part of the engine from the data directory,
 * starts them in order and stops them in reverse. Nothing else wires parts together.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { API_VERSION, type SystemStatus } from '../../../contract/api.js';
import { ConsoleServer } from '../control/console-server.js';
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
import { UserError } from '../util/errors.js';
import { createLogger, type Logger } from '../util/log.js';
import { consoleBundleDir, productVersion } from '../util/paths.js';
import { acquireInstanceLock, type InstanceLock } from './instance-lock.js';
import { loadOrCreateSecret, randomToken } from './secrets.js';
import { TargetRuntime } from './target-runtime.js';
import { TargetService } from './target-service.js';
import { targetHandlers } from './handlers/target.js';

export interface EngineOptions {
  dataDir: string;
  /** API socket path (default DATA/engine.sock). */
  socketPath?: string;
  /** Web console address; port 0 picks a free port; null disables the console. */
  console?: { host: string; port: number } | null;
  log?: Logger;
}

export class Engine {
  private heartbeat?: NodeJS.Timeout;
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
    readonly consoleServer: ConsoleServer | null,
    readonly targets: TargetService,
    private readonly runtime: TargetRuntime,
    private readonly log: Logger,
    private readonly startedAt: number,
  ) {}

  static async start(opts: EngineOptions): Promise<Engine> {
    const log = opts.log ?? createLogger();
    const dataDir = path.resolve(opts.dataDir);
    process.umask(0o027); // database and logs: service and admin group only; secrets tighten further
    prepareDataDir(dataDir);
    const lock = acquireInstanceLock(dataDir);
    const cleanup: (() => unknown)[] = [() => lock.release()];
    try {
      const { db, schemaVersion, applied } = openDatabase(path.join(dataDir, 'branchsan.db'));
      cleanup.unshift(() => db.close());
      if (applied.length) log.info('database migrated', { schemaVersion, applied });
      const nodeId = ensureNodeId(db);
      const hub = new SessionHub();
      const startedAt = Date.now();
      const runtime = new TargetRuntime(log.child({ component: 'target' }));
      cleanup.unshift(() => runtime.close());
      const targets = new TargetService(db, runtime, log.child({ component: 'target' }));
      await targets.restore();
      const socketPath = path.resolve(opts.socketPath ?? path.join(dataDir, 'engine.sock'));
      // eslint-disable-next-line prefer-const -- assigned after the handlers close over it
      let engine: Engine;
      // One spread per API area; the Handlers type checks that every method is served.
      const handlers: Handlers = {
        'system.status': () => engine.status(),
        ...targetHandlers(targets),
      };
      const rpc = new RpcDispatcher(handlers, log.child({ component: 'api' }));
      const socketServer = new SocketServer(
        { path: socketPath },
        rpc,
        hub,
        log.child({ component: 'api-socket' }),
      );
      await socketServer.listen();
      cleanup.unshift(() => socketServer.close());
      let consoleServer: ConsoleServer | null = null;
      if (opts.console !== null) {
        const token = loadOrCreateSecret(dataDir, 'console-token', () => randomToken());
        consoleServer = new ConsoleServer(
          {
            host: opts.console?.host ?? '127.0.0.1',
            port: opts.console?.port ?? 0,
            root: consoleBundleDir(),
            token,
          },
          rpc,
          hub,
          log.child({ component: 'console' }),
        );
        await consoleServer.listen();
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
        consoleServer,
        targets,
        runtime,
        log,
        startedAt,
      );
      engine.noteStart();
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
    };
  }

  /** Graceful stop: refuse new work, close clients, persist a clean-shutdown mark. */
  stop(reason = 'stop requested'): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info('engine stopping', { reason });
      clearInterval(this.heartbeat);
      this.hub.closeAll('engine stopping');
      await this.consoleServer?.close();
      await this.socketServer.close();
      await this.runtime.close(); // disconnects hosts, drains and closes backends
      recordEvent(this.db, {
        type: 'engine.stopped',
        severity: 'info',
        message: `Engine stopped (${reason}).`,
      });
      setSetting(this.db, 'engine.running', '0');
      this.db.close();
      this.lock.release();
      this.log.info('engine stopped');
    })();
    return this.stopping;
  }

  private beat(): void {
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

function prepareDataDir(dataDir: string): void {
  try {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o750 });
    fs.accessSync(dataDir, fs.constants.W_OK);
  } catch (err) {
    throw new UserError(
      `The data directory ${dataDir} cannot be used: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      'Create it and make it writable for the engine, or pass another --data directory.',
    );
  }
}
