// Bundles Electron main and preload into dist/electron/ with esbuild.
// main.js: ESM (the package is "type": "module"), platform node, 'electron' external.
// preload.cjs: ONE CommonJS file whose only require is 'electron' — a sandboxed
// preload cannot require relative modules or Node built-ins.
import { build } from 'esbuild';
import { rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Builds both bundles into `outdir`; returns the paths written. */
export async function buildElectron({ outdir = join(ROOT, 'dist', 'electron') } = {}) {
  await rm(outdir, { recursive: true, force: true });
  const common = {
    absWorkingDir: ROOT,
    bundle: true,
    external: ['electron'],
    logLevel: 'warning',
    legalComments: 'none',
  };
  const main = join(outdir, 'main.js');
  const preload = join(outdir, 'preload.cjs');
  await Promise.all([
    build({
      ...common,
      entryPoints: ['electron/src/main.ts'],
      outfile: main,
      platform: 'node',
      format: 'esm',
      target: 'node22',
      sourcemap: true,
    }),
    build({
      ...common,
      entryPoints: ['electron/src/preload.ts'],
      outfile: preload,
      platform: 'node', // the sandboxed preload's `require` is Node-shaped
      format: 'cjs',
      target: 'chrome130',
    }),
  ]);
  return { main, preload };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  buildElectron().then(
    ({ main, preload }) => console.log(`built ${main} and ${preload}`),
    (err) => {
      console.error(err);
      process.exit(1);
    },
  );
}
