/**
 * The `watched_hosts` table: the hosts the host.disconnected rule watches and when each
 * was last connected, so that a host connected before a crash, a power cut or an
 * upgrade, and never back after it, is still alerted on. The rule hands over its whole
 * watch list every round; this writes only the difference, and a host's last-seen time
 * only once it moved by LAST_SEEN_STEP_MS, so a steady state costs one small write a
 * minute. A write the data disk refuses (full, read-only) is logged once and tried again
 * with the next round, the rule meanwhile working from its memory.
 */
import type { Db } from '../persistence/db.js';
import { whereStorageAllows } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { WatchedHost, WatchedHostMemory } from './rules.js';

/** How stale a stored last-seen time may get while the host stays connected. */
export const LAST_SEEN_STEP_MS = 60_000;

interface Row {
  subsystem_nqn: string;
  host_nqn: string;
  admitted: 'listed' | 'any';
  last_seen: number;
}

const idOf = (h: WatchedHost) => JSON.stringify([h.subnqn, h.hostnqn]);

export class WatchedHostStore implements WatchedHostMemory {
  /** What the table holds, as this process last read or wrote it. */
  private stored = new Map<string, WatchedHost>();
  private failing = false;

  constructor(
    private readonly db: Db,
    private readonly log?: Logger,
  ) {}

  load(): WatchedHost[] {
    const rows = this.db
      .prepare('SELECT subsystem_nqn, host_nqn, admitted, last_seen FROM watched_hosts')
      .all() as Row[];
    const hosts = rows.map((r) => ({
      subnqn: r.subsystem_nqn,
      hostnqn: r.host_nqn,
      admitted: r.admitted,
      lastSeen: r.last_seen,
    }));
    this.stored = new Map(hosts.map((h) => [idOf(h), h]));
    return hosts.map((h) => ({ ...h }));
  }

  save(hosts: readonly WatchedHost[]): void {
    const want = new Map(hosts.map((h) => [idOf(h), { ...h }]));
    const gone = [...this.stored.keys()].filter((id) => !want.has(id));
    const changed = [...want].filter(([id, h]) => {
      const s = this.stored.get(id);
      return (
        !s || s.admitted !== h.admitted || Math.abs(h.lastSeen - s.lastSeen) >= LAST_SEEN_STEP_MS
      );
    });
    if (gone.length === 0 && changed.length === 0) return;
    const del = this.db.prepare(
      'DELETE FROM watched_hosts WHERE subsystem_nqn = ? AND host_nqn = ?',
    );
    const put = this.db.prepare(
      `INSERT INTO watched_hosts (subsystem_nqn, host_nqn, admitted, last_seen) VALUES (?, ?, ?, ?)
       ON CONFLICT (subsystem_nqn, host_nqn) DO UPDATE SET admitted = excluded.admitted, last_seen = excluded.last_seen`,
    );
    const written = whereStorageAllows(
      this.failing ? undefined : this.log, // said once per outage
      'store the hosts watched for disconnection; retrying every round, watching them meanwhile',
      () =>
        this.db.transaction(() => {
          for (const id of gone) {
            const h = this.stored.get(id)!;
            del.run(h.subnqn, h.hostnqn);
          }
          for (const [, h] of changed) put.run(h.subnqn, h.hostnqn, h.admitted, h.lastSeen);
        })(),
    );
    if (!written) {
      this.failing = true;
      return;
    }
    if (this.failing) this.log?.info('hosts watched for disconnection stored again');
    this.failing = false;
    for (const id of gone) this.stored.delete(id);
    for (const [id, h] of changed) this.stored.set(id, h);
  }
}
