/**
 * The CLI where a user's setup differs from the defaults, or a mistake would cost
 * data: an engine whose socket lives outside its data directory (the systemd
 * service's), output aimed into the data directory, a hung engine, a read-only file
 * system, a dangling symbolic link, odd sizes. Each runs the built CLI as users do.
 *
 * Needs the built engine (npm test builds it).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, runCli, startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';
import { canMountTmpfs, fillFs, smallFs, unmountSmallFs } from '../helpers/small-fs.js';

const isRoot = process.getuid?.() === 0;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A usage or user error: said on stderr, with no stack trace and no "bug". */
function expectError(
  r: { code: number | null; stdout: string; stderr: string },
  code: number,
  message: string | RegExp,
): void {
  if (typeof message === 'string') expect(r.stderr).toContain(message);
  else expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/^\s+at |looks like a bug/m);
  expect(r.code).toBe(code);
}

describe('an engine whose API socket is outside its data directory (as the service runs it)', () => {
  let engine: RunningEngine;
  let socketDir: string;

  beforeAll(async () => {
    socketDir = tempDir('branchsan-run-');
    engine = await startEngine({ args: ['--socket', path.join(socketDir, 'engine.sock')] });
  });
  afterAll(async () => {
    await engine?.stop();
  });

  it('`status --data DIR` finds it, and shows its NVMe/TCP ports', async () => {
    // Before: "Cannot reach the BranchSAN engine at DIR/engine.sock (ENOENT). Start it…"
    const r = await runCli(['status', '--data', engine.dataDir]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`engine pid ${engine.pid}`);
    expect(r.stdout).toContain('NVMe/TCP ports: none configured');
    expect(r.stdout).toContain('0 subsystems, 0 namespaces');
  });

  it('`status`, `alerts` and `events` read `--data=~/DIR` as serve does', async () => {
    // No shell expands a ~ after `=`: serve reads it as the home directory, and so must
    // the commands that look for that engine. Before: "Cannot reach the BranchSAN
    // engine at ~/…/engine.sock (ENOENT). Start it with `branchsan serve`…", while it ran.
    const home = path.dirname(engine.dataDir);
    const data = `--data=~/${path.basename(engine.dataDir)}`;
    for (const args of [['status'], ['alerts'], ['events', '--since', '1h']]) {
      const r = await runCli([...args, data], { env: { HOME: home } });
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
    }
  });

  it('`diagnostics --data DIR` asks it, rather than reading the directory behind its back', async () => {
    const out = path.join(tempDir(), 'diag.tar.gz');
    const r = await runCli(['diagnostics', '--data', engine.dataDir, '--out', out], {
      timeoutMs: 60_000,
    });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('from the running engine');
  });

  it('`diagnostics --out` inside the data directory is refused, and the database survives', async () => {
    const db = path.join(engine.dataDir, 'branchsan.db');
    for (const out of [db, path.join(engine.dataDir, 'logs', 'diag.tar.gz')]) {
      const r = await runCli(['diagnostics', '--data', engine.dataDir, '--out', out]);
      // Before: the bundle replaced the engine's database ("written", exit 0).
      expectError(r, 2, `is inside the data directory ${engine.dataDir}`);
      expect(r.stderr).toContain('Write the bundle somewhere else');
    }
    const check = new Database(db, { readonly: true });
    expect(check.pragma('integrity_check')).toEqual([{ integrity_check: 'ok' }]);
    check.close();
  });
});

