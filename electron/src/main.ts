/**
 * Electron main: a thin, unprivileged client of the engine. It finds the engine's
 * socket, checks who owns it, starts the engine when nobody answers, and relays the
 * contract between the window (through the preload) and the socket. No business logic.
 */
import {
  app,
  BrowserWindow,
  ipcMain,
  Menu,
  Notification,
  protocol,
  session,
  shell,
  type IpcMainInvokeEvent,
  type Session,
  type WebContents,
} from 'electron';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { API_VERSION, EVENT_NAMES, type ConnectionState } from '../../contract/api.js';
import { IPC } from '../../contract/bridge.js';
import {
  planEngineStart,
  resolveEngineTarget,
  runElevated,
  spawnEngine,
  type EngineTarget,
  type SpawnedEngine,
} from './engine-launcher.js';
import { EngineLink, type LinkStatus } from './engine-link.js';
import {
  APP_INDEX_URL,
  APP_SCHEME,
  APP_SCHEME_PRIVILEGES,
  serveAppRequest,
} from './app-protocol.js';
import { bridgeLinkState, registerBridge } from './ipc.js';
import { AlertNotifier, ConnectionNotifier, forDesktop } from './notifications.js';
import { isOwnPage, isSafeExternalUrl, windowWebPreferences, withCsp } from './security.js';
import { createTray, type AppTray } from './tray.js';

const here = dirname(fileURLToPath(import.meta.url)); // dist/electron
const PRELOAD = join(here, 'preload.cjs');
/** Served as app://branchsan/ (app-protocol.ts); the window never loads a file:// URL. */
const RENDERER_DIR = join(here, '..', 'renderer');
const APP_ROOT = join(here, '..', '..'); // holds bin/branchsan.js in development

let win: BrowserWindow | undefined;
let tray: AppTray | undefined;
let link: EngineLink | undefined;
let devEngine: SpawnedEngine | undefined;
let quitting = false;

if (!app.requestSingleInstanceLock()) {
  app.quit();
} else {
  app.enableSandbox();
  // Before 'ready', as Electron requires: our page's origin is a standard, secure scheme.
  protocol.registerSchemesAsPrivileged([{ scheme: APP_SCHEME, privileges: APP_SCHEME_PRIVILEGES }]);
  app.on('second-instance', showWindow);
  app.on('web-contents-created', (_e, contents) => hardenContents(contents));
  app.on('before-quit', shutdown);
  app.on('window-all-closed', () => {
    if (!tray) app.quit();
  });
  app.whenReady().then(ready, (err: unknown) => {
    console.error('BranchSAN could not start:', err);
    app.exit(1);
  });
}

function ready(): void {
  if (app.isPackaged) Menu.setApplicationMenu(null);
  hardenSession(session.defaultSession);
  session.defaultSession.protocol.handle(APP_SCHEME, (req) => serveAppRequest(req, RENDERER_DIR));
  const target = resolveEngineTarget({
    env: process.env,
    packaged: app.isPackaged,
    platform: process.platform,
    userData: app.getPath('userData'),
  });
  link = new EngineLink({ socketPath: target.socketPath, handshake: checkApiVersion });
  registerBridge(ipcMain, link, isTrustedSender);
  for (const name of EVENT_NAMES) link.on(name, (data) => sendToWindow(IPC.event, { name, data }));
  const alerts = new AlertNotifier();
  link.on('alert.raised', (a) => {
    const notice = alerts.raised(a);
    if (!notice || !Notification.isSupported()) return;
    const shown = new Notification(forDesktop(notice, process.platform));
    shown.on('click', showWindow); // the status page lists it, with what to do
    shown.show();
  });
  watchConnection(link, target);
  try {
    tray = createTray({ openConsole: showWindow, quit: () => app.quit() });
  } catch (err) {
    console.warn('BranchSAN: no tray icon on this desktop:', err);
  }
  createWindow();
  link.start();
}

function createWindow(): void {
  win = new BrowserWindow({
    width: 1280,
    height: 820,
    minWidth: 900,
    minHeight: 600,
    show: false,
    title: 'BranchSAN',
    webPreferences: windowWebPreferences(PRELOAD),
  });
  win.once('ready-to-show', () => win?.show());
  win.on('close', (e) => {
    // With a tray the window only hides: the tray and notifications keep watching.
    if (tray && !quitting) {
      e.preventDefault();
      win?.hide();
    }
  });
  win.on('closed', () => (win = undefined));
  void win.loadURL(APP_INDEX_URL);
}

