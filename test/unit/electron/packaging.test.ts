/**
 * build/electron-builder.yml and build/linux/branchsan.service, checked without the
 * network: electron-builder packs a Linux "dir" target around a stand-in Electron
 * directory (the real runtime cannot be downloaded here), then the packaged engine is
 * run the way the systemd unit runs it, with the system's Node.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { shippedUnit } from '../../../engine/src/cli/service.js';
import { openError } from '../../../engine/src/storage/file.js';
import { SERVICE_VOLUME_DIRS, VOLUME_DIR } from '../../../engine/src/util/paths.js';
import {
  ENGINE_MALLOC_ENV,
  LINUX_SERVICE_SOCKET,
  spawnEngine,
  type SpawnedEngine,
} from '../../../electron/src/engine-launcher.js';
import { EngineLink } from '../../../electron/src/engine-link.js';
import { until } from './helpers/fake-engine.js';

const ROOT = resolve(fileURLToPath(new URL('../../..', import.meta.url)));
const UNIT = readFileSync(join(ROOT, 'build', 'linux', 'branchsan.service'), 'utf8');
const BUILT = [
  'dist/electron/main.js',
  'dist/engine/src/cli/main.js',
  'dist/renderer/index.html',
].every((f) => existsSync(join(ROOT, f)));
if (!BUILT) console.warn('SKIP packaging test: run `npm run build` first');

/** @electron/fuses' marker in the Electron binary; wire version 1 follows it. */
const FUSE_SENTINEL = Buffer.from('dL7pKGdnNz796PbbjQWNKmHXBZaB9tsX');
/** Electron's shipped states, fuse wire V1 order: '1' enabled, '0' disabled. */
const ELECTRON_DEFAULT_FUSES = '10110001';
const FUSES = [
  'RunAsNode',
  'EnableCookieEncryption',
  'EnableNodeOptionsEnvironmentVariable',
  'EnableNodeCliInspectArguments',
  'EnableEmbeddedAsarIntegrityValidation',
  'OnlyLoadAppFromAsar',
  'LoadBrowserProcessSpecificV8Snapshot',
  'GrantFileProtocolExtraPrivileges',
] as const;

/** The fuse states in a binary, by name. */
function fuseWire(binary: Buffer): Record<string, boolean> {
  const at = binary.indexOf(FUSE_SENTINEL) + FUSE_SENTINEL.length;
  if (at < FUSE_SENTINEL.length) throw new Error('no fuse sentinel in the binary');
  expect(binary[at]).toBe(1); // wire version
  const n = binary[at + 1]!;
  const states = [...binary.subarray(at + 2, at + 2 + n)].map((b) => String.fromCharCode(b));
  return Object.fromEntries(FUSES.slice(0, n).map((name, i) => [name, states[i] === '1']));
}

/** All values of one unit directive. */
function directive(name: string): string[] {
  return [...UNIT.matchAll(new RegExp(`^${name}=(.*)$`, 'gm'))].map((m) => m[1] ?? '');
}

