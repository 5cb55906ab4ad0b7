/** Which mount a path is on, from mountinfo text alone (engine/src/events/mounts.ts). */
import { describe, expect, it } from 'vitest';
import { MountTable, makedev } from '../../../engine/src/events/mounts.js';

const line = (id: number, parent: number, dev: string, at: string) =>
  `${id} ${parent} ${dev} / ${at} rw,relatime shared:1 - ext4 /dev/x rw`;

describe('MountTable', () => {
  it('takes the deepest mount on the path as written, its point unescaped', () => {
    const t = MountTable.parse(
      [
        line(20, 1, '8:1', '/'),
        line(30, 20, '0:50', '/mnt/my\\040nfs'),
        line(31, 30, '0:51', '/mnt/my\\040nfs/deep'),
        'not a mountinfo line',
      ].join('\n'),
    )!;
    expect(t.of('/var/lib/branchsan').at).toBe('/');
    expect(t.of('/mnt/my nfs/vols').dev).toBe(makedev(0, 50));
    expect(t.of('/mnt/my nfs/deep').dev).toBe(makedev(0, 51));
    expect(t.of('/mnt/my nfs/deep/../x').dev).toBe(makedev(0, 50));
    expect(t.of('/mnt/my nfsx').at).toBe('/'); // a prefix of the name is not a parent
  });

  it('takes the top of stacked mounts, and not one hidden under a later mount', () => {
    const t = MountTable.parse(
      [
        line(20, 1, '8:1', '/'),
        line(30, 20, '0:50', '/srv/a'), // hidden by 32 on /srv
        line(31, 20, '0:51', '/data'),
        line(32, 20, '0:52', '/srv'),
        line(33, 31, '0:53', '/data'), // mounted over 31
      ].join('\n'),
    )!;
    expect(t.of('/srv/a/vols').dev).toBe(makedev(0, 52));
    expect(t.of('/data/vols').dev).toBe(makedev(0, 53));
  });

  it('has no table without a root mount', () => {
    expect(MountTable.parse(line(30, 20, '0:50', '/mnt'))).toBeUndefined();
    expect(MountTable.parse('')).toBeUndefined();
  });

  it('gives devices as stat does', () => {
    expect(makedev(254, 0)).toBe(65024);
    expect(makedev(8, 300)).toBe(8 * 256 + (300 % 256) + Math.floor(300 / 256) * 2 ** 20);
  });
});
