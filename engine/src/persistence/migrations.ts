/**
 * Schema migrations, applied in order inside one transaction each. Never edit a
 * migration that has shipped: add a new one. The version is the array index + 1.
 */
export interface Migration {
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    name: 'base: settings and events',
    sql: `
      CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;
      CREATE TABLE events (
        id       INTEGER PRIMARY KEY,
        ts       INTEGER NOT NULL,            -- ms since epoch
        severity TEXT NOT NULL CHECK (severity IN ('info','warning','error','critical')),
        type     TEXT NOT NULL,               -- dotted event type, e.g. engine.started
        message  TEXT NOT NULL,               -- what happened, for a person
        data     TEXT                         -- JSON details
      ) STRICT;
      CREATE INDEX events_ts ON events (ts);
    `,
  },
  {
    name: 'target configuration and audit log',
    sql: `
      CREATE TABLE ports (
        port_id INTEGER PRIMARY KEY CHECK (port_id BETWEEN 1 AND 65535),
        host    TEXT NOT NULL,                -- listen address
        port    INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
        UNIQUE (host, port)
      ) STRICT;
      CREATE TABLE subsystems (
        nqn            TEXT PRIMARY KEY,
        serial         TEXT NOT NULL,
        model          TEXT NOT NULL,
        allow_any_host INTEGER NOT NULL DEFAULT 0 CHECK (allow_any_host IN (0, 1)),
        created_at     INTEGER NOT NULL
      ) STRICT;
      CREATE TABLE subsystem_hosts (
        subsystem_nqn TEXT NOT NULL REFERENCES subsystems (nqn) ON DELETE CASCADE,
        host_nqn      TEXT NOT NULL,
        PRIMARY KEY (subsystem_nqn, host_nqn)
      ) STRICT;
      CREATE TABLE namespaces (
        subsystem_nqn TEXT NOT NULL REFERENCES subsystems (nqn) ON DELETE CASCADE,
        nsid          INTEGER NOT NULL CHECK (nsid BETWEEN 1 AND 1024),
        backend_kind  TEXT NOT NULL CHECK (backend_kind IN ('file', 'block', 'memory')),
        path          TEXT NOT NULL,          -- file or device path ('' for memory)
        size_bytes    INTEGER NOT NULL,
        block_size    INTEGER NOT NULL CHECK (block_size IN (512, 4096)),
        nguid         TEXT NOT NULL UNIQUE,   -- 32 hex digits, identical on both nodes of a pair
        uuid          TEXT NOT NULL UNIQUE,
        ana_group     INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (subsystem_nqn, nsid)
      ) STRICT;
      CREATE TABLE audit (
        id      INTEGER PRIMARY KEY,
        ts      INTEGER NOT NULL,
        actor   TEXT NOT NULL,                -- who: 'socket', 'console:<peer>', 'cli'
        action  TEXT NOT NULL,                -- the API method
        details TEXT NOT NULL                 -- JSON of the validated parameters
      ) STRICT;
    `,
  },
  {
    // metrics-store.ts explains the tiers, rollups and the size cap.
    name: 'metric history tiers',
    sql: `
      CREATE TABLE metric_series (
        id     INTEGER PRIMARY KEY,
        key    TEXT NOT NULL UNIQUE,          -- e.g. ns:<subnqn>/<nsid>:read_iops
        scope  TEXT NOT NULL CHECK (scope IN ('node', 'nic', 'namespace', 'host')),
        metric TEXT NOT NULL,
        unit   TEXT NOT NULL,
        agg    TEXT NOT NULL CHECK (agg IN ('avg', 'max')), -- how coarser tiers combine points
        labels TEXT NOT NULL,                 -- JSON: nqn, nsid, hostnqn, interface
        first_ts INTEGER NOT NULL             -- s since epoch of its first point: where history starts
      ) STRICT;
      -- (series_id, ts) keys: a range query is one b-tree range. No foreign key: a check
      -- per inserted point buys nothing, series rows outlive their points.
      CREATE TABLE metric_1s  (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
                               PRIMARY KEY (series_id, ts)) STRICT, WITHOUT ROWID;
      CREATE TABLE metric_10s (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
                               PRIMARY KEY (series_id, ts)) STRICT, WITHOUT ROWID;
      CREATE TABLE metric_1m  (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
                               PRIMARY KEY (series_id, ts)) STRICT, WITHOUT ROWID;
      CREATE TABLE metric_1h  (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
                               PRIMARY KEY (series_id, ts)) STRICT, WITHOUT ROWID;
      CREATE TABLE metric_rollups (
        tier       TEXT PRIMARY KEY,          -- '10s', '1m', '1h'
        done_until INTEGER NOT NULL           -- s since epoch: buckets before it are rolled up
      ) STRICT;
    `,
  },
  {
    // events/alert-store.ts: one active alert per (rule, subject) is enforced here too.
    name: 'alerts and event type index',
    sql: `
      CREATE TABLE alerts (
        id         INTEGER PRIMARY KEY,
        rule       TEXT NOT NULL,             -- host.disconnected, capacity, io.errors, ...
        subject    TEXT NOT NULL,             -- what it is about, per rule
        severity   TEXT NOT NULL CHECK (severity IN ('info','warning','error','critical')),
        title      TEXT NOT NULL,
        message    TEXT NOT NULL,             -- what happened and what to do
        data       TEXT,                      -- JSON details
        raised_at  INTEGER NOT NULL,          -- ms since epoch
        cleared_at INTEGER,
        acked_at   INTEGER,
        acked_by   TEXT
      ) STRICT;
      CREATE UNIQUE INDEX alerts_one_active ON alerts (rule, subject) WHERE cleared_at IS NULL;
      CREATE INDEX alerts_cleared ON alerts (cleared_at);
      CREATE INDEX events_type ON events (type, ts);
    `,
  },
  {
    // events/alert-store.ts: how an alert ended, so consoles need not infer it.
    name: 'why an alert was cleared',
    sql: `
      ALTER TABLE alerts ADD COLUMN cleared_why TEXT
        CHECK (cleared_why IN ('resolved','superseded','acknowledged'));
    `,
  },
  {
    // events/watched-host-store.ts: the hosts host.disconnected watches outlive a restart.
    // No foreign key to subsystems: the rule drops a host with its volume or allow-list entry.
    name: 'hosts watched for disconnection',
    sql: `
      CREATE TABLE watched_hosts (
        subsystem_nqn TEXT NOT NULL,
        host_nqn      TEXT NOT NULL,
        admitted      TEXT NOT NULL CHECK (admitted IN ('listed', 'any')), -- how the volume admits it
        last_seen     INTEGER NOT NULL,       -- ms since epoch it was last connected, to the minute
        PRIMARY KEY (subsystem_nqn, host_nqn)
      ) STRICT;
    `,
  },
  {
    // service/target-service.ts: the disk a block namespace was added on, compared at every
    // open so that a /dev name that moved to another disk is not served as this volume.
    // NULL: not recorded yet (added before this column); recorded at its next open.
    name: 'identity of a namespace device',
    sql: `
      ALTER TABLE namespaces ADD COLUMN device TEXT; -- JSON: key, about, weak (storage/device-identity.ts)
    `,
  },
  {
    // service/target-service.ts: the I/O tuning of a file or block namespace (contract
    // IoTuning), as added or as last tuned, applied at every open. NULL: the defaults.
    name: 'I/O tuning of a namespace',
    sql: `
      ALTER TABLE namespaces ADD COLUMN io TEXT; -- JSON: inlineReads, inlineWrites, completionSpinMicros
    `,
  },
];
