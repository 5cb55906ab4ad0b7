/**
 * The transport-agnostic half of an API client: request ids, pending calls, timeouts,
 * event fan-out. The WebSocket transport (renderer), the Unix-socket client (Electron
 * main, CLI, tests) wrap it with their own framing. No DOM and no Node here.
 */
import { ApiError, ErrorCode, type RpcErrorBody } from './errors.js';
import type { EventName, MethodName } from './api.js';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export interface RpcSessionOptions {
  /** Sends one serialized message; throws or returns false when the link is down. */
  send: (text: string) => boolean | void;
  /** Per-call timeout in ms (default 15000). */
  timeoutMs?: number;
  /**
   * An event listener threw (default: console.error). The other listeners, and the
   * messages after it in the same read, are still delivered.
   */
  onListenerError?: (err: unknown, event: string) => void;
  /** What to do when a call finds no link (default: the console's words, it reconnects). */
  notConnectedHint?: string;
}

/** How long a call waits for its answer unless the client says otherwise. */
export const DEFAULT_CALL_TIMEOUT_MS = 15_000;

export class RpcSession {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Map<string, Set<(data: unknown) => void>>();
  private readonly timeoutMs: number;

  constructor(private readonly opts: RpcSessionOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  /** Sends a request; resolves with its result or rejects with an ApiError. */
  call(method: MethodName | string, params: unknown): Promise<unknown> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new ApiError(
            ErrorCode.Unavailable,
            `The engine did not answer ${method} within ${this.timeoutMs / 1000} s.`,
            {
              hint: 'Check that the BranchSAN engine service is running (systemctl status branchsan); if it is, it may be stuck: its log (journalctl -u branchsan) says on what.',
            },
          ),
        );
      }, this.timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      let sent: boolean | void;
      try {
        sent = this.opts.send(JSON.stringify({ jsonrpc: '2.0', id, method, params: params ?? {} }));
      } catch {
        sent = false;
      }
      if (sent === false) this.settle(id, undefined, notConnected(this.opts.notConnectedHint));
    });
  }

  /** Subscribes to one event name; returns the unsubscribe function. */
  on(name: EventName | string, handler: (data: unknown) => void): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(handler);
    return () => set.delete(handler);
  }

  /** Feeds one received message (a response or an event notification). */
  receive(text: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(text);
    } catch {
      return; // a broken frame from the engine is dropped; the call it answered times out
    }
    if (!msg || typeof msg !== 'object') return;
    const m = msg as {
      id?: unknown;
      result?: unknown;
      error?: RpcErrorBody;
      method?: unknown;
      params?: { name?: unknown; data?: unknown };
    };
    if (m.method === 'event' && m.params && typeof m.params.name === 'string') {
      const name = m.params.name;
      for (const h of this.listeners.get(name) ?? []) {
        try {
          h(m.params.data);
        } catch (err) {
          (this.opts.onListenerError ?? reportListenerError)(err, name);
        }
      }
      return;
    }
    if (typeof m.id !== 'number') return;
    if (m.error)
      this.settle(m.id, undefined, new ApiError(m.error.code, m.error.message, m.error.data));
    else this.settle(m.id, m.result);
  }

  /** The link went down: every pending call fails now rather than at its timeout. */
  failAll(reason?: Error): void {
    for (const id of [...this.pending.keys()])
      this.settle(id, undefined, reason ?? notConnected(this.opts.notConnectedHint));
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  private settle(id: number, value: unknown, err?: Error): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(value);
  }
}

function notConnected(
  hint = 'The engine service may be stopped or restarting; the console reconnects by itself.',
): ApiError {
  return new ApiError(ErrorCode.Unavailable, 'Not connected to the BranchSAN engine.', { hint });
}

/** How a listener that threw is reported when the caller gave no onListenerError. */
export function reportListenerError(err: unknown, event: string): void {
  console.error(`BranchSAN API client: a listener of ${event} failed:`, err);
}