describe('serve', () => {
  it('prints the ready line with the console URL whatever --log-level says', async () => {
    // Before: nothing at info level was printed, so no URL (nor setup token) appeared.
    const engine = await startEngine({ args: ['--log-level', 'warn'] });
    try {
      expect(engine.consoleUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/\?token=/);
      expect(engine.lines.filter((l) => l.level === 'info').map((l) => l.msg)).toEqual([
        'engine ready',
      ]);
    } finally {
      await engine.stop();
    }
  });

  // Before: 'Cannot listen for the web console on 999.1.1.1:51513: ENOTFOUND. Check the
  // address and port.'
  it('a --console-host that is no address and no name says so and what to give', async () => {
    const engine = await startEngine({
      args: ['--console-host', '999.1.1.1', '--console-port', '51513'],
    });
    try {
      const ready = engine.lines.find((l) => l.msg === 'engine ready')!;
      expect(ready.consoleProblem).toMatch(
        /^Cannot listen for the web console on 999\.1\.1\.1:51513: (ENOTFOUND\. 999\.1\.1\.1 is neither an address nor a name that resolves: give --console-host one of its interface addresses, or 0\.0\.0\.0 \(`ip -br addr` lists them\)|EAI_AGAIN\. The name 999\.1\.1\.1 could not be resolved now \(DNS did not answer\))/,
      );
    } finally {
      await engine.stop();
    }
  });

  it('checks --console-port even with --no-console', async () => {
    const data = tempDir();
    const r = await runCli(['serve', '--data', data, '--no-console', '--console-port', '99999']);
    expectError(r, 2, '--console-port');
  });

  it('refuses console settings given with --no-console, rather than ignore them', async () => {
    const data = tempDir();
    const r = await runCli([
      'serve',
      '--data',
      data,
      '--no-console',
      '--console-host',
      '0.0.0.0',
      '--console-tls',
      'on',
    ]);
    // Before: the engine started without a console, not a word about either setting.
    expectError(r, 2, '--no-console turns the web console off, so --console-host, --console-tls');
    expect(r.stderr).toContain('Drop --no-console');
    expect(fs.readdirSync(data)).toEqual([]);
  });

  it('says when --data names a file', async () => {
    const file = path.join(tempDir(), 'afile');
    fs.writeFileSync(file, 'x');
    const r = await runCli(['serve', '--data', file, '--console-port', '0']);
    // Before: "cannot be used: EEXIST", with the hint to create it.
    expectError(
      r,
      1,
      `The data directory ${file} cannot be used: it (or a directory above it) is a file.`,
    );
    expect(fs.readFileSync(file, 'utf8')).toBe('x');
  });

  // Before: 'The data directory DIR cannot be used: EACCES', nothing of whose it is.
  it.skipIf(!isRoot)('says whose a data directory the engine may not write is', () => {
    const base = fs.mkdtempSync('/dev/shm/branchsan-serve-owner-'); // nobody may enter it
    try {
      fs.chmodSync(base, 0o755);
      for (const [data, where] of [
        [base, 'in it'],
        [path.join(base, 'sub', 'data'), `in ${base}, where it would be made`],
      ] as const) {
        const p = spawnSync(
          process.execPath,
          [BIN, 'serve', '--data', data, '--console-port', '51515'],
          { encoding: 'utf8', timeout: 20_000, uid: 65534, gid: 65534 },
        );
        if (p.error) throw p.error;
        expectError(
          { code: p.status, stdout: p.stdout, stderr: p.stderr },
          1,
          `The data directory ${data} cannot be used: the engine's user (uid 65534) may not write ${where} (EACCES: it belongs to uid 0, mode 755).`,
        );
        expect(p.stderr).toContain(
          'Run the engine as root (or as the user that owns the directory)',
        );
      }
      expect(fs.readdirSync(base)).toEqual([]);
    } finally {
      fs.rmSync(base, { recursive: true, force: true });
    }
  });

  it('says when the directory of --socket does not exist', async () => {
    const data = tempDir();
    const sock = path.join(data, 'missing', 'engine.sock');
    const r = await runCli(['serve', '--data', data, '--socket', sock, '--console-port', '0']);
    // Before: "listen EACCES: permission denied" (libuv's word for a missing directory).
    expectError(
      r,
      1,
      `Cannot listen on the API socket ${sock}: the directory ${path.dirname(sock)} does not exist.`,
    );
  });

  it('says when --data is on a file system that takes no directories (/proc)', async () => {
    // Before: Node's recursive mkdir looped on ENOENT forever at full CPU.
    const r = await runCli(['serve', '--data', '/proc/branchsan-x/data', '--console-port', '0'], {
      timeoutMs: 8000,
    });
    expectError(
      r,
      1,
      'The data directory /proc/branchsan-x/data cannot be created: its file system takes no new directories there',
    );
  });
});

