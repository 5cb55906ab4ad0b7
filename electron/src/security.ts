/**
 * The window's security settings and the checks main applies to every navigation,
 * new window, external link and IPC sender. Pure functions, Electron-free, tested.
 */
import type { WebPreferences } from 'electron';

/** The only webPreferences BranchSAN's window is ever created with. */
export function windowWebPreferences(preloadPath: string): WebPreferences {
  return {
    preload: preloadPath,
    contextIsolation: true,
    sandbox: true,
    nodeIntegration: false,
    nodeIntegrationInWorker: false,
    nodeIntegrationInSubFrames: false,
    webSecurity: true,
    allowRunningInsecureContent: false,
    webviewTag: false,
    experimentalFeatures: false,
    navigateOnDragDrop: false,
    safeDialogs: true,
    spellcheck: false,
  };
}

/**
 * The renderer loads only its own files and talks to the engine through the preload,
 * never over the network. renderer/index.html carries a meta CSP for the web console
 * too; both apply, so this one may only be as strict or stricter (connect-src 'none').
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'none'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-src 'none'",
  "frame-ancestors 'none'",
].join('; ');

/** Response headers with our CSP, replacing any the response carried (any letter case). */
export function withCsp(
  headers: Record<string, string[] | string> | undefined,
): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (k.toLowerCase() === 'content-security-policy') continue;
    out[k] = Array.isArray(v) ? v : [v];
  }
  out['Content-Security-Policy'] = [CONTENT_SECURITY_POLICY];
  return out;
}

/** Links the renderer may open in the user's browser: https only, no credentials in the URL. */
export function isSafeExternalUrl(raw: string): boolean {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return false;
  }
  return url.protocol === 'https:' && url.hostname !== '' && !url.username && !url.password;
}

/** True when `raw` is our renderer page (same scheme, host and path; query and hash may differ). */
export function isOwnPage(raw: string | undefined, indexUrl: string): boolean {
  if (!raw) return false;
  let url: URL;
  let own: URL;
  try {
    url = new URL(raw);
    own = new URL(indexUrl);
  } catch {
    return false;
  }
  return (
    url.protocol === own.protocol &&
    url.host === own.host &&
    url.pathname === own.pathname &&
    !url.username &&
    !url.password &&
    url.port === own.port
  );
}
