/**
 * How stores reach the client: main.ts provides it on the app, stores inject it.
 * Pinia runs setup stores inside the app's context, so inject() works there too.
 */
import { inject, type InjectionKey } from 'vue';
import type { ConsoleClient } from './client.js';

export const API_CLIENT: InjectionKey<ConsoleClient> = Symbol('branchsan.apiClient');

export function useApiClient(): ConsoleClient {
  const client = inject(API_CLIENT, null);
  if (!client)
    throw new Error('No API client: main.ts must app.provide(API_CLIENT, createApiClient()).');
  return client;
}
