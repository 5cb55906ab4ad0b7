/**
 * Main's side of the preload bridge: exactly the channels of contract/bridge.ts.
 * Every message is checked twice before it reaches the engine: who sent it (our own
 * page, top frame) and what it carries (a contract method, params that fit its schema).
 * Errors cross as BridgeReply data; nothing thrown here reaches the renderer.
 */
import type { IpcMainInvokeEvent } from 'electron';
import {
  ApiError,
  ErrorCode,
  METHOD_NAMES,
  methods,
  type ConnectionState,
  type MethodName,
  type RpcErrorBody,
} from '../../contract/api.js';
import { IPC, type BridgeLinkState, type BridgeReply } from '../../contract/bridge.js';
import { paramIssues } from '../../contract/param-issues.js';

/** The part of ipcMain used here (tests pass a fake). */
export interface IpcMainLike {
  handle(
    channel: string,
    listener: (event: IpcMainInvokeEvent, ...args: unknown[]) => unknown,
  ): void;
  removeHandler(channel: string): void;
}

/** What the bridge forwards to: the engine link. */
export interface BridgeBackend {
  callRaw(method: string, params: unknown): Promise<unknown>;
  /** The link's state and, while not connected, its last failure (EngineLink.info). */
  readonly info: LinkInfo;
}

/** The part of EngineLink's status the window is told. */
export interface LinkInfo {
  state: ConnectionState;
  error?: { message: string };
}

/** The link as the window gets it: the failure's words only while not connected. */
export function bridgeLinkState(info: LinkInfo): BridgeLinkState {
  return info.state !== 'connected' && info.error
    ? { state: info.state, reason: info.error.message }
    : { state: info.state };
}

/** Registers the invoke channels; returns a function that removes them. */
export function registerBridge(
  ipc: IpcMainLike,
  backend: BridgeBackend,
  isTrustedSender: (event: IpcMainInvokeEvent) => boolean,
): () => void {
  ipc.handle(IPC.call, (event, method, params): Promise<BridgeReply> => {
    if (!isTrustedSender(event)) return Promise.resolve(refused());
    return forwardCall(backend, method, params);
  });
  ipc.handle(IPC.getState, (event): BridgeLinkState =>
    isTrustedSender(event) ? bridgeLinkState(backend.info) : { state: 'disconnected' },
  );
  return () => {
    ipc.removeHandler(IPC.call);
    ipc.removeHandler(IPC.getState);
  };
}

/** Validates one call and forwards it; always resolves. */
export async function forwardCall(
  backend: BridgeBackend,
  method: unknown,
  params: unknown,
): Promise<BridgeReply> {
  const invalid = validateCall(method, params);
  if (invalid) return { ok: false, error: invalid };
  try {
    return { ok: true, result: await backend.callRaw(method as MethodName, params ?? {}) };
  } catch (err) {
    return { ok: false, error: toErrorBody(err) };
  }
}

/** Checks a call against the contract; returns the error to send back, if any. */
export function validateCall(method: unknown, params: unknown): RpcErrorBody | undefined {
  if (typeof method !== 'string' || !(METHOD_NAMES as string[]).includes(method)) {
    return {
      code: ErrorCode.MethodNotFound,
      message: `${typeof method === 'string' ? JSON.stringify(method.slice(0, 128)) : 'That'} is not a BranchSAN API method.`,
    };
  }
  const parsed = methods[method as MethodName].params.safeParse(params ?? {});
  if (parsed.success) return undefined;
  // Worded as the engine words its own refusal (control/rpc.ts): the field and what it
  // expected, so the page's error names what to correct.
  const issues = paramIssues(parsed.error);
  const first = issues[0];
  return {
    code: ErrorCode.InvalidParams,
    message: `Invalid parameters for ${method}: ${first?.path || 'params'}: ${first?.message}.`,
    data: { ...(first?.path ? { field: first.path } : {}), issues },
  };
}

function toErrorBody(err: unknown): RpcErrorBody {
  if (err instanceof ApiError) {
    return err.data === undefined
      ? { code: err.code, message: err.message }
      : { code: err.code, message: err.message, data: err.data };
  }
  return {
    code: ErrorCode.Internal,
    message: `BranchSAN could not forward the call: ${err instanceof Error ? err.message : String(err)}`,
  };
}

function refused(): BridgeReply {
  return {
    ok: false,
    error: {
      code: ErrorCode.Unauthorized,
      message: 'This page may not call the BranchSAN engine.',
    },
  };
}
