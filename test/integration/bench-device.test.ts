/**
 * `branchsan bench --device DEV` on a real block device (a loop device over a file):
 * the rows measure the device, a run without --device-writes changes none of its
 * bytes, one with it writes through both legs, and a device that is in use, too small,
 * read-only or no device at all is refused before any work, with what to do.
 * Root and losetup are needed; without them the tests are skipped, saying why.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BIN, runCli, tempDir } from '../helpers/engine.js';

const MiB = 1024 * 1024;
const dir = tempDir('branchsan-bench-device-');
const loops: string[] = [];

/** A loop device over a new file of `mib` MiB filled with a known pattern, or the refusal. */
function loopDevice(mib: number, ...flags: string[]): string {
  const image = path.join(dir, `dev${loops.length}.img`);
  const data = Buffer.alloc(mib * MiB);
  for (let i = 0; i < data.length; i += 4) data.writeUInt32LE((i * 2654435761) >>> 0, i);
  writeFileSync(image, data);
  const r = spawnSync('losetup', ['-f', '--show', ...flags, image], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`losetup: ${r.stderr || r.error?.message}`);
  const dev = r.stdout.trim();
  loops.push(dev);
  return dev;
}

/** The device's bytes, as a hash (read through the block device itself). */
const digest = (dev: string) => createHash('sha256').update(readFileSync(dev)).digest('hex');

/** Why loop devices cannot be had here, or null when they can. */
function loopRefusal(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  const image = path.join(dir, 'probe.img');
  writeFileSync(image, '');
  truncateSync(image, MiB);
  const r = spawnSync('losetup', ['-f', '--show', image], { encoding: 'utf8' });
  if (r.status !== 0) return (r.stderr || r.error?.message || 'losetup failed').trim();
  spawnSync('losetup', ['-d', r.stdout.trim()]);
  return null;
}
const refused = loopRefusal();
if (refused) console.warn(`SKIPPED bench --device tests (they need a loop device): ${refused}`);

const quickArgs = ['--quick', '--json', '--seconds', '0.05', '--rounds', '1'];

