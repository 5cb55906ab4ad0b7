#!/usr/bin/env node
// The `branchsan` command. Runs the compiled engine CLI from dist/.
//
// Long-running commands (serve, export, bench, lab) re-run themselves once with
// glibc's malloc tuned: by default glibc trims freed memory back to the OS so
// aggressively that Node's socket buffers page-fault again and again, and 4 KiB I/O
// swings between 36k and 420k req/s from run to run (see the design notes,
// PERF-NOTES "Memory allocator trap"). The systemd unit sets the same variables.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const main = new URL('../dist/engine/src/cli/main.js', import.meta.url);
if (!existsSync(main)) {
  console.error(`branchsan: the engine is not built yet in ${root}.`);
  console.error('Run `npm run build` there first (npm start and npm test build it for you).');
  process.exit(1);
}

const MALLOC_ENV = {
  MALLOC_TRIM_THRESHOLD_: '1073741824',
  MALLOC_TOP_PAD_: '67108864',
  MALLOC_MMAP_THRESHOLD_: '33554432',
};
const LONG_RUNNING = new Set(['serve', 'export', 'bench', 'lab']);
const command = process.argv[2];

if (LONG_RUNNING.has(command) && process.env.MALLOC_TRIM_THRESHOLD_ === undefined) {
  const child = spawn(
    process.execPath,
    [...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    {
      stdio: 'inherit',
      // The child watches this pid: if this launcher is killed outright (SIGKILL, the
      // OOM killer), nothing forwards a signal, so the child stops itself cleanly rather
      // than run on, orphaned, holding its port and lock (cli/command.ts, onStopRequest).
      env: { ...process.env, ...MALLOC_ENV, BRANCHSAN_LAUNCHER_PID: String(process.pid) },
    },
  );
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => {
    if (signal) {
      // Die of the same signal so our parent (a service manager, a test) sees it: with
      // our forwarders still installed, re-raising SIGTERM/SIGINT/SIGHUP would be caught
      // and we would exit 0 as if the engine had stopped cleanly.
      process.removeAllListeners(signal);
      process.kill(process.pid, signal);
    } else process.exit(code ?? 1);
  });
} else {
  const { run } = await import(main.href);
  process.exitCode = await run(process.argv.slice(2));
}
