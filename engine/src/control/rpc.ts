/**
 * The JSON-RPC dispatcher shared by the Unix socket and the console WebSocket.
 * Every inbound message is untrusted: the envelope, the method name and the params
 * are validated against the contract before a handler runs, and every failure
 * becomes a structured error on the same connection, which stays usable.
 */
import { z } from 'zod';
import {
  ErrorCode,
  RpcRequest,
  methods,
  type MethodName,
  type MethodResult,
  type RpcErrorBody,
  type RpcResponse,
} from '../../../contract/api.js';
import { paramIssues } from '../../../contract/param-issues.js';
import { storageProblem, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';

/** Who is calling; handlers use it for the audit log. */
export interface CallContext {
  readonly transport: 'socket' | 'console';
  readonly peer: string;
  /**
   * Who is calling, for the audit trail and "acknowledged by": `root@local` on the
   * local socket (`local#N` when the user cannot be told), `admin@ADDRESS` in the
   * web console (its one account, and where it signed in from).
   */
  readonly actor: string;
}

type ParsedParams<M extends MethodName> = z.output<(typeof methods)[M]['params']>;
export type Handler<M extends MethodName> = (
  params: ParsedParams<M>,
  ctx: CallContext,
) => MethodResult<M> | Promise<MethodResult<M>>;
export type Handlers = { [M in MethodName]: Handler<M> };
/** The handlers of one API area; the composition root spreads the groups into Handlers. */
export type HandlerGroup<K extends MethodName> = { [M in K]: Handler<M> };

/** An error a handler raises on purpose, with the code clients see. */
export class ApiFault extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly data?: RpcErrorBody['data'],
  ) {
    super(message);
  }
}

const USER_ERROR_CODES: Record<string, ErrorCode> = {
  'not-found': ErrorCode.NotFound,
  conflict: ErrorCode.Conflict,
  'already-exists': ErrorCode.Conflict,
  unavailable: ErrorCode.Unavailable,
};

/** The largest request, in bytes of UTF-8 as it arrives (as a WebSocket's maxPayload counts). */
export const MAX_MESSAGE_BYTES = 1 << 20;

export class RpcDispatcher {
  constructor(
    private readonly handlers: Handlers,
    private readonly log: Logger,
  ) {}

  /** Handles one raw message; resolves to the serialized response. */
  async handle(text: string, ctx: CallContext): Promise<string> {
    return JSON.stringify(await this.dispatch(text, ctx));
  }

  private async dispatch(text: string, ctx: CallContext): Promise<RpcResponse> {
    // bytes, not UTF-16 units: 700,000 '€' are 2.1 MB of UTF-8 in 700,000 units
    const bytes = Buffer.byteLength(text);
    if (bytes > MAX_MESSAGE_BYTES) return oversizeRefusal(text.slice(0, ID_PREFIX_CHARS), bytes);
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      return fail(null, ErrorCode.ParseError, 'The message is not valid JSON.', {
        hint: 'Send one JSON-RPC 2.0 object per message.',
      });
    }
    const env = RpcRequest.safeParse(raw);
    if (!env.success) {
      const id = idOf(raw);
      return fail(id, ErrorCode.InvalidRequest, 'The message is not a JSON-RPC 2.0 request.', {
        hint: 'Send {"jsonrpc":"2.0","id":1,"method":"system.status","params":{}}.',
        issues: paramIssues(env.error),
      });
    }
    const { id, method } = env.data;
    if (!Object.hasOwn(methods, method)) {
      return fail(id, ErrorCode.MethodNotFound, `Unknown method "${method}".`, {
        hint: `Known methods: ${Object.keys(methods).join(', ')}.`,
      });
    }
    const m = method as MethodName;
    const params = methods[m].params.safeParse(env.data.params ?? {});
    if (!params.success) {
      const issues = paramIssues(params.error);
      return fail(
        id,
        ErrorCode.InvalidParams,
        `Invalid parameters for ${m}: ${issues[0]?.path || 'params'}: ${issues[0]?.message}.`,
        {
          field: issues[0]?.path,
          issues,
        },
      );
    }
    try {
      const handler = this.handlers[m] as Handler<MethodName>;
      const result = await handler(params.data as never, ctx);
      const checked = methods[m].result.safeParse(result);
      if (!checked.success) {
        this.log.error('handler result violates the contract', {
          method: m,
          issues: paramIssues(checked.error),
        });
        return fail(id, ErrorCode.Internal, `The engine produced an invalid answer for ${m}.`, {
          hint: 'This is a bug in BranchSAN; the diagnostics bundle helps us fix it.',
        });
      }
      return { jsonrpc: '2.0', id, result: checked.data };
    } catch (err) {
      return this.toFailure(id, m, err);
    }
  }

  private toFailure(id: string | number, method: string, err: unknown): RpcResponse {
    if (err instanceof ApiFault) return fail(id, err.code, err.message, err.data);
    if (err instanceof UserError) {
      return fail(id, USER_ERROR_CODES[err.code] ?? ErrorCode.InvalidParams, err.message, {
        ...(err.hint ? { hint: err.hint } : {}),
        ...(err.field ? { field: err.field } : {}),
      });
    }
    this.log.error('handler failed', { method, err });
    const storage = storageProblem(err);
    if (storage) {
      return fail(id, ErrorCode.Unavailable, `${method} failed: ${storage}.`, {
        hint: "Free space on the engine's data directory filesystem (or make it writable again), then retry.",
      });
    }
    return fail(
      id,
      ErrorCode.Internal,
      `${method} failed inside the engine: ${(err as Error)?.message ?? String(err)}`,
      {
        hint: 'Retry; if it keeps failing, collect a diagnostics bundle.',
      },
    );
  }
}

