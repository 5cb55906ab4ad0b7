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
  /** main -> renderer: BridgeLinkState */
  state: 'branchsan:state',
  /** invoke: () -> BridgeLinkState */
  getState: 'branchsan:get-state',
} as const;

/** Errors cross the IPC boundary as data, never as thrown objects. */
export type BridgeReply = { ok: true; result: unknown } | { ok: false; error: RpcErrorBody };

/**
 * The link to the engine as main has it. Only main sees why a connect failed (the
 * socket's errno, the owner check, the API version handshake): `reason` carries its
 * words to the window, which otherwise could only guess.
 */
export interface BridgeLinkState {
  state: ConnectionState;
  /** While not connected: why the last attempt failed, and what to do; else absent. */
  reason?: string;
}

export interface BridgeApi {
  call(method: MethodName, params: unknown): Promise<BridgeReply>;
  onEvent(handler: (name: EventName, data: unknown) => void): () => void;
  onState(handler: (link: BridgeLinkState) => void): () => void;
  getState(): Promise<BridgeLinkState>;
}

/** Name of the global the preload defines. */
export const BRIDGE_GLOBAL = 'branchsan';
