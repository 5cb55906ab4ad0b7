// `npm start` (after `npm run build`): runs an engine on a per-user lab data directory,
// unless one already serves there, and opens the desktop app on it. Where no Electron
// binary exists (offline installs, headless servers) the engine stays in the
// foreground and its web console is the way in. Ctrl-C stops what this script started.
//
// Environment: BRANCHSAN_DATA (data directory; default $XDG_DATA_HOME/branchsan/lab or
// ~/.local/share/branchsan/lab), BRANCHSAN_CONSOLE_PORT (engine's console port, 0 = any).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect } from 'node:net';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

// glibc allocator settings, set here so bin/branchsan.js need not re-exec itself;
// why: PERF-NOTES.md "Memory allocator trap".
const MALLOC_ENV = {
  MALLOC_TRIM_THRESHOLD_: '1073741824',
  MALLOC_TOP_PAD_: '67108864',
  MALLOC_MMAP_THRESHOLD_: '33554432',
};

function labDataDir(env) {
  if (env.BRANCHSAN_DATA) return resolve(env.BRANCHSAN_DATA);
  return join(env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'branchsan', 'lab');
}

/** The Electron executable, or undefined when the package has no binary (offline install). */
function electronBinary() {
  try {
    // The electron package returns the binary's path, or throws when its download never ran.
    const path = createRequire(import.meta.url)('electron');
    return typeof path === 'string' && existsSync(path) ? path : undefined;
  } catch {
    return undefined;
  }
}

/** True when something accepts connections on the socket. */
function answers(socketPath) {
  return new Promise((done) => {
    const s = connect({ path: socketPath });
    const finish = (ok) => {
      s.destroy();
      done(ok);
    };
    s.setTimeout(2000, () => finish(false));
    s.once('connect', () => finish(true));
    s.once('error', () => finish(false));
  });
}

/** Spawns the engine and resolves with its ready line; its output goes to ours. */
function startEngine(dataDir, env) {
  const args = [join(ROOT, 'bin', 'branchsan.js'), 'serve', '--data', dataDir];
  if (env.BRANCHSAN_CONSOLE_PORT) args.push('--console-port', env.BRANCHSAN_CONSOLE_PORT);
  // Own process group: Ctrl-C reaches it once, forwarded by us, not twice.
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...env, ...MALLOC_ENV },
    stdio: ['ignore', 'pipe', 'inherit'],
    detached: true,
  });
  engineChild = child;
  return new Promise((ready, fail) => {
    let buf = '';
    let done = false;
    child.stdout.setEncoding('utf8').on('data', (chunk) => {
      process.stdout.write(chunk);
      if (done) return;
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = parseJson(line);
        if (msg?.msg === 'engine ready' && typeof msg.socket === 'string') {
          done = true;
          buf = '';
          ready({
            child,
            socket: msg.socket,
            consoleUrl: msg.consoleUrl ?? undefined,
            consoleProblem: msg.consoleProblem ?? undefined,
          });
          return;
        }
      }
    });
    child.once('error', (err) => fail(err));
    child.once('exit', (code, signal) => {
      if (!done)
        fail(new Error(`the engine exited before it was ready (${signal ?? `code ${code}`})`));
    });
  });
}

function parseJson(line) {
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

let engineChild; // the engine this script started, if any
let stopping = false;

/** From the start: SIGINT/SIGTERM/SIGHUP go to our engine; a second one kills it. */
function forwardSignals() {
  let count = 0;
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.on(sig, () => {
      stopping = true;
      const e = engineChild;
      if (!e || e.exitCode !== null || e.signalCode !== null) process.exit(130);
      e.kill(++count > 1 ? 'SIGKILL' : sig === 'SIGHUP' ? 'SIGTERM' : sig);
    });
  }
  process.on('exit', () => {
    const e = engineChild;
    if (e && e.exitCode === null && e.signalCode === null) e.kill('SIGTERM');
  });
}

function exited(child) {
  return new Promise((done) => {
    if (child.exitCode !== null || child.signalCode !== null) done(child.exitCode ?? 1);
    else child.once('exit', (code) => done(code ?? 1));
  });
}

async function main() {
  const env = process.env;
  forwardSignals();
  const dataDir = labDataDir(env);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const defaultSocket = join(dataDir, 'engine.sock');

  let engine;
  let socket = defaultSocket;
  let consoleUrl;
  let consoleProblem;
  if (await answers(defaultSocket)) {
    console.log(`An engine already serves ${dataDir} (socket ${defaultSocket}): using it.`);
  } else {
    ({ child: engine, socket, consoleUrl, consoleProblem } = await startEngine(dataDir, env));
  }

  const electron = electronBinary();
  if (!electron) {
    const noElectron =
      'Electron binary not installed (ELECTRON_SKIP_BINARY_DOWNLOAD / offline machine)';
    // no URL with a problem: not served this run (a console secret file cannot be used)
    if (engine && !consoleUrl && consoleProblem) console.log(`${noElectron}. ${consoleProblem}`);
    else {
      const where = consoleUrl ?? `the URL in that engine's "engine ready" log line`;
      console.log(`${noElectron}: open the console at ${where} instead`);
    }
    // served, but no one can sign in (its admin password file went bad): says what to run
    if (consoleUrl && consoleProblem?.startsWith('The web console is served'))
      console.log(consoleProblem);
    else if (consoleUrl && consoleProblem)
      console.log(
        `The console does not listen yet: ${consoleProblem} The engine keeps trying; or stop it (Ctrl-C) and run again with BRANCHSAN_CONSOLE_PORT set to a free port.`,
      );
    if (!engine) return 0;
    return exited(engine);
  }

  const app = spawn(electron, [join(ROOT, 'dist', 'electron', 'main.js')], {
    cwd: ROOT,
    env: { ...env, BRANCHSAN_SOCKET: socket },
    stdio: 'inherit',
  });
  // Electron gets Ctrl-C from the terminal itself; the engine gets it from us.
  const appCode = await exited(app);
  if (!engine) return appCode;
  if (engine.exitCode === null && engine.signalCode === null) engine.kill('SIGTERM');
  return exited(engine);
}

main().then(
  (code) => process.exit(code),
  (err) => {
    if (stopping) process.exit(0);
    console.error(`npm start: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