describe('build/linux/branchsan.service', () => {
  it('runs the packaged engine on the system socket and state directory', () => {
    const [exec] = directive('ExecStart');
    expect(exec).toBe(
      `/usr/bin/node /opt/BranchSAN/resources/engine/bin/branchsan.js serve --data /var/lib/branchsan --socket ${LINUX_SERVICE_SOCKET}`,
    );
    expect(directive('RuntimeDirectory')).toEqual(['branchsan']);
    expect(directive('StateDirectory')).toEqual([`branchsan ${path.basename(VOLUME_DIR)}`]);
    expect(directive('Group')).toEqual(['branchsan-admin']);
    expect(directive('Restart')).toEqual(['on-failure']);
  });

  it('sets the allocator variables the launchers set', () => {
    const env = Object.fromEntries(
      directive('Environment')
        .flatMap((l) => l.split(/\s+/))
        .map((kv) => kv.split('=') as [string, string]),
    );
    expect(env).toMatchObject(ENGINE_MALLOC_ENV);
  });

  it('is hardened without taking away block devices', () => {
    for (const d of [
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'ProtectHome=yes',
      'PrivateTmp=yes',
    ])
      expect(UNIT).toMatch(new RegExp(`^${d}$`, 'm'));
    expect(directive('ReadWritePaths')[0]).toContain('/var/lib/branchsan');
    expect(UNIT).not.toMatch(/^(PrivateDevices=yes|DevicePolicy=closed|DevicePolicy=strict)/m);
    // Any device allow-list closes the other devices; before systemd 253 ProtectClock
    // added one (char-rtc), taking /dev/nvme* and /dev/sd* away from the engine.
    expect(UNIT).not.toMatch(/^(DeviceAllow|ProtectClock)=/m);
    expect(directive('SystemCallFilter')).toContain('~@clock');
  });

  it('leaves writable the directories the engine tells users to keep volumes in', () => {
    // ProtectSystem=strict: everything not listed is read-only to the service.
    const writable = directive('ReadWritePaths')
      .flatMap((l) => l.split(/\s+/))
      .map((p) => p.replace(/^-/, ''));
    for (const dir of SERVICE_VOLUME_DIRS) expect(writable).toContain(dir);
  });

  it('names the service sandbox when a volume cannot be opened on a read-only path', () => {
    const erofs = Object.assign(new Error('EROFS'), { code: 'EROFS' });
    const saved = process.env.INVOCATION_ID;
    try {
      process.env.INVOCATION_ID = 'a'.repeat(32);
      const msg = openError('/opt/vol.img', erofs).message;
      expect(msg).toContain('systemctl edit branchsan');
      expect(msg).toContain(VOLUME_DIR);
      delete process.env.INVOCATION_ID;
      expect(openError('/opt/vol.img', erofs).message).toContain('mounted read-only');
    } finally {
      if (saved === undefined) delete process.env.INVOCATION_ID;
      else process.env.INVOCATION_ID = saved;
    }
  });

  it('passes systemd-analyze verify where systemd is installed', () => {
    const probe = spawnSync('systemd-analyze', ['--version']);
    if (probe.error) return console.warn('systemd-analyze not installed: unit not verified');
    const dir = mkdtempSync(join(tmpdir(), 'bsan-unit-'));
    try {
      writeFileSync(join(dir, 'branchsan.service'), UNIT);
      const r = spawnSync('systemd-analyze', ['verify', join(dir, 'branchsan.service')], {
        encoding: 'utf8',
      });
      expect(r.stderr.split('\n').filter((l) => /branchsan\.service/.test(l))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/**
 * A .deb maintainer script as electron-builder writes it: `${name}` is replaced by
 * its template options and any other `${letters}` fails the package build.
 */
function renderScript(file: string): string {
  const options: Record<string, string> = {
    executable: 'branchsan-desktop',
    sanitizedProductName: 'BranchSAN',
    productFilename: 'BranchSAN',
  };
  return readFileSync(join(ROOT, 'build', 'linux', file), 'utf8').replace(
    /\$\{([a-zA-Z]+)\}/g,
    (_m, name: string) => {
      if (!(name in options)) throw new Error(`${file}: macro ${name} is not defined`);
      return options[name]!;
    },
  );
}

describe('build/linux maintainer scripts', () => {
  for (const file of ['postinst.sh', 'postrm.sh']) {
    it(`${file} renders as electron-builder renders it and is valid sh`, () => {
      const text = renderScript(file);
      const r = spawnSync('sh', ['-n'], { input: text, encoding: 'utf8' });
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    });
  }

  it("postinst does what electron-builder's own template would have done (a custom script replaces it)", () => {
    const text = renderScript('postinst.sh');
    // the desktop command, the setuid sandbox fallback, the AppArmor profile
    expect(text).toContain('update-alternatives --install "/usr/bin/$DESKTOP_BIN"');
    expect(text).toContain("DESKTOP_BIN='branchsan-desktop'");
    expect(text).toMatch(/chmod 4755 "\$APP_DIR\/chrome-sandbox"/);
    expect(text).toContain('/resources/apparmor-profile');
    const removal = renderScript('postrm.sh');
    expect(removal).toContain("update-alternatives --remove 'branchsan-desktop'");
    expect(removal).toContain("rm -f '/etc/apparmor.d/branchsan-desktop'");
  });
});

describe.skipIf(!BUILT)('electron-builder linux package layout', () => {
  let out: string;
  let resources: string;
  let engine: SpawnedEngine | undefined;

  beforeAll(() => {
    out = mkdtempSync(join(tmpdir(), 'bsan-pack-'));
    const fakeElectron = join(out, 'fake-electron');
    mkdirSync(fakeElectron);
    // A real Electron binary carries a fuse wire after this sentinel; the stand-in
    // carries one with Electron's defaults, so electron-builder flips it as it would
    // the real one (and fails, as it would, if the config asked for a fuse it lacks).
    writeFileSync(
      join(fakeElectron, 'electron'),
      Buffer.concat([
        Buffer.from('#!/bin/sh\nexit 0\n# '),
        FUSE_SENTINEL,
        Buffer.from([1, ELECTRON_DEFAULT_FUSES.length]),
        Buffer.from(ELECTRON_DEFAULT_FUSES),
        Buffer.from('\n'),
      ]),
    );
    chmodSync(join(fakeElectron, 'electron'), 0o755);
    writeFileSync(join(fakeElectron, 'LICENSE'), '');
    const cli = join(ROOT, 'node_modules', 'electron-builder', 'cli.js');
    const r = spawnSync(
      process.execPath,
      [
        cli,
        '--config',
        'build/electron-builder.yml',
        '--linux',
        'dir',
        '--publish',
        'never',
        `-c.electronDist=${fakeElectron}`,
        `-c.directories.output=${join(out, 'packages')}`,
      ],
      { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
    );
    if (r.status !== 0) throw new Error(`electron-builder failed:\n${r.stdout}\n${r.stderr}`);
    resources = join(out, 'packages', 'linux-unpacked', 'resources');
  }, 150_000);

  afterAll(() => {
    engine?.child.kill('SIGTERM');
    rmSync(out, { recursive: true, force: true });
  });

  it('app.asar holds the bundles, the renderer and package.json only: no node_modules, no sources', () => {
    const asar = createRequire(import.meta.url)('@electron/asar') as {
      listPackage(p: string): string[];
      extractFile(p: string, f: string): Buffer;
    };
    const archive = join(resources, 'app.asar');
    const files = asar.listPackage(archive).map((f) => f.replace(/\\/g, '/'));
    expect(files).toContain('/dist/electron/main.js');
    expect(files).toContain('/dist/electron/preload.cjs');
    expect(files).toContain('/dist/renderer/index.html');
    expect(files.filter((f) => /node_modules|\.map$|\.ts$|\/engine\//.test(f))).toEqual([]);
    const pkg = JSON.parse(asar.extractFile(archive, 'package.json').toString()) as {
      main?: string;
    };
    expect(pkg.main).toBe('dist/electron/main.js');
  });

  it('flips the Electron fuses: no running as Node, no NODE_OPTIONS or --inspect, app only from the asar', () => {
    const binary = readFileSync(join(resources, '..', 'branchsan-desktop'));
    expect(fuseWire(binary)).toEqual({
      RunAsNode: false,
      EnableCookieEncryption: true,
      EnableNodeOptionsEnvironmentVariable: false,
      EnableNodeCliInspectArguments: false,
      EnableEmbeddedAsarIntegrityValidation: true,
      OnlyLoadAppFromAsar: true,
      LoadBrowserProcessSpecificV8Snapshot: false,
      GrantFileProtocolExtraPrivileges: false,
    });
  });

  it('ships the unit file and an engine tree beside the asar', () => {
    expect(readFileSync(join(resources, 'linux', 'branchsan.service'), 'utf8')).toBe(UNIT);
    // `branchsan service install` from the package finds it there
    expect(shippedUnit(join(resources, 'engine'))).toBe(
      join(resources, 'engine', '..', 'linux', 'branchsan.service'),
    );
    for (const f of [
      'package.json',
      'bin/branchsan.js',
      'dist/engine/src/cli/main.js',
      'dist/renderer/index.html',
    ])
      expect(existsSync(join(resources, 'engine', f))).toBe(true);
  });

  it('ships the native addon where the packaged engine looks for it', () => {
    expect(existsSync(join(ROOT, 'engine', 'native', 'build', 'branchsan_native.node'))).toBe(true);
    const r = spawnSync(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const m = await import(${JSON.stringify(pathToFileURL(join(resources, 'engine', 'dist', 'engine', 'src', 'storage', 'io-worker-pool.js')).href)});
         console.log(await m.resolveNativeAddon(undefined));`,
      ],
      { encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin' } },
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(
      join(resources, 'engine', 'dist', 'engine', 'native', 'build', 'branchsan_native.node'),
    );
  });

  it('the .deb depends on the Node major whose ABI the copied better-sqlite3 is built for', () => {
    const config = readFileSync(join(ROOT, 'build', 'electron-builder.yml'), 'utf8');
    const depends = [...config.matchAll(/^ {4}- (nodejs .*)$/gm)].map((m) => m[1]);
    const major = Number(process.versions.node.split('.')[0]);
    expect(depends).toEqual([`nodejs (>= ${major})`, `nodejs (<< ${major + 1})`]);
  });

  it('the packaged engine runs under the system Node the way the unit starts it, and answers the link', async () => {
    const data = join(out, 'var-lib-branchsan');
    const run = join(out, 'run-branchsan'); // systemd's RuntimeDirectory
    mkdirSync(run, { mode: 0o750 });
    engine = await spawnEngine({
      kind: 'spawn',
      command: process.execPath,
      args: [
        join(resources, 'engine', 'bin', 'branchsan.js'),
        'serve',
        '--data',
        data,
        '--socket',
        join(run, 'engine.sock'),
        '--console-port',
        '0',
      ],
      cwd: '/',
      env: { PATH: process.env.PATH ?? '/usr/bin', ...ENGINE_MALLOC_ENV },
    });
    const link = new EngineLink({ socketPath: engine.socket });
    try {
      link.start();
      await until(() => link.state === 'connected', 5000, 'connected');
      expect((await link.call('system.status', {})).dataDir).toBe(data);
      const res = await fetch(engine.consoleUrl ?? '');
      expect(res.status).toBe(200);
      expect(await res.text()).toContain('<div id="app">');
    } finally {
      link.close();
    }
  });
});
