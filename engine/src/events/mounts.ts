/**
 * Which mount a path is on, from the kernel's mount table (/proc/self/mountinfo), without
 * touching the path: on a hung NFS or FUSE mount even a stat of it would block. The alert
 * pass groups its file system calls by mount (MountCalls), so that a hung mount costs one
 * call, one pool thread, and blames only what is on it.
 */
import path from 'node:path';

/** One mount of the table. */
export interface Mount {
  /** Mount id, device and mount point: a mount made later at the same point differs. */
  readonly key: string;
  readonly id: number;
  readonly parent: number;
  /** The mount point, unescaped. */
  readonly at: string;
  /**
   * Its file system's device, as stat reports st_dev (glibc's makedev of major:minor):
   * bind mounts of one file system share it, and hang together.
   */
  readonly dev: number;
}

/**
 * The mounts of a mountinfo text, in its order (a mount comes after the one it is on).
 * Lines that do not parse are left out.
 */
export function parseMountinfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    // id parent major:minor root mount-point options … - type source super-options
    const f = line.split(' ');
    const [major, minor] = (f[2] ?? '').split(':').map(Number);
    const id = Number(f[0]);
    const parent = Number(f[1]);
    if (f.length < 5 || ![id, parent, major, minor].every((n) => Number.isInteger(n))) continue;
    const at = unescapeOctal(f[4]!);
    const dev = makedev(major!, minor!);
    mounts.push({ key: `${id} ${f[2]} ${at}`, id, parent, at, dev });
  }
  return mounts;
}

/** The kernel writes space, tab, newline and backslash of a path as \040, \011, \012, \134. */
function unescapeOctal(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** glibc's makedev, as libuv's stat fills st_dev (numbers, not bit operators: it exceeds 32 bits). */
export function makedev(major: number, minor: number): number {
  return (
    Math.floor(major / 4096) * 2 ** 44 +
    (major % 4096) * 2 ** 8 +
    Math.floor(minor / 256) * 2 ** 20 +
    (minor % 256)
  );
}

/**
 * The mount table, and which mount each path lies on as the kernel would walk it: from
 * the root mount, component by component, into a mount at that point whose parent is the
 * mount walked so far (so a mount hidden under a later one on a parent directory is not
 * taken), the top one where several are stacked.
 */
export class MountTable {
  private readonly at = new Map<string, Mount[]>();
  private readonly root: Mount;

  private constructor(
    readonly mounts: Mount[],
    root: Mount,
  ) {
    for (const m of mounts) this.at.set(m.at, [...(this.at.get(m.at) ?? []), m]);
    this.root = this.top(root);
  }

  /** The table of a mountinfo text; undefined when it has no root mount. */
  static parse(text: string): MountTable | undefined {
    const mounts = parseMountinfo(text);
    const ids = new Set(mounts.map((m) => m.id));
    // the root's parent lies outside this mount namespace (or is itself)
    const root = mounts.find((m) => m.at === '/' && (!ids.has(m.parent) || m.parent === m.id));
    return root && new MountTable(mounts, root);
  }

  /**
   * The mount `p` lies on, its path taken as written (resolved against the working
   * directory, `..` removed as text): a symlink among its components is not followed,
   * since reading it would touch the file system that may hang.
   */
  of(p: string): Mount {
    let m = this.root;
    const parts = path.resolve(p).split('/').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) m = this.top(m, `/${parts.slice(0, i).join('/')}`);
    return m;
  }

  /** The mount that is reached at `at` from `m`: the one mounted there on m, and on that … */
  private top(m: Mount, at = m.at): Mount {
    for (;;) {
      const on = this.at.get(at)?.find((c) => c.parent === m.id && c !== m);
      if (!on) return m;
      m = on;
    }
  }
}
