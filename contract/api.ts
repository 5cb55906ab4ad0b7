/**
 * The management API contract: every method, event and data shape, declared once.
 * The engine validates every inbound message against these schemas at runtime;
 * the renderer and the Electron preload use the same declarations (types, names).
 *
 * Wire format (both the local Unix socket and the console WebSocket): JSON-RPC 2.0.
 * Unix socket: one JSON object per line ("\n"-delimited). WebSocket: one per frame.
 * Events are JSON-RPC notifications: {"jsonrpc":"2.0","method":"event","params":{"name","data"}}.
 */
import { z } from 'zod';
import {
  MetricsQueryParams,
  MetricsQueryResult,
  MetricsSample,
  MetricsSeriesParams,
  MetricsSeriesResult,
  MetricsSettings,
  MetricsSettingsSet,
} from './metrics.js';
import {
  Alert,
  AlertsListParams,
  DiagnosticsBundle,
  EngineSettings,
  EventRecord,
  EventsListParams,
  EventsListResult,
  NotificationsTestResult,
  SettingsSetParams,
} from './events.js';

/**
 * No C0 or C1 control character nor DEL: such paths would reach event messages, mail
 * and logs raw (a newline starts a forged line).
 */
const NO_CONTROL_CHARS = /^[^\u0000-\u001f\u007f-\u009f]*$/;

export * from './errors.js';
export * from './metrics.js';
export * from './events.js';

export const API_VERSION = 1;

// ---------------------------------------------------------------- data shapes

export const SystemStatus = z.object({
  version: z.string(),
  apiVersion: z.number().int(),
  nodeId: z.string(),
  hostname: z.string(),
  pid: z.number().int(),
  startedAt: z.number(), // ms since epoch
  uptimeSec: z.number(),
  dataDir: z.string(),
  dbSchemaVersion: z.number().int(),
  /** The CPU wake-up latency request (settings.performance.cpuLatency) and whether it is held. */
  cpuLatency: z.object({
    mode: z.enum(['when-busy', 'always', 'off']),
    held: z.boolean(),
    /** Why it could not be taken (not root, no PM QoS); null while it works. */
    unavailable: z.string().nullable(),
    /** Why holding it changes nothing on this machine (no cpuidle driver); null when it can. */
    noEffect: z.string().nullable(),
  }),
});
export type SystemStatus = z.infer<typeof SystemStatus>;