/** How much of an over-long request line is searched for its id and method. */
export const ID_PREFIX_CHARS = 4096;

const JSON_STRING = String.raw`"(?:[^"\\]|\\.)*"`;
const JSON_NUMBER = String.raw`-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?`;
/** The start of a request object: members with plain values, up to the one asked for. */
const leadingMember = (key: string) =>
  new RegExp(
    String.raw`^\s*\{(?:\s*${JSON_STRING}\s*:\s*(?:${JSON_STRING}|${JSON_NUMBER}|null|true|false)\s*,)*?` +
      String.raw`\s*"${key}"\s*:\s*(${JSON_STRING}|${JSON_NUMBER})`,
  );
const LEADING_ID = leadingMember('id');
const LEADING_METHOD = leadingMember('method');

/** The value of a top-level member the start of a JSON object gives before any nested one. */
function leadingValue(start: string, re: RegExp): unknown {
  const m = re.exec(start);
  if (!m?.[1]) return undefined;
  try {
    return JSON.parse(m[1]) as unknown;
  } catch {
    return undefined;
  }
}

/**
 * The answer to a request longer than the limit, given its start: under its id when the
 * start gives it (its caller fails now, not at its timeout). `bytes`: its size, or null
 * when only a part of it was seen (a line on the API socket whose end has not come).
 */
export function oversizeRefusal(start: string, bytes: number | null): RpcResponse {
  const id = leadingValue(start, LEADING_ID);
  const method = leadingValue(start, LEADING_METHOD);
  const what = typeof method === 'string' ? `The request to ${method.slice(0, 100)}` : 'A request';
  const mib = MAX_MESSAGE_BYTES / (1 << 20);
  return {
    jsonrpc: '2.0',
    id: typeof id === 'number' || typeof id === 'string' ? id : null,
    error: {
      code: ErrorCode.InvalidRequest,
      message:
        bytes === null
          ? `${what} is too large: more than ${MAX_MESSAGE_BYTES} bytes arrived without its end of line (the limit is ${mib} MiB), so it was not read.`
          : `${what} is too large (${bytes} bytes; the limit is ${mib} MiB), so it was not read.`,
      data: {
        hint: 'Send less in one request (split it into several), one JSON-RPC request per line.',
      },
    },
  };
}

function fail(
  id: string | number | null,
  code: ErrorCode,
  message: string,
  data?: RpcErrorBody['data'],
): RpcResponse {
  return { jsonrpc: '2.0', id, error: data ? { code, message, data } : { code, message } };
}

function idOf(raw: unknown): string | number | null {
  if (raw && typeof raw === 'object' && 'id' in raw) {
    const id = (raw as { id: unknown }).id;
    if (typeof id === 'string' || typeof id === 'number') return id;
  }
  return null;
}
