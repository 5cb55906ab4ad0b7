import { describe, expect, it } from 'vitest';
import type { IpcMainInvokeEvent } from 'electron';
import { ApiError, ErrorCode, type ConnectionState } from '../../../contract/api.js';
import { IPC } from '../../../contract/bridge.js';
import {
  bridgeLinkState,
  forwardCall,
  registerBridge,
  validateCall,
  type BridgeBackend,
} from '../../../electron/src/ipc.js';

type Listener = (event: IpcMainInvokeEvent, ...args: unknown[]) => unknown;

function fakeIpc() {
  const handlers = new Map<string, Listener>();
  return {
    handlers,
    handle: (ch: string, l: Listener) => {
      if (handlers.has(ch)) throw new Error(`second handler for ${ch}`);
      handlers.set(ch, l);
    },
    removeHandler: (ch: string) => handlers.delete(ch),
  };
}

function backend(
  impl: (m: string, p: unknown) => Promise<unknown>,
  state: ConnectionState = 'connected',
  error?: { message: string },
): BridgeBackend & { calls: unknown[][] } {
  const calls: unknown[][] = [];
  return {
    calls,
    info: error ? { state, error } : { state },
    callRaw: (m, p) => {
      calls.push([m, p]);
      return impl(m, p);
    },
  };
}

const trusted = { trusted: true } as unknown as IpcMainInvokeEvent;
const stranger = { trusted: false } as unknown as IpcMainInvokeEvent;
const isTrusted = (e: IpcMainInvokeEvent): boolean =>
  (e as unknown as { trusted: boolean }).trusted;

describe('registerBridge', () => {
  it('handles exactly the invoke channels of the contract, and removes them', () => {
    const ipc = fakeIpc();
    const off = registerBridge(
      ipc,
      backend(async () => 1),
      isTrusted,
    );
    expect([...ipc.handlers.keys()].sort()).toEqual([IPC.call, IPC.getState].sort());
    off();
    expect(ipc.handlers.size).toBe(0);
  });

  it('forwards a trusted call and returns the result as data', async () => {
    const ipc = fakeIpc();
    const b = backend(async () => ({ version: '1' }));
    registerBridge(ipc, b, isTrusted);
    const reply = await ipc.handlers.get(IPC.call)!(trusted, 'system.status', {});
    expect(reply).toEqual({ ok: true, result: { version: '1' } });
    expect(b.calls).toEqual([['system.status', {}]]);
    expect(await ipc.handlers.get(IPC.getState)!(trusted)).toEqual({ state: 'connected' });
  });

  it('tells our page why the link is down; nobody else, and never once it is up', async () => {
    const why = { code: 'EACCES', message: 'you may not open /run/x.sock: join the group' };
    const ipc = fakeIpc();
    registerBridge(
      ipc,
      backend(async () => 1, 'disconnected', why),
      isTrusted,
    );
    expect(await ipc.handlers.get(IPC.getState)!(trusted)).toEqual({
      state: 'disconnected',
      reason: why.message,
    });
    expect(await ipc.handlers.get(IPC.getState)!(stranger)).toEqual({ state: 'disconnected' });
    expect(bridgeLinkState({ state: 'connecting', error: why })).toEqual({
      state: 'connecting',
      reason: why.message,
    });
    expect(bridgeLinkState({ state: 'connected', error: why })).toEqual({ state: 'connected' });
  });

  it('refuses a sender that is not our page, without calling the engine', async () => {
    const ipc = fakeIpc();
    const b = backend(async () => 1);
    registerBridge(ipc, b, isTrusted);
    const reply = await ipc.handlers.get(IPC.call)!(stranger, 'system.status', {});
    expect(reply).toMatchObject({ ok: false, error: { code: ErrorCode.Unauthorized } });
    expect(b.calls).toEqual([]);
    expect(await ipc.handlers.get(IPC.getState)!(stranger)).toEqual({ state: 'disconnected' });
  });
});

describe('forwardCall', () => {
  it('refuses methods outside the contract', async () => {
    const b = backend(async () => 1);
    for (const m of [
      'system.shutdown',
      '__proto__',
      42,
      undefined,
      { toString: () => 'system.status' },
    ]) {
      const reply = await forwardCall(b, m, {});
      expect(reply).toMatchObject({ ok: false, error: { code: ErrorCode.MethodNotFound } });
    }
    expect(b.calls).toEqual([]);
  });

  it('refuses params that do not fit the schema, naming the field', async () => {
    const b = backend(async () => 1);
    const reply = await forwardCall(b, 'system.status', { extra: true });
    expect(reply).toMatchObject({ ok: false, error: { code: ErrorCode.InvalidParams } });
    expect(b.calls).toEqual([]);
    // the message the page shows says which field and what was expected, as the engine's
    expect(validateCall('system.status', { extra: true })).toEqual({
      code: ErrorCode.InvalidParams,
      message: 'Invalid parameters for system.status: extra: Unrecognized key: "extra".',
      data: { field: 'extra', issues: [{ path: 'extra', message: 'Unrecognized key: "extra"' }] },
    });
    expect(validateCall('alerts.ack', { id: 'x' })).toMatchObject({
      message:
        'Invalid parameters for alerts.ack: id: Invalid input: expected number, received string.',
      data: { field: 'id' },
    });
    // a value of one of several shapes: what is wrong in the shape it has
    expect(
      validateCall('metrics.query', { series: { scope: 'node', metric: 'cpu_load' }, from: 0 }),
    ).toMatchObject({ data: { field: 'series.metric' } });
    expect(validateCall('system.status', 'nope')?.message).toBe(
      'Invalid parameters for system.status: params: Invalid input: expected object, received string.',
    );
    expect(validateCall('system.status', 'nope')?.code).toBe(ErrorCode.InvalidParams);
    expect(validateCall('system.status', undefined)).toBeUndefined();
  });

  it('turns engine errors and unexpected throws into BridgeReply data', async () => {
    const apiErr = await forwardCall(
      backend(async () => {
        throw new ApiError(ErrorCode.Unavailable, 'Not connected.', { hint: 'wait' });
      }),
      'system.status',
      {},
    );
    expect(apiErr).toEqual({
      ok: false,
      error: { code: ErrorCode.Unavailable, message: 'Not connected.', data: { hint: 'wait' } },
    });
    const other = await forwardCall(
      backend(async () => {
        throw new TypeError('boom');
      }),
      'system.status',
      {},
    );
    expect(other).toMatchObject({
      ok: false,
      error: { code: ErrorCode.Internal, message: expect.stringContaining('boom') },
    });
  });
});
