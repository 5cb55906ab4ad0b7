/**
 * Where the engine's socket is and how to start the engine when nobody answers there.
 * Planning is pure (tested); running a plan is a spawn or one elevated command.
 * What is exercised by tests: the dev spawn (real engine) and every plan. The pkexec and
 * Windows `sc start` paths are built here but have not run on a packaged install yet.
 * Electron-free.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

/** glibc allocator settings for the engine; why: PERF-NOTES.md "Memory allocator trap". */
export const ENGINE_MALLOC_ENV = {
  MALLOC_TRIM_THRESHOLD_: '1073741824',
  MALLOC_TOP_PAD_: '67108864',
  MALLOC_MMAP_THRESHOLD_: '33554432',
} as const;

export const LINUX_SERVICE_SOCKET = '/run/branchsan/engine.sock';
export const WINDOWS_SERVICE_PIPE = '\\\\.\\pipe\\branchsan-engine';

/**
 * external: someone else runs the engine (scripts/start.js, an operator) and told us its socket.
 * dev:      an unpackaged app runs its own engine on a per-user data directory.
 * service:  a packaged install talks to the system service.
 */
export type EngineMode = 'external' | 'dev' | 'service';

export interface EngineTarget {
  mode: EngineMode;
  socketPath: string;
  /** Only for dev: the engine's data directory. */
  dataDir?: string;
}

export interface TargetContext {
  env: Record<string, string | undefined>;
  packaged: boolean;
  platform: NodeJS.Platform;
  /** Electron's userData directory. */
  userData: string;
}

export function resolveEngineTarget(ctx: TargetContext): EngineTarget {
  const given = ctx.env.BRANCHSAN_SOCKET;
  if (given) return { mode: 'external', socketPath: given };
  if (!ctx.packaged) {
    const dataDir = join(ctx.userData, 'engine');
    return { mode: 'dev', socketPath: join(dataDir, 'engine.sock'), dataDir };
  }
  const socketPath = ctx.platform === 'win32' ? WINDOWS_SERVICE_PIPE : LINUX_SERVICE_SOCKET;
  return { mode: 'service', socketPath };
}

export type StartPlan =
  | { kind: 'spawn'; command: string; args: string[]; env: Record<string, string>; cwd: string }
  | { kind: 'elevated'; command: string; args: string[] }
  | { kind: 'none'; reason: string };

export interface PlanContext {
  platform: NodeJS.Platform;
  /** Directory holding bin/branchsan.js (the repo root in dev). */
  appRoot: string;
  /** A Node.js >= 20 binary; the engine's native modules are built for Node, not Electron. */
  nodePath: string;
  env: Record<string, string | undefined>;
}

export function planEngineStart(target: EngineTarget, ctx: PlanContext): StartPlan {
  if (target.mode === 'external') {
    return {
      kind: 'none',
      reason: `the engine on ${target.socketPath} is managed by whoever started it`,
    };
  }
  if (target.mode === 'dev') {
    const env: Record<string, string> = { ...definedOnly(ctx.env), ...ENGINE_MALLOC_ENV };
    const args = [
      join(ctx.appRoot, 'bin', 'branchsan.js'),
      'serve',
      '--data',
      target.dataDir ?? '',
    ];
    return { kind: 'spawn', command: ctx.nodePath, args, env, cwd: ctx.appRoot };
  }
  if (ctx.platform === 'linux') {
    // polkit asks for an administrator's password; the unit itself is installed by the .deb.
    return {
      kind: 'elevated',
      command: 'pkexec',
      args: ['systemctl', 'start', 'branchsan.service'],
    };
  }
  if (ctx.platform === 'win32') {
    // UAC prompt; the service is registered by the installer as "BranchSAN".
    const ps =
      "Start-Process -FilePath sc.exe -ArgumentList 'start','BranchSAN' -Verb RunAs -WindowStyle Hidden -Wait";
    return {
      kind: 'elevated',
      command: 'powershell.exe',
      args: ['-NoProfile', '-NonInteractive', '-Command', ps],
    };
  }
  return {
    kind: 'none',
    reason: `starting the engine service is not supported on ${ctx.platform}`,
  };
}

/** What the engine prints on stdout once it serves. */
export interface EngineReady {
  socket: string;
  consoleUrl?: string;
}

/** Recognises the engine's structured "engine ready" log line. */
export function parseReadyLine(line: string): EngineReady | undefined {
  if (!line.includes('engine ready')) return undefined;
  try {
    const msg = JSON.parse(line) as { msg?: unknown; socket?: unknown; consoleUrl?: unknown };
    if (msg.msg !== 'engine ready' || typeof msg.socket !== 'string') return undefined;
    return typeof msg.consoleUrl === 'string'
      ? { socket: msg.socket, consoleUrl: msg.consoleUrl }
      : { socket: msg.socket };
  } catch {
    return undefined;
  }
}

export interface SpawnedEngine extends EngineReady {
  child: ChildProcess;
}

/** Spawns the dev engine and resolves once it prints its ready line. */
export function spawnEngine(
  plan: Extract<StartPlan, { kind: 'spawn' }>,
  timeoutMs = 30_000,
): Promise<SpawnedEngine> {
  const child = spawn(plan.command, plan.args, {
    cwd: plan.cwd,
    env: plan.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    let errTail = '';
    let settled = false;
    const fail = (why: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      child.kill('SIGTERM');
      reject(new Error(`the engine did not start: ${why}${errTail ? `\n${errTail.trim()}` : ''}`));
    };
    const timer = setTimeout(
      () => fail(`no "engine ready" line within ${timeoutMs / 1000} s`),
      timeoutMs,
    );
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      let nl: number;
      while ((nl = out.indexOf('\n')) !== -1) {
        const ready = parseReadyLine(out.slice(0, nl));
        out = out.slice(nl + 1);
        if (!ready || settled) continue;
        settled = true;
        clearTimeout(timer);
        child.stdout?.removeAllListeners('data').resume(); // keep draining, nobody reads it now
        resolve({ ...ready, child });
        return;
      }
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      errTail = (errTail + chunk).slice(-2000);
    });
    child.once('error', (err) => fail(err.message));
    child.once('exit', (code, signal) => fail(`it exited (${signal ?? `code ${code}`})`));
  });
}

/** Runs one elevated command; resolves with an operator-facing message when it fails. */
export function runElevated(
  plan: Extract<StartPlan, { kind: 'elevated' }>,
): Promise<string | undefined> {
  return new Promise((resolve) => {
    execFile(plan.command, plan.args, { timeout: 120_000 }, (err, _stdout, stderr) => {
      if (!err) return resolve(undefined);
      const code: unknown = (err as { code?: unknown }).code;
      if (code === 'ENOENT') return resolve(`${plan.command} is not available on this system`);
      // pkexec: 126 = the authentication dialog was dismissed, 127 = not authorised.
      if (code === 126 || code === 127)
        return resolve('starting the engine service was not authorised');
      resolve(`starting the engine service failed: ${String(stderr).trim() || err.message}`);
    });
  });
}

function definedOnly(env: Record<string, string | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}
