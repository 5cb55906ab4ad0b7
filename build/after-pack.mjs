// electron-builder afterPack hook: gives the engine (resources/engine/) its own copy of
// package.json and the renderer bundle it serves as the web console. These cannot be
// extraResources: electron-builder leaves files listed there out of app.asar, and the
// desktop window needs them too.
import { cpSync } from 'node:fs';
import { join } from 'node:path';

export default async function afterPack(context) {
  const project = context.packager.info.projectDir;
  const resources =
    context.electronPlatformName === 'darwin'
      ? join(
          context.appOutDir,
          `${context.packager.appInfo.productFilename}.app`,
          'Contents',
          'Resources',
        )
      : join(context.appOutDir, 'resources');
  const engine = join(resources, 'engine');
  cpSync(join(project, 'package.json'), join(engine, 'package.json'));
  cpSync(join(project, 'dist', 'renderer'), join(engine, 'dist', 'renderer'), {
    recursive: true,
    filter: (src) => !src.endsWith('.map'),
  });
}
