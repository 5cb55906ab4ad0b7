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
import type { BridgeApi } from '../../../contract/bridge.js';
import { createLinkStatus, type ConsoleClient } from './client.js';

export function createBridgeClient(bridge: BridgeApi): ConsoleClient {
  const link = createLinkStatus('connecting');
  const listeners = new Map<string, Set<(data: unknown) => void>>();
  let stateReported = false;

  const offEvent = bridge.onEvent((name, data) => {
    for (const h of [...(listeners.get(name) ?? [])]) h(data);
  });
  const offState = bridge.onState((state) => {
    stateReported = true;
    link.setState(state);
  });
  // The initial query can race a pushed change; the pushed one is newer, so it wins.
  bridge.getState().then(
    (state) => {
      if (!stateReported) link.setState(state);
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
    close() {
      offEvent();
      offState();
      listeners.clear();
      link.clear();
    },
  };
}
