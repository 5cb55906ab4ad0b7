// @vitest-environment happy-dom
import { flushPromises } from '@vue/test-utils';
import { describe, expect, it, vi } from 'vitest';
import type { ConsoleAuthApi } from '../../../../../renderer/src/api/client.js';
import {
  SignInError,
  type SessionApi,
  type SessionState,
} from '../../../../../renderer/src/api/session.js';
import { createWebSocketClient } from '../../../../../renderer/src/api/websocket.js';
import { FakeClient } from '../../support/fake-client.js';
import { renderApp } from '../../support/render-app.js';
import { until } from '../../support/ws-server.js';

function fakeAuth(over: Partial<ConsoleAuthApi> = {}): ConsoleAuthApi {
  return {
    setupToken: null,
    signIn: vi.fn(async () => {}),
    setUp: vi.fn(async () => {}),
    signOut: vi.fn(async () => {}),
    refresh: vi.fn(async () => {}),
    ...over,
  };
}

function consoleClient(auth: ConsoleAuthApi, problem: 'signed-out' | 'setup-required' | null) {
  const client = new FakeClient(problem ? 'disconnected' : 'connected');
  client.problem = problem;
  Object.assign(client, { auth });
  return client;
}

describe('sign-in page', () => {
  it('replaces the app while signed out, and sends the password', async () => {
    const auth = fakeAuth();
    const w = await renderApp(consoleClient(auth, 'signed-out'));
    expect(w.find('header').exists()).toBe(false);
    expect(w.get('[data-testid="login-page"]').attributes('data-mode')).toBe('sign-in');
    expect(w.get('h1').text()).toBe('Sign in to BranchSAN');
    expect(w.get('[data-testid="password"]').attributes('autocomplete')).toBe('current-password');
    // the page cannot know the engine's data directory (it would tell anyone who opens
    // it): it says which one to give, not a path that may be another engine's
    expect(w.get('[data-testid="login-page"]').text()).toContain(
      "sudo branchsan passwd --data DIR, with the data directory the engine runs with (the installed service's is /var/lib/branchsan)",
    );
    await w.get('[data-testid="password"]').setValue('hunter2hunter2');
    await w.get('form').trigger('submit');
    await flushPromises();
    expect(auth.signIn).toHaveBeenCalledWith('hunter2hunter2');
  });

  it('shows the engine’s refusal with its hint, and does not send an empty password', async () => {
    const auth = fakeAuth({
      signIn: vi.fn(async () => {
        throw new SignInError(
          'Too many failed logins from 127.0.0.1; try again in 60 s.',
          'Wait, then sign in again.',
          429,
        );
      }),
    });
    const w = await renderApp(consoleClient(auth, 'signed-out'));
    await w.get('form').trigger('submit');
    expect(w.get('[data-testid="login-error"]').text()).toBe('Enter the admin password.');
    expect(auth.signIn).not.toHaveBeenCalled();
    await w.get('[data-testid="password"]').setValue('wrong');
    await w.get('form').trigger('submit');
    await flushPromises();
    const error = w.get('[data-testid="login-error"]').text();
    expect(error).toContain('Too many failed logins from 127.0.0.1; try again in 60 s.');
    expect(error).toContain('Wait, then sign in again.');
  });

  it('first run with the setup token: asks for the password twice and checks it here first', async () => {
    const auth = fakeAuth({ setupToken: 'tok' });
    const w = await renderApp(consoleClient(auth, 'setup-required'));
    expect(w.get('h1').text()).toBe('Set the admin password');
    await w.get('[data-testid="password"]').setValue('short');
    await w.get('[data-testid="password-repeat"]').setValue('short');
    await w.get('form').trigger('submit');
    expect(w.get('[data-testid="login-error"]').text()).toContain('at least 8 characters');
    await w.get('[data-testid="password"]').setValue('long enough one');
    await w.get('[data-testid="password-repeat"]').setValue('long enough two');
    await w.get('form').trigger('submit');
    expect(w.get('[data-testid="login-error"]').text()).toContain('The two passwords differ');
    await w.get('[data-testid="password-repeat"]').setValue('long enough one');
    await w.get('form').trigger('submit');
    await flushPromises();
    expect(auth.setUp).toHaveBeenCalledWith('long enough one');
  });

  it('first run without the token explains where to get it, and can check again', async () => {
    const auth = fakeAuth();
    const w = await renderApp(consoleClient(auth, 'setup-required'));
    const help = w.get('[data-testid="setup-help"]').text();
    expect(help).toContain('URL printed by branchsan serve');
    expect(help).toContain(
      'branchsan passwd --data DIR, with the data directory the engine runs with',
    );
    expect(w.find('form').exists()).toBe(false);
    await w.get('[data-testid="setup-help"] button').trigger('click');
    expect(auth.refresh).toHaveBeenCalled();
  });

  it('a password set meanwhile (409) turns the setup page into the sign-in, under the engine’s words', async () => {
    // The real WebSocket transport; only /api/session is scripted (no socket is opened).
    let state: SessionState = { authenticated: false, setupRequired: true };
    const session: SessionApi = {
      pageKey: () => null,
      check: async () => state,
      login: async () => {},
      setup: async () => {
        state = { authenticated: false, setupRequired: false }; // `branchsan passwd` ran
        throw new SignInError('An admin password is already set.', 'Sign in with it.', 409);
      },
      logout: async () => {},
    };
    const client = createWebSocketClient({ url: 'ws://127.0.0.1:1/api', session, setupToken: 't' });
    try {
      await until(() => client.problem === 'setup-required');
      const w = await renderApp(client as unknown as FakeClient);
      await w.get('[data-testid="password"]').setValue('long enough one');
      await w.get('[data-testid="password-repeat"]').setValue('long enough one');
      await w.get('form').trigger('submit');
      await until(() => client.problem === 'signed-out');
      await flushPromises();
      expect(w.get('[data-testid="login-page"]').attributes('data-mode')).toBe('sign-in');
      // before: the page went away while the engine was asked again, and came back blank
      expect(w.get('[data-testid="login-error"]').text()).toContain(
        'An admin password is already set.',
      );
    } finally {
      client.close();
    }
  });

  it('the signed-in web console has Sign out in the header; the desktop app has none', async () => {
    const auth = fakeAuth();
    const w = await renderApp(consoleClient(auth, null));
    await w.get('[data-testid="sign-out"]').trigger('click');
    expect(auth.signOut).toHaveBeenCalled();
    const desktop = await renderApp(new FakeClient('connected', 'bridge'));
    expect(desktop.find('[data-testid="sign-out"]').exists()).toBe(false);
    expect(desktop.find('[data-testid="login-page"]').exists()).toBe(false);
  });
});
