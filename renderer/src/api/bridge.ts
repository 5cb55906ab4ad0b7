/**
 * The desktop transport: window.branchsan from the Electron preload (contract/bridge.ts).
 * Main owns the engine socket and its reconnection; this side only adapts shapes:
 * replies that carry an error become ApiError, and the state follows main's reports.
 */
import type {
  EventData,
  EventName,
  MethodName,
  MethodParams,
  MethodResult,
} from '../../../contract/api.js';
import { ApiError, ErrorCode } from '../../../contract/errors.js';
import type { BridgeApi, BridgeLinkState } from '../../../contract/bridge.js';
import { createLinkStatus, type ConsoleClient } from './client.js';
import { callEach, createEmitter } from './emitter.js';

export function createBridgeClient(bridge: BridgeApi): ConsoleClient {
  const link = createLinkStatus('connecting');
  const listeners = new Map<string, Set<(data: unknown) => void>>();
  const failureChanged = createEmitter<string | null>('the link failure');
  let failure: string | null = null;
  let stateReported = false;

  /**
   * Main's view of the link: its failure first, so a state listener reads the new one.
   * Main reports every retry as 'connecting' and its failure as 'disconnected' again;
   * once down, the link stays 'disconnected' here until it is up, as the WebSocket
   * transport's does: the page's "cannot reach the engine" box and the indicator's live
   * region would otherwise go and come back (and be read out again) at every retry.
   */
  function apply({ state, reason }: BridgeLinkState): void {
    const next = state !== 'connected' && typeof reason === 'string' ? reason : null;
    if (next !== failure) {
      failure = next;
      failureChanged.emit(next);
    }
    link.setState(state === 'connecting' && link.state === 'disconnected' ? link.state : state);
  }

  // As RpcSession does for the WebSocket: a listener that throws costs only itself, not
  // the other listeners of the event, and its throw stays here, out of the preload's IPC.
  const offEvent = bridge.onEvent((name, data) => callEach(listeners.get(name) ?? [], data, name));
  const offState = bridge.onState((s) => {
    stateReported = true;
    apply(s);
  });
  // The initial query can race a pushed change; the pushed one is newer, so it wins.
  bridge.getState().then(
    (s) => {
      if (!stateReported) apply(s);
    },
    () => {
      if (!stateReported) link.setState('disconnected');
    },
  );

  return {
    transport: 'bridge',
    get state() {
      return link.state;
    },
    problem: null,
    refusal: null,
    async call<M extends MethodName>(method: M, params: MethodParams<M>) {
      let reply: Awaited<ReturnType<BridgeApi['call']>>;
      try {
        reply = await bridge.call(method, params);
      } catch {
        throw new ApiError(
          ErrorCode.Unavailable,
          'The desktop app could not pass the request on to the BranchSAN engine.',
          {
            hint: 'Restart the BranchSAN desktop app; if this persists, check that the engine service is running.',
          },
        );
      }
      if (reply.ok) return reply.result as MethodResult<M>;
      throw new ApiError(reply.error.code, reply.error.message, reply.error.data);
    },
    on<E extends EventName>(event: E, handler: (data: EventData<E>) => void) {
      let set = listeners.get(event);
      if (!set) listeners.set(event, (set = new Set()));
      const h = handler as (data: unknown) => void;
      set.add(h);
      return () => set.delete(h);
    },
    onState: link.onState,
    onProblem: () => () => {},
    get failure() {
      return failure;
    },
    onFailure: failureChanged.on,
    close() {
      offEvent();
      offState();
      listeners.clear();
      failureChanged.clear();
      link.clear();
    },
  };
}