export const Heartbeat = z.object({
  at: z.number(), // ms since epoch
  uptimeSec: z.number(),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

/** NVMe Qualified Name: nqn.yyyy-mm.reverse.domain[:anything] or the UUID form; ≤ 223 bytes. */
export const Nqn = z
  .string()
  .max(223, 'an NQN is at most 223 bytes')
  .regex(
    /^nqn\.(\d{4}-\d{2}\.[a-z0-9][a-z0-9.-]*[a-z0-9](:[\x21-\x7e]+)?|2014-08\.org\.nvmexpress:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/,
    'expected an NQN like nqn.2026-01.com.example:storage (nqn.yyyy-mm.reverse-domain[:name])',
  );

export const PortConfig = z.object({
  portId: z.number().int().min(1).max(65535),
  host: z.string().min(1).max(64),
  port: z.number().int().min(1).max(65535),
});
export type PortConfig = z.infer<typeof PortConfig>;

/**
 * How a file or block namespace's I/O is run (storage/file.ts IoOptions); each left out
 * keeps its default. For measuring and for a device the defaults do not suit.
 */
export const IoTuning = z
  .object({
    /** Serve reads the page cache (or RAM) holds on the engine's event loop (default true). */
    inlineReads: z.boolean().optional(),
    /** Run a lone write on the event loop when the file is RAM: tmpfs, no swap (default true). */
    inlineWrites: z.boolean().optional(),
    /**
     * µs the event loop polls for the completion of a lone read or write on an I/O thread
     * before it sleeps (default 30; 0: never).
     */
    completionSpinMicros: z
      .number()
      .int('a whole number of µs')
      .min(0, 'at least 0 (0: never poll)')
      .max(1000, 'at most 1000 µs')
      .optional(),
  })
  .strict();
export type IoTuning = z.infer<typeof IoTuning>;

export const NamespaceConfig = z.object({
  nsid: z.number().int().min(1).max(1024),
  backendKind: z.enum(['file', 'block', 'memory']),
  path: z.string(),
  sizeBytes: z.number().int().nonnegative(),
  blockSize: z.literal([512, 4096]),
  nguid: z.string().regex(/^[0-9a-f]{32}$/),
  uuid: z.string(),
  anaGroup: z.number().int().min(1),
  /** Its I/O tuning (target.namespace.add, target.namespace.tune); {}: the defaults. */
  io: IoTuning,
});
export type NamespaceConfig = z.infer<typeof NamespaceConfig>;

export const SubsystemConfig = z.object({
  nqn: z.string(),
  serial: z.string(),
  model: z.string(),
  allowAnyHost: z.boolean(),
  hosts: z.array(z.string()),
  namespaces: z.array(NamespaceConfig),
});
export type SubsystemConfig = z.infer<typeof SubsystemConfig>;

export const TargetConfig = z.object({
  ports: z.array(PortConfig),
  subsystems: z.array(SubsystemConfig),
});
export type TargetConfig = z.infer<typeof TargetConfig>;

const SizeBytes = z
  .number()
  .int()
  .min(1 << 20, 'at least 1 MiB')
  .max(2 ** 50, 'at most 1 PiB');

export const NamespaceAdd = z
  .object({
    nqn: Nqn,
    /** Omitted: the lowest free nsid. */
    nsid: z.number().int().min(1).max(1024).optional(),
    backend: z.discriminatedUnion('kind', [
      z
        .object({
          kind: z.literal('file'),
          path: z
            .string()
            .min(1)
            .max(4096)
            .startsWith('/', 'an absolute path')
            .regex(NO_CONTROL_CHARS, 'a path without control characters (newlines, tabs)'),
          /** Create a sparse file of this size; the file must not exist yet. */
          createSizeBytes: SizeBytes.optional(),
          io: IoTuning.optional(),
        })
        .strict(),
      z
        .object({
          kind: z.literal('block'),
          path: z
            .string()
            .startsWith('/dev/', 'a /dev/ path')
            .regex(NO_CONTROL_CHARS, 'a path without control characters (newlines, tabs)'),
          io: IoTuning.optional(),
        })
        .strict(),
      z
        .object({
          kind: z.literal('memory'),
          sizeBytes: SizeBytes,
          io: z
            .undefined('nothing to tune: a memory namespace runs its I/O on the event loop')
            .optional(),
        })
        .strict(),
    ]),
    blockSize: z.literal([512, 4096]).optional(),
  })
  .strict();

/** The web console as the network sees it; the fingerprint lets people check the certificate. */
export const ConsoleInfo = z.object({
  /** Whether the engine serves the web console at all. */
  enabled: z.boolean(),
  /** Its address, without any token; null when disabled, or not served this run (see problem). */
  url: z.string().nullable(),
  /**
   * Whether it listens now; false while its address cannot be had (it is tried again), or
   * for this whole run when a secret file of its cannot be used (problem says which).
   */
  listening: z.boolean(),
  /** Why it does not listen, and what to do; null while it listens or is disabled. */
  problem: z.string().nullable(),
  /** Listening on an address other than loopback. */
  remoteAccess: z.boolean(),
  tls: z.boolean(),
  /** SHA-256 of the TLS certificate, "AB:CD:…" as browsers show it; null without TLS. */
  certificateFingerprint: z.string().nullable(),
  /** When the certificate expires (ms since epoch); null without TLS. */
  certificateExpiresAt: z.number().nullable(),
});
export type ConsoleInfo = z.infer<typeof ConsoleInfo>;

/** The hash a DH-HMAC-CHAP key is transformed with: 1 SHA-256, 2 SHA-384, 3 SHA-512. */
export const DhchapHash = z.literal([1, 2, 3]);

/** A host's DH-HMAC-CHAP secret, in the DHHC-1 form `nvme connect --dhchap-secret` takes. */
export const HostSecret = z.object({
  hostNqn: z.string(),
  secret: z.string().regex(/^DHHC-1:0[0-3]:[A-Za-z0-9+/]+={0,2}:$/),
  hash: DhchapHash,
  hashName: z.string(),
  createdAt: z.number(), // ms since epoch
});
export type HostSecret = z.infer<typeof HostSecret>;

// ---------------------------------------------------------------- methods

const NoParams = z.object({}).strict();

/** Every callable method: its params (validated on the engine) and its result. */
export const methods = {
  /** Engine identity and health at a glance. */
  'system.status': { params: NoParams, result: SystemStatus },
  /** The whole target configuration: ports, subsystems, hosts, namespaces. */
  'target.config': { params: NoParams, result: TargetConfig },
  /** Listen for NVMe/TCP (and discovery) on host:port. */
  'target.port.add': {
    params: z
      .object({
        portId: z.number().int().min(1).max(65535).optional(),
        host: z.ipv4().or(z.ipv6()),
        port: z.number().int().min(1).max(65535),
      })
      .strict(),
    result: PortConfig,
  },
  'target.port.remove': {
    params: z.object({ portId: z.number().int().min(1).max(65535) }).strict(),
    result: z.object({}),
  },
  'target.subsystem.create': {
    params: z
      .object({
        nqn: Nqn,
        serial: z
          .string()
          .regex(/^[\x20-\x7e]{1,20}$/, 'printable ASCII, at most 20 characters')
          .optional(),
        model: z
          .string()
          .regex(/^[\x20-\x7e]{1,40}$/, 'printable ASCII, at most 40 characters')
          .optional(),
        allowAnyHost: z.boolean().optional(),
        hosts: z.array(Nqn).max(1024).optional(),
      })
      .strict(),
    result: SubsystemConfig,
  },
  'target.subsystem.delete': { params: z.object({ nqn: Nqn }).strict(), result: z.object({}) },
  'target.host.allow': {
    params: z.object({ nqn: Nqn, hostNqn: Nqn }).strict(),
    result: SubsystemConfig,
  },
  'target.host.disallow': {
    params: z.object({ nqn: Nqn, hostNqn: Nqn }).strict(),
    result: SubsystemConfig,
  },
  'target.namespace.add': { params: NamespaceAdd, result: NamespaceConfig },
  'target.namespace.remove': {
    params: z.object({ nqn: Nqn, nsid: z.number().int().min(1).max(1024) }).strict(),
    result: z.object({}),
  },
  /**
   * Serves an offline namespace from what its path (or `path`, which becomes its path)
   * names now, although it is not the disk or file the namespace was added on (another
   * disk's identity, another size): its NGUID stays. Only for what holds its data.
   */
  'target.namespace.accept': {
    params: z
      .object({
        nqn: Nqn,
        nsid: z.number().int().min(1).max(1024),
        path: z
          .string()
          .min(1)
          .max(4096)
          .startsWith('/', 'an absolute path')
          .regex(NO_CONTROL_CHARS, 'a path without control characters (newlines, tabs)')
          .optional(),
      })
      .strict(),
    result: NamespaceConfig,
  },
  /**
   * Sets a file or block namespace's io tuning, the whole of it (each left out goes
   * back to its default): at once for the I/O its hosts send from then on, and at
   * every later open. Its NGUID stays: hosts see nothing of it but the speed.
   */
  'target.namespace.tune': {
    params: z.object({ nqn: Nqn, nsid: z.number().int().min(1).max(1024), io: IoTuning }).strict(),
    result: NamespaceConfig,
  },
  /** History of one series, from the finest tier that covers the range (contract/metrics.ts). */
  'metrics.query': { params: MetricsQueryParams, result: MetricsQueryResult },
  /** The series with stored history, a page at a time (contract/metrics.ts). */
  'metrics.series': { params: MetricsSeriesParams, result: MetricsSeriesResult },
  'metrics.settings.get': { params: NoParams, result: MetricsSettings },
  /** Turns the Prometheus endpoint on or off, rotates its token, sets the history cap. */
  'metrics.settings.set': {
    params: MetricsSettingsSet,
    // the token is returned only here, when the endpoint is on, for the scraper's config
    result: MetricsSettings.extend({ token: z.string().optional() }),
  },
  /** The web console's address and its TLS certificate fingerprint. */
  'system.console': { params: NoParams, result: ConsoleInfo },
  /** Makes a host's first DH-HMAC-CHAP secret; the host must be allowed on a subsystem. */
  'host.secret.create': {
    params: z.object({ hostNqn: Nqn, hash: DhchapHash.optional() }).strict(),
    result: HostSecret,
  },
  /** Replaces a host's secret (hash: keep the current one unless given). */
  'host.secret.rotate': {
    params: z.object({ hostNqn: Nqn, hash: DhchapHash.optional() }).strict(),
    result: HostSecret,
  },
  /** A host's current secret, to configure the host with. */
  'host.secret.get': { params: z.object({ hostNqn: Nqn }).strict(), result: HostSecret },
  /** The event log, newest first, in pages (contract/events.ts). */
  'events.list': { params: EventsListParams, result: EventsListResult },
  'alerts.list': { params: AlertsListParams, result: z.object({ alerts: z.array(Alert) }) },
  /** Marks an alert as seen; an incident alert (unexpected restart) is closed by it. */
  'alerts.ack': { params: z.object({ id: z.number().int().positive() }).strict(), result: Alert },
  /** Event retention, alert thresholds, syslog, e-mail and webhook delivery. */
  'settings.get': { params: NoParams, result: EngineSettings },
  'settings.set': { params: SettingsSetParams, result: EngineSettings },
  /** Sends a test message through every enabled channel. */
  'notifications.test': { params: NoParams, result: NotificationsTestResult },
  /** Writes a .tar.gz of logs, configuration (secrets removed), events and system facts. */
  'diagnostics.bundle': { params: NoParams, result: DiagnosticsBundle },
} as const;

export type MethodName = keyof typeof methods;
export type MethodParams<M extends MethodName> = z.input<(typeof methods)[M]['params']>;
export type MethodResult<M extends MethodName> = z.output<(typeof methods)[M]['result']>;
export const METHOD_NAMES = Object.keys(methods) as MethodName[];

// ---------------------------------------------------------------- events

/** Every pushed event and its payload. */
export const events = {
  /** Once a second while the engine runs. */
  'system.heartbeat': Heartbeat,
  /** Once a second: node, namespace and host-connection figures for the dashboard. */
  'metrics.sample': MetricsSample,
  /** Every event as it is recorded. */
  'event.recorded': EventRecord,
  'alert.raised': Alert,
  'alert.cleared': Alert,
  'alert.acknowledged': Alert,
  /**
   * An alert first pushed with id 0 (raised while the database refused writes) is now
   * stored under this id: the same alert, not a new one (no notification goes out).
   */
  'alert.stored': Alert,
} as const;

export type EventName = keyof typeof events;
export type EventData<E extends EventName> = z.output<(typeof events)[E]>;
export const EVENT_NAMES = Object.keys(events) as EventName[];

// ---------------------------------------------------------------- envelope

export const RpcRequest = z.object({
  jsonrpc: z.literal('2.0'),
  id: z.union([z.string().max(64), z.number().int()]),
  method: z.string().max(128),
  params: z.unknown().optional(),
});
export type RpcRequest = z.infer<typeof RpcRequest>;

export interface RpcEventNotification {
  jsonrpc: '2.0';
  method: 'event';
  params: { name: EventName; data: unknown };
}
