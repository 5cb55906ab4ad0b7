/**
 * The management API contract: every method, event and data shape, declared once.
 * The engine validates every inbound message against these schemas at runtime;
 * the renderer and the Electron preload use the same declarations (types, names).
 *
 * Wire format (both the local Unix socket and the console WebSocket): JSON-RPC 2.0.
 * Unix socket: one JSON object per line ("\n"-delimited). WebSocket: one per frame.
 * Events are JSON-RPC notifications: {"jsonrpc":"2.0","method":"event","params":{"name","data"}}.
 */
import { z } from 'zod';

export const API_VERSION = 1;

// ---------------------------------------------------------------- data shapes

export const SystemStatus = z.object({
  version: z.string(),
  apiVersion: z.number().int(),
  nodeId: z.string(),
  hostname: z.string(),
  pid: z.number().int(),
  startedAt: z.number(), // ms since epoch
  uptimeSec: z.number(),
  dataDir: z.string(),
  dbSchemaVersion: z.number().int(),
});
export type SystemStatus = z.infer<typeof SystemStatus>;

export const Heartbeat = z.object({
  at: z.number(), // ms since epoch
  uptimeSec: z.number(),
});
export type Heartbeat = z.infer<typeof Heartbeat>;

// ---------------------------------------------------------------- methods

const NoParams = z.object({}).strict();

/** Every callable method: its params (validated on the engine) and its result. */
export const methods = {
  /** Engine identity and health at a glance. */
  'system.status': { params: NoParams, result: SystemStatus },
} as const;

export type MethodName = keyof typeof methods;
export type MethodParams<M extends MethodName> = z.input<(typeof methods)[M]['params']>;
export type MethodResult<M extends MethodName> = z.output<(typeof methods)[M]['result']>;
export const METHOD_NAMES = Object.keys(methods) as MethodName[];

// ---------------------------------------------------------------- events

/** Every pushed event and its payload. */
export const events = {
  /** Once a second while the engine runs. */
  'system.heartbeat': Heartbeat,
} as const;

export type EventName = keyof typeof events;
export type EventData<E extends EventName> = z.output<(typeof events)[E]>;
export const EVENT_NAMES = Object.keys(events) as EventName[];

// ---------------------------------------------------------------- envelope

export const RpcRequest = z.object({
  jsonrpc: z.literal('2.0'),
  id: z.union([z.string().max(64), z.number().int()]),
  method: z.string().max(128),
  params: z.unknown().optional(),
});
export type RpcRequest = z.infer<typeof RpcRequest>;

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
export interface RpcEventNotification {
  jsonrpc: '2.0';
  method: 'event';
  params: { name: EventName; data: unknown };
}

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
