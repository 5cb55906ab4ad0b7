/**
 * Node-wide readings: CPU time from /proc/stat, memory from /proc/meminfo, interface
 * byte counters from /proc/net/dev, and the data directory's file system. Readings are
 * raw counters; the sampler turns two of them into rates. The sources are injectable
 * so tests feed synthetic /proc text. Reads are async: nothing here blocks the loop
 * that also carries I/O completions.
 */
import fs from 'node:fs';

export interface NodeSources {
  /** Reads a /proc file as text. */
  readText(path: string): Promise<string>;
  statfs(path: string): Promise<{ bsize: number; blocks: number; bfree: number }>;
}

export const systemSources: NodeSources = {
  readText: (p) => fs.promises.readFile(p, 'utf8'),
  statfs: (p) => fs.promises.statfs(p),
};

export interface CpuTimes {
  /** Jiffies spent doing anything but idle and iowait. */
  busy: number;
  total: number;
}

export interface NetCounters {
  rxBytes: number;
  txBytes: number;
}

/** One reading; a part is null where the platform gave none (no /proc, say). */
export interface NodeReading {
  cpu: CpuTimes | null;
  mem: { usedBytes: number; totalBytes: number } | null;
  disk: { usedBytes: number; totalBytes: number } | null;
  net: Map<string, NetCounters>;
}

/** The aggregate "cpu" line: user nice system idle iowait irq softirq steal (guest is in user). */
export function parseProcStat(text: string): CpuTimes | null {
  const line = text.split('\n').find((l) => l.startsWith('cpu '));
  if (!line) return null;
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
  if (f.length < 4 || f.some((n) => !Number.isFinite(n))) return null;
  const total = f.reduce((a, n) => a + n, 0);
  const idle = f[3]! + (f[4] ?? 0);
  return { busy: total - idle, total };
}

/** Used = MemTotal − MemAvailable: what programs cannot get back without swapping. */
export function parseMeminfo(text: string): { usedBytes: number; totalBytes: number } | null {
  const kib = (name: string): number | undefined => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(text);
    return m ? Number(m[1]) * 1024 : undefined;
  };
  const total = kib('MemTotal');
  const avail = kib('MemAvailable') ?? kib('MemFree');
  if (total === undefined || avail === undefined) return null;
  return { usedBytes: total - avail, totalBytes: total };
}

/** Per interface: receive bytes is the first field after the colon, transmit bytes the ninth. */
export function parseNetDev(text: string, includeLoopback = false): Map<string, NetCounters> {
  const out = new Map<string, NetCounters>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    if (!name || (name === 'lo' && !includeLoopback)) continue;
    const f = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    if (f.length < 9 || !Number.isFinite(f[0]) || !Number.isFinite(f[8])) continue;
    out.set(name, { rxBytes: f[0]!, txBytes: f[8]! });
  }
  return out;
}

export interface NodeReadOptions {
  /** The data directory; its file system's capacity is reported. */
  dataDir: string;
  /** Count `lo` as an interface (tests; the appliance's hosts never use it). */
  includeLoopback?: boolean;
}

export async function readNode(src: NodeSources, opts: NodeReadOptions): Promise<NodeReading> {
  const text = (p: string): Promise<string | null> => src.readText(p).catch(() => null);
  const [stat, meminfo, netdev, fsinfo] = await Promise.all([
    text('/proc/stat'),
    text('/proc/meminfo'),
    text('/proc/net/dev'),
    src.statfs(opts.dataDir).catch(() => null),
  ]);
  return {
    cpu: stat === null ? null : parseProcStat(stat),
    mem: meminfo === null ? null : parseMeminfo(meminfo),
    disk: fsinfo && {
      usedBytes: (fsinfo.blocks - fsinfo.bfree) * fsinfo.bsize,
      totalBytes: fsinfo.blocks * fsinfo.bsize,
    },
    net: netdev === null ? new Map() : parseNetDev(netdev, opts.includeLoopback),
  };
}