describe.skipIf(!isRoot)('on a read-only file system', () => {
  let mnt: string;
  beforeAll(() => {
    mnt = tempDir('branchsan-ro-');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    fs.mkdirSync(path.join(mnt, 'data'));
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
  });
  afterAll(() => {
    spawnSync('umount', [mnt]);
  });

  it('`passwd` says the data directory is read-only', async () => {
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>(
      (resolve) => {
        const p = spawnSync(
          process.execPath,
          [BIN, 'passwd', '--data', path.join(mnt, 'data'), '--password-stdin'],
          { input: 'a long enough password\n', encoding: 'utf8' },
        );
        resolve({ code: p.status, stdout: p.stdout, stderr: p.stderr });
      },
    );
    // Before: "ENOENT: no such file or directory, mkdir …/secrets" and "a bug in BranchSAN".
    expectError(r, 1, 'is on a read-only file system; nothing was changed');
    expect(r.stderr).toContain('Remount it read-write');
  });

  it('`serve` says so for a data directory still to be created there', async () => {
    const r = await runCli(['serve', '--data', path.join(mnt, 'new'), '--console-port', '0']);
    expectError(r, 1, 'its file system is read-only');
  });
});

describe('passwd', () => {
  afterAll(() => unmountSmallFs());

  it('--password-stdin refuses a terminal, which would echo the password', () => {
    const data = tempDir();
    // `script` gives the command a terminal as its standard input.
    const p = spawnSync(
      'script',
      ['-qec', `${process.execPath} ${BIN} passwd --data ${data} --password-stdin`, '/dev/null'],
      { input: '', encoding: 'utf8', timeout: 20_000 },
    );
    if (p.error) throw p.error;
    const out = p.stdout.replace(/\r/g, '');
    expect(out).toContain('standard input is a terminal');
    expect(out).toContain('Run it without --password-stdin');
    expect(p.status).toBe(2);
    expect(fs.existsSync(path.join(data, 'secrets', 'console-password'))).toBe(false);
  });

  /** `passwd --data DATA --password-stdin`, given a good password, as `user`. */
  const passwd = (data: string, user?: { uid: number; gid: number }) => {
    const p = spawnSync(process.execPath, [BIN, 'passwd', '--data', data, '--password-stdin'], {
      input: 'correct horse battery\n',
      encoding: 'utf8',
      timeout: 20_000,
      ...user,
    });
    if (p.error) throw p.error;
    return { code: p.status, stdout: p.stdout, stderr: p.stderr };
  };

  // Before: 'branchsan: ENOSPC: no space left on device, write' and a general hint.
  it.skipIf(!canMountTmpfs)(
    'a full data disk: says the file system is full and what to run',
    () => {
      const data = smallFs('branchsan-passwd-full-');
      const old = passwd(data);
      expect(old.code).toBe(0);
      const file = path.join(data, 'secrets', 'console-password');
      const before = fs.readFileSync(file, 'utf8');
      fillFs(data);
      const r = passwd(data);
      expectError(
        r,
        1,
        `passwd: the admin password could not be written to ${file}: its file system is full (ENOSPC); nothing was changed.`,
      );
      expect(r.stderr).toContain(`Free space there (\`df -h ${data}\` shows how much is left)`);
      expect(fs.readFileSync(file, 'utf8')).toBe(before);
      expect(fs.readdirSync(path.dirname(file))).toEqual(['console-password']);
    },
  );

  // Before: "branchsan: EACCES: permission denied, mkdir '…/secrets'".
  it.skipIf(!isRoot)(
    'a data directory another user owns: says whose it is and how to run it',
    () => {
      const base = fs.mkdtempSync('/dev/shm/branchsan-passwd-owner-'); // nobody may enter it
      try {
        fs.chmodSync(base, 0o755);
        const r = passwd(base, { uid: 65534, gid: 65534 });
        expectError(
          r,
          1,
          `passwd: this user (uid 65534) may not write the admin password file ${base}/secrets/console-password (EACCES); nothing was changed.`,
        );
        expect(r.stderr).toContain(
          `Run it as root (sudo branchsan passwd --data ${base}) or as the user the engine runs as (the data directory's owner, uid 0).`,
        );
      } finally {
        fs.rmSync(base, { recursive: true, force: true });
      }
    },
  );
});

