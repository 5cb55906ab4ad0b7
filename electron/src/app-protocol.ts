/**
 * The renderer's own origin, app://branchsan, instead of file:// (Electron security
 * checklist: "avoid usage of the file:// protocol"). A file:// page is same-origin
 * with every file on the disk; app://branchsan/ serves exactly the files of
 * dist/renderer and nothing else, so the CSP's 'self' means our bundle. With it the
 * GrantFileProtocolExtraPrivileges fuse can be off (build/electron-builder.yml).
 *
 * Electron-free, so the file mapping and the responses are tested for real; main.ts
 * registers the scheme and hands its requests to serveAppRequest.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { extname, join, normalize, sep } from 'node:path';
import { RENDERER_CONTENT_TYPES } from '../../contract/renderer-files.js';
import { CONTENT_SECURITY_POLICY } from './security.js';

export const APP_SCHEME = 'app';
export const APP_HOST = 'branchsan';
export const APP_INDEX_URL = `${APP_SCHEME}://${APP_HOST}/index.html`;

/**
 * Privileges for protocol.registerSchemesAsPrivileged: a standard scheme (relative URLs
 * and origins work as for https) that counts as secure. Nothing else: no fetch API,
 * no CORS, no service workers, no bypassing the CSP.
 */
export const APP_SCHEME_PRIVILEGES = { standard: true, secure: true } as const;

/**
 * The file under `root` that an app:// URL names, or null: another scheme or host, a
 * path that is not valid percent-encoding, holds a NUL, leaves `root` (also through
 * encoded dots or slashes) or has a type the renderer never serves.
 */
export function appFilePath(raw: string, root: string): string | null {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  if (url.protocol !== `${APP_SCHEME}:` || url.host !== APP_HOST) return null;
  let path: string;
  try {
    path = decodeURIComponent(url.pathname);
  } catch {
    return null;
  }
  if (path.includes('\0') || path.includes('\\')) return null;
  const file = normalize(join(root, path));
  const base = normalize(root).replace(/[/\\]+$/, '');
  if (!file.startsWith(base + sep)) return null;
  if (!(extname(file).toLowerCase() in RENDERER_CONTENT_TYPES)) return null;
  return file;
}

/**
 * The answer to one request on the app scheme: the file with its type and our CSP, or
 * 404 (nothing else is revealed, not even whether a path exists outside the bundle,
 * also when a symbolic link in the bundle points there); only GET and HEAD.
 */
export async function serveAppRequest(req: Request, root: string): Promise<Response> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    return new Response(null, { status: 405, headers: { Allow: 'GET, HEAD' } });
  }
  const file = appFilePath(req.url, root);
  if (file) {
    try {
      // A symbolic link inside the bundle must not lead out of it.
      const [real, realRoot] = await Promise.all([realpath(file), realpath(root)]);
      if (real.startsWith(realRoot + sep) && (await stat(real)).isFile()) {
        const body = req.method === 'HEAD' ? null : await readFile(real);
        return new Response(body, {
          status: 200,
          headers: {
            'Content-Type': RENDERER_CONTENT_TYPES[extname(file).toLowerCase()]!,
            'Content-Security-Policy': CONTENT_SECURITY_POLICY,
            'X-Content-Type-Options': 'nosniff',
            'Cache-Control': 'no-cache',
          },
        });
      }
    } catch {
      // missing or unreadable: 404 like any other path
    }
  }
  return new Response('not found', { status: 404, headers: { 'Content-Type': 'text/plain' } });
}
