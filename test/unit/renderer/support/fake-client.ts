/**
 * A scripted stand-in for the engine behind the ApiClient interface: tests answer calls,
 * push events and move the link state by hand. The transports have their own tests.
 */
import { createApp, type App } from 'vue';
import { createPinia, setActivePinia, type Pinia } from 'pinia';
import type {
  ConnectionState,
  EventData,
  EventName,
  MethodName,
  MethodParams,
  MethodResult,
} from '../../../../contract/api.js';
import type {
  ConsoleClient,
  LinkProblem,
  Refusal,
  TransportKind,
} from '../../../../renderer/src/api/client.js';
import { API_CLIENT } from '../../../../renderer/src/api/inject.js';

interface PendingCall {
  method: MethodName;
  params: unknown;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

export class FakeClient implements ConsoleClient {
  state: ConnectionState;
  problem: LinkProblem = null;
  refusal: Refusal | null = null;
  failure: string | null = null;
  readonly calls: PendingCall[] = [];
  private readonly events = new Map<string, Set<(d: unknown) => void>>();
  private readonly stateHandlers = new Set<(s: ConnectionState) => void>();
  private readonly problemHandlers = new Set<(p: LinkProblem) => void>();
  private readonly failureHandlers = new Set<(f: string | null) => void>();

  constructor(
    initial: ConnectionState = 'connecting',
    readonly transport: TransportKind = 'websocket',
  ) {
    this.state = initial;
  }

  call<M extends MethodName>(method: M, params: MethodParams<M>): Promise<MethodResult<M>> {
    return new Promise((resolve, reject) => {
      this.calls.push({ method, params, resolve: resolve as (v: unknown) => void, reject });
    });
  }

  on<E extends EventName>(event: E, handler: (data: EventData<E>) => void): () => void {
    let set = this.events.get(event);
    if (!set) this.events.set(event, (set = new Set()));
    const h = handler as (d: unknown) => void;
    set.add(h);
    return () => set.delete(h);
  }

  onState(handler: (s: ConnectionState) => void): () => void {
    this.stateHandlers.add(handler);
    return () => this.stateHandlers.delete(handler);
  }

  onProblem(handler: (p: LinkProblem) => void): () => void {
    this.problemHandlers.add(handler);
    return () => this.problemHandlers.delete(handler);
  }

  onFailure(handler: (f: string | null) => void): () => void {
    this.failureHandlers.add(handler);
    return () => this.failureHandlers.delete(handler);
  }

  close(): void {}

  // ------------------------------------------------------------ test controls

  setState(next: ConnectionState): void {
    this.state = next;
    for (const h of this.stateHandlers) h(next);
  }

  setProblem(next: LinkProblem, refusal: Refusal | null = null): void {
    this.problem = next;
    this.refusal = refusal;
    for (const h of this.problemHandlers) h(next);
  }

  setFailure(next: string | null): void {
    this.failure = next;
    for (const h of this.failureHandlers) h(next);
  }

  emit<E extends EventName>(event: E, data: EventData<E>): void {
    for (const h of this.events.get(event) ?? []) h(data);
  }

  /** Answers the oldest unanswered call to `method`. */
  answer<M extends MethodName>(method: M, result: MethodResult<M>): void {
    this.take(method).resolve(result);
  }

  fail(method: MethodName, error: Error): void {
    this.take(method).reject(error);
  }

  listenerCount(event: EventName): number {
    return this.events.get(event)?.size ?? 0;
  }

  private take(method: MethodName): PendingCall {
    const i = this.calls.findIndex((c) => c.method === method);
    if (i < 0) throw new Error(`no pending ${method} call`);
    return this.calls.splice(i, 1)[0]!;
  }
}

/** An app with Pinia and the fake client provided, as main.ts wires the real one. */
export function installFake(client: FakeClient): { app: App; pinia: Pinia } {
  const app = createApp({ render: () => null });
  const pinia = createPinia();
  app.provide(API_CLIENT, client);
  app.use(pinia);
  setActivePinia(pinia);
  return { app, pinia };
}

/** Lets pending promise reactions run. */
export function flush(): Promise<void> {
  return new Promise((r) => setTimeout(r, 0));
}
