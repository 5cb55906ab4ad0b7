/** The link to the engine as the UI shows it: state, transport, and why it is down. */
import { defineStore } from 'pinia';
import { onScopeDispose, ref } from 'vue';
import type { ConnectionState } from '../../../contract/api.js';
import type { LinkProblem, Refusal, TransportKind } from '../api/client.js';
import { useApiClient } from '../api/inject.js';

export const useConnectionStore = defineStore('connection', () => {
  const client = useApiClient();

  const state = ref<ConnectionState>(client.state);
  const problem = ref<LinkProblem>(client.problem);
  /** The engine's words while problem is 'refused'. */
  const refusal = ref<Refusal | null>(client.refusal);
  const transport = ref<TransportKind>(client.transport);
  /** While down: why, as the desktop app's main process saw it fail (null in a browser). */
  const failure = ref<string | null>(client.failure);
  /** Whether the link was up at least once since the page loaded. */
  const everConnected = ref(client.state === 'connected');
  /** When `state` last changed (ms since epoch, this machine's clock). */
  const changedAt = ref(Date.now());

  const offState = client.onState((next) => {
    state.value = next;
    changedAt.value = Date.now();
    if (next === 'connected') everConnected.value = true;
  });
  const offProblem = client.onProblem((next) => {
    problem.value = next;
    refusal.value = client.refusal;
  });
  const offFailure = client.onFailure((next) => (failure.value = next));
  onScopeDispose(() => {
    offState();
    offProblem();
    offFailure();
  });

  return { state, problem, refusal, transport, failure, everConnected, changedAt };
});
