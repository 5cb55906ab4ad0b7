/**
 * The one object the Electron preload exposes to the renderer (window.branchsan),
 * declared once. It carries the API contract and nothing else: the preload forwards
 * calls to main over these IPC channels, main forwards them to the engine's socket.
 */
import type { ConnectionState, EventName, MethodName, RpcErrorBody } from './api.js';

/** IPC channel names; the only ones main and preload use. */
export const IPC = {
  /** invoke: (method, params) -> BridgeReply */
  call: 'branchsan:call',
  /** main -> renderer: { name, data } */
  event: 'branchsan:event',
  /** main -> renderer: ConnectionState */
  state: 'branchsan:state',
  /** invoke: () -> ConnectionState */
  getState: 'branchsan:get-state',
} as const;

/** Errors cross the IPC boundary as data, never as thrown objects. */
export type BridgeReply = { ok: true; result: unknown } | { ok: false; error: RpcErrorBody };

export interface BridgeApi {
  call(method: MethodName, params: unknown): Promise<BridgeReply>;
  onEvent(handler: (name: EventName, data: unknown) => void): () => void;
  onState(handler: (state: ConnectionState) => void): () => void;
  getState(): Promise<ConnectionState>;
}

/** Name of the global the preload defines. */
export const BRIDGE_GLOBAL = 'branchsan';
