/** Mounts the whole app (router at '/', Pinia, the fake engine client) and lets it settle. */
import { flushPromises, mount } from '@vue/test-utils';
import { createMemoryHistory, createRouter } from 'vue-router';
import App from '../../../../renderer/src/App.vue';
import { API_CLIENT } from '../../../../renderer/src/api/inject.js';
import { routes } from '../../../../renderer/src/router.js';
import { installFake, type FakeClient } from './fake-client.js';

export async function renderApp(client: FakeClient) {
  const { pinia } = installFake(client);
  const router = createRouter({ history: createMemoryHistory(), routes });
  await router.push('/');
  const w = mount(App, {
    global: { plugins: [pinia, router], provide: { [API_CLIENT as symbol]: client } },
  });
  await flushPromises();
  return w;
}
