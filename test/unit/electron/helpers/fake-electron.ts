/** A stand-in for the 'electron' module: records what main asks of it. */
import { EventEmitter } from 'node:events';

type Fn = (...args: unknown[]) => unknown;

function freshState() {
  return {
    lock: true,
    windows: [] as {
      options: Record<string, unknown>;
      loaded: string[];
      sent: [string, unknown][];
      webContents: unknown;
    }[],
    handlers: new Map<string, (...a: unknown[]) => unknown>(),
    appEvents: new Map<string, (...a: unknown[]) => unknown>(),
    permissionRequest: undefined as undefined | ((...a: unknown[]) => void),
    permissionCheck: undefined as undefined | ((...a: unknown[]) => boolean),
    beforeRequest: undefined as undefined | { filter: unknown; fn: (...a: unknown[]) => void },
    headersReceived: undefined as undefined | ((...a: unknown[]) => void),
    opened: [] as string[],
    /** Schemes registered privileged, and whether the app was ready by then. */
    privileged: [] as { schemes: unknown; afterReady: boolean }[],
    protocolHandlers: new Map<string, (req: Request) => Promise<Response> | Response>(),
    ready: false,
    quitCalled: 0,
    sandboxed: false,
    /** Whether the desktop shows notifications, and the ones shown. */
    notificationsSupported: false,
    notifications: [] as { title: unknown; body: unknown; events: string[] }[],
  };
}

/** Kept on globalThis so it survives vi.resetModules() (a second import of main). */
const g = globalThis as { __fakeElectron?: ReturnType<typeof freshState> };
export const fake = (g.__fakeElectron ??= freshState());

class BrowserWindow extends EventEmitter {
  readonly webContents: { send: Fn };
  readonly record: (typeof fake.windows)[number];
  constructor(options: Record<string, unknown>) {
    super();
    const sent: [string, unknown][] = [];
    this.webContents = {
      send: (ch: unknown, payload: unknown) => void sent.push([ch as string, payload]),
    };
    this.record = { options, loaded: [], sent, webContents: this.webContents };
    fake.windows.push(this.record);
  }
  loadFile(p: string): Promise<void> {
    this.record.loaded.push(p);
    return Promise.resolve();
  }
  loadURL(u: string): Promise<void> {
    this.record.loaded.push(u);
    return Promise.resolve();
  }
  isDestroyed = (): boolean => false;
  isMinimized = (): boolean => false;
  show = (): void => undefined;
  hide = (): void => undefined;
  focus = (): void => undefined;
  restore = (): void => undefined;
}
const app = {
  isPackaged: false,
  requestSingleInstanceLock: () => fake.lock,
  quit: () => void fake.quitCalled++,
  exit: () => undefined,
  enableSandbox: () => void (fake.sandboxed = true),
  on: (name: string, fn: Fn) => void fake.appEvents.set(name, fn),
  whenReady: () => Promise.resolve().then(() => void (fake.ready = true)),
  isReady: () => true,
  getPath: () => '/nonexistent-user-data',
};
class Tray {
  setImage(): void {}
  setToolTip(): void {}
  setContextMenu(): void {}
  on(): void {}
  destroy(): void {}
}
class Notification {
  static isSupported = (): boolean => fake.notificationsSupported;
  private readonly record: (typeof fake.notifications)[number];
  constructor(o: { title?: unknown; body?: unknown }) {
    this.record = { title: o.title, body: o.body, events: [] };
  }
  on(event: string): this {
    this.record.events.push(event);
    return this;
  }
  show(): void {
    fake.notifications.push(this.record);
  }
}

export { app, BrowserWindow, Tray, Notification };
export const Menu = { buildFromTemplate: (t: unknown) => t, setApplicationMenu: () => undefined };
export const nativeImage = { createFromBitmap: () => ({}) };
export const ipcMain = {
  handle: (ch: string, fn: Fn) => void fake.handlers.set(ch, fn),
  removeHandler: (ch: string) => void fake.handlers.delete(ch),
};
export const shell = { openExternal: (url: string) => void fake.opened.push(url) };
export const protocol = {
  registerSchemesAsPrivileged: (schemes: unknown) =>
    void fake.privileged.push({ schemes, afterReady: fake.ready }),
};
export const session = {
  defaultSession: {
    protocol: {
      handle: (scheme: string, fn: (req: Request) => Promise<Response> | Response) =>
        void fake.protocolHandlers.set(scheme, fn),
    },
    setPermissionRequestHandler: (fn: Fn) => void (fake.permissionRequest = fn),
    setPermissionCheckHandler: (fn: (...a: unknown[]) => boolean) =>
      void (fake.permissionCheck = fn),
    webRequest: {
      onBeforeRequest: (filter: unknown, fn: Fn) => void (fake.beforeRequest = { filter, fn }),
      onHeadersReceived: (fn: Fn) => void (fake.headersReceived = fn),
    },
  },
};
