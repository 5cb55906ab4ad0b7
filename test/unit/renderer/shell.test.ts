// @vitest-environment happy-dom
import { describe, expect, it } from 'vitest';
import { FakeClient, flush } from './support/fake-client.js';
import { renderApp } from './support/render-app.js';
import { systemStatus } from './support/fixtures.js';

describe('app shell', () => {
  it('shows the product, the node name once known, and the connection state', async () => {
    const client = new FakeClient('connecting');
    const w = await renderApp(client);
    expect(w.get('header').text()).toContain('BranchSAN');
    expect(w.find('[data-testid="node-name"]').exists()).toBe(false);
    expect(w.get('[data-testid="connection-indicator"]').text()).toContain('Connecting…');

    client.setState('connected');
    client.answer('system.status', systemStatus());
    await flush();
    expect(w.get('[data-testid="node-name"]').text()).toBe('branch-sto-a');
    expect(w.get('[data-testid="connection-indicator"]').attributes('data-state')).toBe(
      'connected',
    );

    client.setState('disconnected');
    await flush();
    expect(w.get('[data-testid="connection-indicator"]').text()).toContain('Disconnected');
  });

  it('lists exactly the pages that exist in the nav, and opens Status by default', async () => {
    const w = await renderApp(new FakeClient('connecting'));
    const links = w.findAll('nav a');
    expect(links.map((a) => [a.text(), a.attributes('href')])).toEqual([['Status', '/status']]);
    expect(links[0]!.classes()).toContain('router-link-active');
    expect(w.find('h1').text()).toBe('Status');
  });
});
