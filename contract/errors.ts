/**
 * The zod-free half of the contract: error codes, the error class clients throw, the
 * wire envelope types and names (the console's subprotocols, the page key header) and
 * the client interface. The renderer imports only this file
 * (and types) at runtime, so the console bundle carries no schema library.
 */
import type { EventData, EventName, MethodName, MethodParams, MethodResult } from './api.js';

/** The console WebSocket's API version subprotocol: the engine selects it. */
export const CONSOLE_SUBPROTOCOL = 'branchsan.v1';
/**
 * The session's page key (engine: control/auth/console-auth.ts) rides on the upgrade as
 * a subprotocol offer with this prefix, and on plain requests in PAGE_KEY_HEADER.
 */
export const PAGE_KEY_PROTOCOL = 'branchsan.key.';
export const PAGE_KEY_HEADER = 'X-BranchSAN-Key';

/** Error codes: JSON-RPC's own, then ours (-32000..-32099). */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  Internal: -32603,
  Unauthorized: -32001,
  Conflict: -32002,
  NotFound: -32003,
  Unavailable: -32004,
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

export interface RpcErrorData {
  /** Dotted path of the offending field, when one field is at fault. */
  field?: string;
  /** What the user can do next. */
  hint?: string;
  /** Validation details, one per problem. */
  issues?: { path: string; message: string }[];
}
export interface RpcErrorBody {
  code: ErrorCode;
  message: string;
  data?: RpcErrorData;
}
export type RpcResponse =
  | { jsonrpc: '2.0'; id: string | number | null; result: unknown }
  | { jsonrpc: '2.0'; id: string | number | null; error: RpcErrorBody };
/** Thrown by clients when the engine answers with an error. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly data?: RpcErrorData,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** The one client interface the renderer and Electron main use, whatever the transport. */
export interface ApiClient {
  call<M extends MethodName>(method: M, params: MethodParams<M>): Promise<MethodResult<M>>;
  /** Subscribe to one event; returns the unsubscribe function. */
  on<E extends EventName>(event: E, handler: (data: EventData<E>) => void): () => void;
  /** Connection state changes (for the status bar). */
  onState(handler: (state: ConnectionState) => void): () => void;
  readonly state: ConnectionState;
  close(): void;
}
export type ConnectionState = 'connecting' | 'connected' | 'disconnected';
