/**
 * The console's sign-in endpoints (engine: control/auth/console-auth.ts), called with
 * fetch on the page's own origin. The session itself is an HttpOnly cookie: this code
 * never sees it, and the browser sends it with the WebSocket upgrade.
 */

/** What the engine says about this browser's session. */
export interface SessionState {
  authenticated: boolean;
  /** No admin password is set yet: the first-run setup is open (with the token). */
  setupRequired: boolean;
}

/** A refused sign-in, with the engine's words: what happened, and what to do. */
export class SignInError extends Error {
  constructor(
    message: string,
    readonly hint: string | undefined,
    /** HTTP status; 0 when the engine could not be reached. */
    readonly status: number,
  ) {
    super(message);
    this.name = 'SignInError';
  }
}

export interface SessionApi {
  /** The session state, or null when the engine does not answer. */
  check(): Promise<SessionState | null>;
  login(password: string): Promise<void>;
  setup(token: string, password: string): Promise<void>;
  logout(): Promise<void>;
}

export function createSessionApi(fetchFn: typeof fetch, pageHref: string): SessionApi {
  const endpoint = (name: string) => {
    const url = new URL(`api/${name}`, pageHref);
    url.search = '';
    url.hash = '';
    return url.href;
  };

  async function post(name: string, body: unknown): Promise<void> {
    let res: Response;
    try {
      res = await fetchFn(endpoint(name), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      throw new SignInError(
        'The console could not reach the BranchSAN engine.',
        'Check that the engine service is running (systemctl status branchsan), then try again.',
        0,
      );
    }
    if (res.ok) return;
    const answer = (await res.json().catch(() => ({}))) as { error?: unknown; hint?: unknown };
    throw new SignInError(
      typeof answer.error === 'string' ? answer.error : `The engine refused (HTTP ${res.status}).`,
      typeof answer.hint === 'string' ? answer.hint : undefined,
      res.status,
    );
  }

  return {
    async check() {
      try {
        const res = await fetchFn(endpoint('session'), {
          credentials: 'same-origin',
          cache: 'no-store',
        });
        if (!res.ok) return null;
        const s = (await res.json()) as Partial<SessionState>;
        return { authenticated: s.authenticated === true, setupRequired: s.setupRequired === true };
      } catch {
        return null;
      }
    },
    login: (password) => post('login', { password }),
    setup: (token, password) => post('setup', { token, password }),
    logout: () => post('logout', {}),
  };
}
