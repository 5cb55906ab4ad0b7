/**
 * The preload: exposes exactly BridgeApi as window.branchsan and nothing else.
 * Bundled into one CommonJS file (sandboxed preloads cannot require relative modules);
 * its only import at run time is 'electron'.
 */
import { contextBridge, ipcRenderer, type IpcRendererEvent } from 'electron';
import type { EventName } from '../../contract/api.js';
import { BRIDGE_GLOBAL, IPC, type BridgeApi, type BridgeLinkState } from '../../contract/bridge.js';

/** Subscribes to one push channel; the returned function unsubscribes. */
function listen<T>(channel: string, handler: (msg: T) => void): () => void {
  const listener = (_event: IpcRendererEvent, msg: T): void => handler(msg);
  ipcRenderer.on(channel, listener);
  return () => {
    ipcRenderer.removeListener(channel, listener);
  };
}

const api: BridgeApi = {
  call: (method, params) => ipcRenderer.invoke(IPC.call, method, params),
  onEvent: (handler) =>
    listen<{ name: EventName; data: unknown }>(IPC.event, (msg) => handler(msg.name, msg.data)),
  onState: (handler) => listen<BridgeLinkState>(IPC.state, handler),
  getState: () => ipcRenderer.invoke(IPC.getState),
};

contextBridge.exposeInMainWorld(BRIDGE_GLOBAL, api);
