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
];
