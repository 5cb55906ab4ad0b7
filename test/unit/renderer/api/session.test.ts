import { describe, expect, it, vi } from 'vitest';
import {
  SignInError,
  createSessionApi,
  pageKeyStore,
} from '../../../../renderer/src/api/session.js';

function reply(status: number, body: unknown) {
  return { ok: status >= 200 && status < 300, status, json: async () => body } as Response;
}

describe('createSessionApi', () => {
  it('asks /api/session beside the page, without query or hash, and never caches', async () => {
    const fetch = vi.fn(async () => reply(200, { authenticated: true, setupRequired: false }));
    const api = createSessionApi(fetch, 'http://127.0.0.1:8450/console/?token=x#/status');
    expect(await api.check()).toEqual({ authenticated: true, setupRequired: false });
    expect(fetch).toHaveBeenCalledWith('http://127.0.0.1:8450/console/api/session', {
      headers: {}, // no page key before a sign-in
      credentials: 'same-origin',
      cache: 'no-store',
      signal: expect.any(AbortSignal),
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

  it('throws the engine’s refusal of the session check in its words; a proxy’s or a bare error is “away”', async () => {
    const forbidden = vi.fn(async () =>
      reply(403, {
        error: 'The console answers only at its own address, 127.0.0.1, not at "h".',
        hint: 'Open the console at http://127.0.0.1:PORT/.',
      }),
    );
    const e = await createSessionApi(forbidden, 'http://h/')
      .check()
      .catch((err: unknown) => err);
    expect(e).toBeInstanceOf(SignInError);
    expect(e).toMatchObject({ status: 403, hint: 'Open the console at http://127.0.0.1:PORT/.' });
    // before: null, so the page said it could not reach the engine and retried for ever
    for (const status of [502, 503, 504])
      expect(
        await createSessionApi(
          vi.fn(async () => reply(status, {})),
          'http://h/',
        ).check(),
      ).toBeNull();
    const bare = {
      ok: false,
      status: 500,
      json: async () => Promise.reject(new Error('not JSON')),
    };
    expect(
      await createSessionApi(
        vi.fn(async () => bare as unknown as Response),
        'http://h/',
      ).check(),
    ).toBeNull();
  });

  it('keeps the page key sign-in answers, sends it with the session’s requests, and forgets it at sign-out', async () => {
    const seen: { url: string; key: string | undefined }[] = [];
    const fetch = vi.fn(async (url: string, init?: RequestInit) => {
      seen.push({ url, key: (init?.headers as Record<string, string>)['X-BranchSAN-Key'] });
      if (url.endsWith('/login'))
        return reply(200, { authenticated: true, pageKey: 'K'.repeat(43) });
      return reply(200, { authenticated: true, setupRequired: false });
    });
    const items = new Map<string, string>();
    const storage = {
      getItem: (k: string) => items.get(k) ?? null,
      setItem: (k: string, v: string) => void items.set(k, v),
      removeItem: (k: string) => void items.delete(k),
    };
    const api = createSessionApi(
      fetch as unknown as typeof globalThis.fetch,
      'http://h/',
      pageKeyStore(storage),
    );
    expect(api.pageKey()).toBeNull();
    await api.login('pw');
    expect(api.pageKey()).toBe('K'.repeat(43));
    expect([...items.values()]).toEqual(['K'.repeat(43)]); // in this origin's storage
    // another tab of the same origin finds it there
    expect(
      createSessionApi(
        fetch as unknown as typeof globalThis.fetch,
        'http://h/',
        pageKeyStore(storage),
      ).pageKey(),
    ).toBe('K'.repeat(43));
    await api.check();
    await api.logout();
    expect(seen.map((r) => [r.url.replace('http://h/api/', ''), r.key])).toEqual([
      ['login', undefined],
      ['session', 'K'.repeat(43)],
      ['logout', 'K'.repeat(43)],
    ]);
    expect(api.pageKey()).toBeNull();
    expect(items.size).toBe(0);
  });

  it('a slow sign-out does not forget the key of a sign-in made meanwhile', async () => {
    let finishLogout: (r: Response) => void = () => {};
    let logins = 0;
    const fetch = vi.fn(async (url: string) => {
      if (url.endsWith('/logout')) return new Promise<Response>((r) => (finishLogout = r));
      logins++;
      return reply(200, { authenticated: true, pageKey: String(logins).repeat(43) });
    });
    const items = new Map<string, string>();
    const keys = pageKeyStore({
      getItem: (k: string) => items.get(k) ?? null,
      setItem: (k: string, v: string) => void items.set(k, v),
      removeItem: (k: string) => void items.delete(k),
    });
    const api = createSessionApi(fetch as unknown as typeof globalThis.fetch, 'http://h/', keys);
    await api.login('pw');
    const out = api.logout(); // the engine is slow to answer
    await api.login('pw'); // signed in again meanwhile
    finishLogout(reply(200, { authenticated: false }));
    await out;
    expect(api.pageKey()).toBe('2'.repeat(43)); // before: erased by the late sign-out
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

describe('pageKeyStore.watch', () => {
  const storage = { getItem: () => null, setItem: () => {}, removeItem: () => {} };
  /** A 'storage' event as the browser sends it to the other tabs of the origin. */
  const storageEvent = (key: string | null, area: unknown = storage) =>
    Object.assign(new Event('storage'), { key, storageArea: area });

  it("hears the other tabs' changes to the page key, and only those, until stopped", () => {
    const page = new EventTarget();
    const changed = vi.fn();
    const stop = pageKeyStore(storage, page as unknown as Window).watch!(changed);
    page.dispatchEvent(storageEvent('branchsan.pageKey'));
    page.dispatchEvent(storageEvent(null)); // localStorage.clear() in another tab
    page.dispatchEvent(storageEvent('something.else'));
    page.dispatchEvent(storageEvent('branchsan.pageKey', {})); // sessionStorage, say
    expect(changed).toHaveBeenCalledTimes(2);
    stop();
    page.dispatchEvent(storageEvent('branchsan.pageKey'));
    expect(changed).toHaveBeenCalledTimes(2);
  });

  it('offers no watch without shared storage or a page to hear it on', () => {
    expect(pageKeyStore(null, new EventTarget() as unknown as Window).watch).toBeUndefined();
    expect(pageKeyStore(storage).watch).toBeUndefined();
    expect(
      createSessionApi(fetch, 'http://h/', pageKeyStore(storage)).watchOtherTabs,
    ).toBeUndefined();
  });
});