afterAll(() => {
  for (const dev of loops) spawnSync('losetup', ['-d', dev]);
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(refused !== null)('branchsan bench --device', () => {
  it('measures the device with reads only, and leaves every byte of it as it was', async () => {
    const dev = loopDevice(32);
    const before = digest(dev);
    const r = await runCli(['bench', '--device', dev, ...quickArgs], { timeoutMs: 120_000 });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.config.device).toEqual({
      path: dev,
      name: path.basename(dev),
      size_bytes: 32 * MiB,
      logical_block_size: 512,
      writes: false,
      fits_in_ram: true,
    });
    expect(report.config.span_bytes).toBe(32 * MiB);
    // the 4 KiB reads of a quick run, every leg measured on the device
    expect(
      report.results.map(
        (x: { pattern: string; qd: number; queues: number }) => `${x.pattern}/${x.qd}/${x.queues}`,
      ),
    ).toEqual(['randread/1/1', 'randread/32/1', 'randread/32/2']);
    for (const x of report.results) {
      expect(x.backend).toBe('device');
      expect(x.local.iops).toBeGreaterThan(0);
      expect(x.remote.iops).toBeGreaterThan(0);
      expect(x.floor_io.iops).toBeGreaterThan(0);
    }
    expect(r.stderr).toContain(`measuring ${dev}`);
    expect(r.stderr).toContain('reads only (--device-writes adds the writes');
    expect(r.stderr).toContain("fits in this machine's RAM");
    expect(digest(dev)).toBe(before);
  });

  it('with --device-writes runs the write patterns through both legs onto the device', async () => {
    // 4096-byte sectors here (512 above): the target serves the device's own block size
    const dev = loopDevice(32, '--sector-size', '4096');
    const r = await runCli(['bench', '--device', dev, '--device-writes', ...quickArgs], {
      timeoutMs: 120_000,
    });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.config.device).toMatchObject({ writes: true, logical_block_size: 4096 });
    expect(report.results.map((x: { pattern: string }) => x.pattern)).toEqual([
      'randread',
      'randread',
      'randread',
      'randwrite',
      'randwrite',
      'randwrite',
    ]);
    expect(r.stderr).toContain('ITS DATA IS OVERWRITTEN');
    // the local leg writes 0xa5 blocks, the host library (through the target) 0x3c ones
    const bytes = readFileSync(dev);
    const blocks = (fill: number) => {
      let n = 0;
      for (let o = 0; o < bytes.length; o += 4096)
        if (bytes.subarray(o, o + 4096).every((b) => b === fill)) n++;
      return n;
    };
    expect(blocks(0xa5)).toBeGreaterThan(0);
    expect(blocks(0x3c)).toBeGreaterThan(0);
  });

  describe('held by another program (O_EXCL, as a mount or a serving engine holds it)', () => {
    let holder: ChildProcess | undefined;
    afterAll(() => holder?.kill('SIGKILL'));

    it('refuses --device-writes before any work, names the cause, and writes nothing', async () => {
      const dev = loopDevice(32);
      holder = spawn(
        process.execPath,
        [
          '-e',
          `const fs = require('fs'); fs.openSync(${JSON.stringify(dev)}, fs.constants.O_RDWR | fs.constants.O_EXCL); console.log('held'); setInterval(() => {}, 1000);`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      await new Promise<void>((resolve) => holder!.stdout!.once('data', () => resolve()));
      const before = digest(dev);
      const r = await runCli(['bench', '--device', dev, '--device-writes', ...quickArgs]);
      expect(r.code).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain(`--device ${dev} is in use`);
      expect(r.stderr).toContain('drop --device-writes to measure its reads only');
      expect(r.stderr).not.toContain('[bench] randread');
      expect(digest(dev)).toBe(before);
      // reads change nothing: the same device, still held, can be measured without writes
      const reads = await runCli(['bench', '--device', dev, ...quickArgs], { timeoutMs: 120_000 });
      expect(reads.code, reads.stderr).toBe(0);
      expect(JSON.parse(reads.stdout).results).toHaveLength(3);
      expect(digest(dev)).toBe(before);
    });
  });

  it('refuses --device-writes on a read-only device', async () => {
    const dev = loopDevice(32, '--read-only');
    const r = await runCli(['bench', '--device', dev, '--device-writes', ...quickArgs]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--device ${dev} is read-only`);
    expect(r.stderr).toContain('Drop --device-writes to measure its reads.');
  });

  it('refuses a device this user may not open before any work, saying what to do', () => {
    const dev = loopDevice(32); // root's, mode 660, group disk
    for (const [writes, verb, doing] of [
      [false, 'read', 'reading'],
      [true, 'write', 'writing'],
    ] as const) {
      const args = ['bench', '--device', dev, ...(writes ? ['--device-writes'] : []), ...quickArgs];
      const p = spawnSync(process.execPath, [BIN, ...args], {
        encoding: 'utf8',
        timeout: 20_000,
        uid: 65534,
        gid: 65534,
      });
      if (p.error) throw p.error;
      expect(p.status).toBe(1);
      expect(p.stdout).toBe('');
      expect(p.stderr).toContain(
        `bench: cannot open --device ${dev} for ${doing} (EACCES).\nThis user (uid 65534) may not ${verb} it: run the benchmark as root`,
      );
      expect(p.stderr).not.toContain('bug');
    }
  });

  it('refuses a device smaller than 16 MiB', async () => {
    const dev = loopDevice(8);
    const r = await runCli(['bench', '--device', dev, ...quickArgs]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--device ${dev} has 8 MiB; the benchmark needs at least 16 MiB`);
  });
});

describe('branchsan bench --device: command-line mistakes', () => {
  it('refuses a path that is no block device, or none at all', async () => {
    const file = path.join(dir, 'plain.img');
    writeFileSync(file, Buffer.alloc(MiB));
    const r = await runCli(['bench', '--device', file, ...quickArgs]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`--device ${file} is not a block device.`);
    expect(r.stderr).toContain('use --disk-dir DIR instead');
    const gone = await runCli(['bench', '--device', '/dev/branchsan-none', ...quickArgs]);
    expect(gone.code).toBe(2);
    expect(gone.stderr).toContain('--device /dev/branchsan-none does not exist');
  });

  it('refuses --device-writes without --device, and --device with --disk-dir', async () => {
    const w = await runCli(['bench', '--device-writes', ...quickArgs]);
    expect(w.code).toBe(2);
    expect(w.stderr).toContain('--device-writes needs --device DEV');
    const both = await runCli(['bench', '--device', '/dev/loop0', '--disk-dir', '/var/tmp']);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain('--device and --disk-dir each name what to measure');
  });
});