function showWindow(): void {
  if (!app.isReady()) return;
  if (!win) createWindow();
  if (win?.isMinimized()) win.restore();
  win?.show();
  win?.focus();
}

/** Pushes state to the window, the tray and notifications; starts the engine once if absent. */
function watchConnection(l: EngineLink, target: EngineTarget): void {
  const notifier = new ConnectionNotifier();
  let launchTried = false;
  l.onState((state: ConnectionState, status: LinkStatus) => {
    sendToWindow(IPC.state, bridgeLinkState(status));
    tray?.update(status);
    const notice = notifier.next(state, status.error?.message, status.closed === true);
    if (notice && Notification.isSupported())
      new Notification(forDesktop(notice, process.platform)).show();
    const absent = status.error?.code === 'ENOENT' || status.error?.code === 'ECONNREFUSED';
    if (state === 'disconnected' && absent && !launchTried) {
      launchTried = true;
      void launchEngine(target, l);
    }
  });
}

async function launchEngine(target: EngineTarget, l: EngineLink): Promise<void> {
  const plan = planEngineStart(target, {
    platform: process.platform,
    appRoot: APP_ROOT,
    nodePath: process.env.BRANCHSAN_NODE ?? process.env.npm_node_execpath ?? 'node',
    env: process.env,
  });
  try {
    if (plan.kind === 'none') {
      console.info(`BranchSAN: not starting the engine: ${plan.reason}`);
      return;
    }
    if (plan.kind === 'spawn') {
      devEngine = await spawnEngine(plan);
      devEngine.child.once('exit', () => (devEngine = undefined));
      console.info(`BranchSAN: started a development engine on ${devEngine.socket}`);
    } else {
      const failure = await runElevated(plan);
      if (failure) throw new Error(failure);
    }
    l.reconnectNow();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    console.error(`BranchSAN: ${message}`);
    if (Notification.isSupported()) {
      const notice = { title: 'BranchSAN engine is not running', body: message };
      new Notification(forDesktop(notice, process.platform)).show();
    }
  }
}

/** Refuses an engine that speaks another API version than this app. */
async function checkApiVersion(call: (m: string, p: unknown) => Promise<unknown>): Promise<void> {
  const status = (await call('system.status', {})) as { apiVersion?: unknown };
  if (status.apiVersion !== API_VERSION) {
    throw new Error(
      `the engine speaks API version ${String(status.apiVersion)}, this app ${API_VERSION}: install matching versions`,
    );
  }
}

function isTrustedSender(event: IpcMainInvokeEvent): boolean {
  const frame = event.senderFrame;
  return (
    !!win &&
    event.sender === win.webContents &&
    !!frame &&
    frame.parent === null &&
    isOwnPage(frame.url, APP_INDEX_URL)
  );
}

function sendToWindow(channel: string, payload: unknown): void {
  if (win && !win.isDestroyed()) win.webContents.send(channel, payload);
}

/** No remote content, no permissions, our CSP on every response. */
function hardenSession(ses: Session): void {
  ses.setPermissionRequestHandler((_wc, _permission, callback) => callback(false));
  ses.setPermissionCheckHandler(() => false);
  ses.webRequest.onBeforeRequest(
    { urls: ['http://*/*', 'https://*/*', 'ws://*/*', 'wss://*/*'] },
    (_details, callback) => callback({ cancel: true }),
  );
  ses.webRequest.onHeadersReceived((details, callback) =>
    callback({ responseHeaders: withCsp(details.responseHeaders) }),
  );
}

/** Every web contents: no navigation away, no new windows, no webviews. */
function hardenContents(contents: WebContents): void {
  contents.on('will-navigate', (event) => {
    if (isOwnPage(event.url, APP_INDEX_URL)) return;
    event.preventDefault();
    openExternally(event.url);
  });
  // will-navigate sees the main frame only; the page has no frames, so no subframe navigates.
  contents.on('will-frame-navigate', (event) => {
    if (!event.isMainFrame) event.preventDefault();
  });
  contents.on('will-redirect', (event) => {
    if (!isOwnPage(event.url, APP_INDEX_URL)) event.preventDefault();
  });
  contents.on('will-attach-webview', (event) => event.preventDefault());
  contents.setWindowOpenHandler(({ url }) => {
    openExternally(url);
    return { action: 'deny' };
  });
}

function openExternally(url: string): void {
  if (isSafeExternalUrl(url)) void shell.openExternal(url);
}

function shutdown(): void {
  quitting = true;
  link?.close();
  tray?.destroy();
  tray = undefined;
  // Only an engine this process spawned (development) stops with the window.
  devEngine?.child.kill('SIGTERM');
}
