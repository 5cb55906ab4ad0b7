import { describe, expect, it, vi } from 'vitest';
import { SignInError, createSessionApi } from '../../../../renderer/src/api/session.js';

function reply(status: number, body: unknown) {
  return { ok: status >= 200 && status < 300, status, json: async () => body } as Response;
}

describe('createSessionApi', () => {
  it('asks /api/session beside the page, without query or hash, and never caches', async () => {
    const fetch = vi.fn(async () => reply(200, { authenticated: true, setupRequired: false }));
    const api = createSessionApi(fetch, 'http://127.0.0.1:8450/console/?token=x#/status');
    expect(await api.check()).toEqual({ authenticated: true, setupRequired: false });
    expect(fetch).toHaveBeenCalledWith('http://127.0.0.1:8450/console/api/session', {
      credentials: 'same-origin',
      cache: 'no-store',
    });
  });

  it('answers null when the engine cannot be asked', async () => {
    expect(
      await createSessionApi(
        vi.fn(async () => reply(502, {})),
        'http://h/',
      ).check(),
    ).toBeNull();
    const down = vi.fn(async () => {
      throw new TypeError('Failed to fetch');
    });
    expect(await createSessionApi(down, 'http://h/').check()).toBeNull();
  });

  it('posts JSON and turns a refusal into a SignInError with the engine’s words', async () => {
    const fetch = vi.fn(async () =>
      reply(429, {
        error: 'Too many failed logins from 127.0.0.1; try again in 60 s.',
        hint: 'Wait, then sign in again.',
      }),
    );
    const api = createSessionApi(fetch, 'https://san-a:8443/');
    const e = await api.login('pw').catch((err: unknown) => err);
    expect(e).toBeInstanceOf(SignInError);
    expect(e).toMatchObject({
      message: 'Too many failed logins from 127.0.0.1; try again in 60 s.',
      hint: 'Wait, then sign in again.',
      status: 429,
    });
    expect(fetch).toHaveBeenCalledWith(
      'https://san-a:8443/api/login',
      expect.objectContaining({
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: '{"password":"pw"}',
      }),
    );
  });

  it('says the engine is unreachable when the request itself fails', async () => {
    const api = createSessionApi(
      vi.fn(async () => {
        throw new TypeError('Failed to fetch');
      }),
      'http://h/',
    );
    await expect(api.setup('t', 'p')).rejects.toMatchObject({
      message: 'The console could not reach the BranchSAN engine.',
      status: 0,
    });
  });
});