describe('export', () => {
  // Before: 'cannot open DIR/vol.img (EACCES): permission denied; the engine service must
  // be able to read and write it' and 'run it as root or fix the file's owner', of a file
  // that was never made.
  it.skipIf(!isRoot)(
    '--create-size in a directory this user may not write in says whose it is',
    () => {
      const base = fs.mkdtempSync('/dev/shm/branchsan-export-owner-'); // nobody may enter it
      try {
        fs.chmodSync(base, 0o755);
        const file = path.join(base, 'vol.img');
        const p = spawnSync(
          process.execPath,
          [BIN, 'export', file, '--create-size', '64M', '--port', '51514'],
          { encoding: 'utf8', timeout: 20_000, uid: 65534, gid: 65534 },
        );
        if (p.error) throw p.error;
        expectError(
          { code: p.status, stdout: p.stdout, stderr: p.stderr },
          1,
          `export: cannot create ${file}: this user (uid 65534) may not write in ${base} (EACCES: it belongs to uid 0, mode 755).`,
        );
        expect(p.stderr).toContain(
          'Run it as root (sudo branchsan export …), or choose a path in a directory you may write to.',
        );
        expect(fs.readdirSync(base)).toEqual([]);
      } finally {
        fs.rmSync(base, { recursive: true, force: true });
      }
    },
  );

  it('--create-size on a dangling symbolic link: an error, and the link is left alone', async () => {
    const dir = tempDir();
    const link = path.join(dir, 'dl.img');
    fs.symlinkSync(path.join(dir, 'nowhere', 'x.img'), link);
    const r = await runCli(['export', link, '--create-size', '64M', '--port', '0']);
    // Before: "already exists … use it without a size", and the link was deleted.
    expectError(r, 2, `${link} is a symbolic link to ${path.join(dir, 'nowhere', 'x.img')}`);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
  });

  it('a file whose size is not a whole number of blocks: says how to fix it', async () => {
    const file = path.join(tempDir(), 'odd.img');
    fs.writeFileSync(file, Buffer.alloc(1000));
    const r = await runCli(['export', file, '--port', '0']);
    expectError(r, 1, 'multiple of 512');
    expect(r.stderr).toContain(`resize it (truncate -s SIZE '${file}')`);
  });

  it('a size too large to represent is called too large', async () => {
    const r = await runCli(['export', path.join(tempDir(), 'big.img'), '--create-size', '99999P']);
    expectError(r, 2, 'export: --create-size 99999P is too large: the most is 8.0 PiB.');
  });

  it('on loopback says other machines cannot connect; an IPv6 address is written with brackets', async () => {
    const file = path.join('/dev/shm', `branchsan-cli-errors-${process.pid}.img`);
    try {
      for (const host of ['127.0.0.1', '::1']) {
        const p = spawn(process.execPath, [
          BIN,
          'export',
          file,
          '--create-size',
          '1M',
          '--port',
          '0',
          '--host',
          host,
        ]);
        let out = '';
        p.stdout.on('data', (d: Buffer) => (out += d.toString()));
        const exited = new Promise((resolve) => p.once('exit', resolve));
        for (let i = 0; i < 200 && !out.includes('Press Ctrl-C'); i++) await sleep(50);
        p.kill('SIGINT');
        await exited;
        expect(out, host).toContain('listening on loopback only: other machines cannot');
        if (host === '::1') expect(out).toMatch(/on \[::1\]:\d+ \(discovery/);
        fs.rmSync(file, { force: true });
      }
    } finally {
      fs.rmSync(file, { force: true });
    }
  });
});

describe('status, alerts and events', () => {
  // Before: 'Cannot reach the BranchSAN engine at DIR/engine.sock (ENOENT). Start it with
  // `branchsan serve --data DIR`…', for a mistyped --data as for a stopped engine.
  it('a --data directory that does not exist is named as such', async () => {
    const missing = path.join(tempDir(), 'typo');
    for (const args of [['status'], ['alerts'], ['events'], ['alerts', 'ack', '1']]) {
      const r = await runCli([...args, '--data', missing]);
      expectError(
        r,
        1,
        `branchsan: ${args[0]}: the data directory ${missing} does not exist, so no engine runs on it.`,
      );
      expect(r.stderr).toContain(
        'Pass the directory the engine runs with (the systemd service uses /var/lib/branchsan), or start one on it with `branchsan serve --data DIR`.',
      );
    }
  });
});

describe('status --socket', () => {
  // Before: 'Cannot reach the BranchSAN engine at DIR (ECONNREFUSED)' and to start the
  // engine, for a data directory given as the socket.
  it('a directory or file given as the socket is named as such, with the option meant', async () => {
    const data = tempDir();
    fs.writeFileSync(path.join(data, 'branchsan.db'), '');
    const dir = await runCli(['status', '--socket', data]);
    expectError(
      dir,
      1,
      `Cannot reach the BranchSAN engine at ${data} (ECONNREFUSED: it is a directory, not a socket).`,
    );
    expect(dir.stderr).toContain(`Pass a data directory with --data ${data}, or the engine's API`);
    const file = path.join(data, 'branchsan.db');
    expectError(
      await runCli(['status', '--socket', file]),
      1,
      `Cannot reach the BranchSAN engine at ${file} (ECONNREFUSED: it is a file, not a socket).`,
    );
  });
});

describe('probe and service', () => {
  it('probe: a broken IPv6 address is "not a target address", not a bad port', async () => {
    const r = await runCli(['probe', '[::1']);
    expectError(r, 2, 'probe: "[::1" is not a target address.');
    expect(r.stderr).not.toContain('[:4420');
  });

  // Before: the host NQN file was read by name: a named pipe there held probe in open()
  // for good (until something wrote to it), and a directory there was passed over, so
  // probe connected as a made-up host.
  it('probe: a named pipe or directory where nvme-cli keeps the host identity is named, not waited on', async () => {
    const nvme = tempDir('branchsan-nvme-');
    const env = { BRANCHSAN_NVME_DIR: nvme };
    const closed = ['probe', '127.0.0.1:51511', '--seconds', '0'];
    execFileSync('mkfifo', [path.join(nvme, 'hostnqn')]);
    const pipe = await runCli(closed, { env, timeoutMs: 5_000 });
    expectError(
      pipe,
      1,
      `probe: this machine's host NQN file ${nvme}/hostnqn is a special file (a named pipe, socket or device), not a regular file.`,
    );
    expect(pipe.stderr).toContain(
      `Put nvme-cli's host NQN there (as root: rm -r ${nvme}/hostnqn && nvme gen-hostnqn > ${nvme}/hostnqn), or give the host NQN with --hostnqn.`,
    );
    // given on the command line, the file is not read
    const given = await runCli([...closed, '--hostnqn', 'nqn.2026-11.io.branchsan.test:h'], {
      env,
      timeoutMs: 5_000,
    });
    expectError(given, 1, 'nothing accepts connections there (connection refused)');

    fs.rmSync(path.join(nvme, 'hostnqn'));
    fs.mkdirSync(path.join(nvme, 'hostid'));
    expectError(
      await runCli(closed, { env, timeoutMs: 5_000 }),
      1,
      `probe: this machine's host identifier file ${nvme}/hostid is a directory, not a regular file.`,
    );
  });

  it('service install refuses a --unit that is not a BranchSAN unit', async () => {
    const empty = path.join(tempDir(), 'empty.service');
    fs.writeFileSync(empty, '');
    const r = await runCli(['service', 'install', '--dry-run', '--unit', empty]);
    expectError(r, 2, `${empty} is not a BranchSAN systemd unit`);
  });
});
