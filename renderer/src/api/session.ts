/**
 * The console's sign-in endpoints (engine: control/auth/console-auth.ts), called with
 * fetch on the page's own origin. The session itself is an HttpOnly cookie: this code
 * never sees it, and the browser sends it with the WebSocket upgrade. The page key that
 * sign-in also answers goes with every use of the session (the X-BranchSAN-Key header
 * here, a subprotocol offer on the upgrade): browsers send a host's cookies to all its
 * ports, while the key lives in this origin's storage, which other ports cannot read.
 */
import { PAGE_KEY_HEADER } from '../../../contract/errors.js';

/** What the engine says about this browser's session. */
export interface SessionState {
  authenticated: boolean;
  /** No admin password is set yet: the first-run setup is open (with the token). */
  setupRequired: boolean;
  /** A session nobody uses ends after this many seconds (the engine's --session-idle). */
  idleTimeoutSec?: number;
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

/** Where the page key lives: this origin's localStorage, shared by its tabs. */
export interface KeyStore {
  get(): string | null;
  set(key: string | null): void;
  /**
   * Calls `changed` whenever another tab of this origin stores or removes the key (it
   * signed in or out); returns the function that stops it. Absent: no tabs to hear.
   */
  watch?(changed: () => void): () => void;
}

/** The page's window, for the storage events other tabs cause. */
export type StorageEvents = Pick<Window, 'addEventListener' | 'removeEventListener'>;

const KEY_ITEM = 'branchsan.pageKey';

/**
 * localStorage, or memory where it cannot be used (storage disabled, a private window).
 * With `events` (the page's window), watch() hears the other tabs' sign-ins and
 * sign-outs: the browser tells a page of every change another page makes to its
 * origin's localStorage (a 'storage' event; never of its own changes).
 */
export function pageKeyStore(
  storage: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'> | null,
  events: StorageEvents | null = null,
): KeyStore {
  let memory: string | null = null;
  const watch =
    storage && events
      ? (changed: () => void) => {
          const listener = (ev: StorageEvent) => {
            // key null: the other page cleared its whole storage, the key with it
            if (ev.storageArea === storage && (ev.key === KEY_ITEM || ev.key === null)) changed();
          };
          events.addEventListener('storage', listener);
          return () => events.removeEventListener('storage', listener);
        }
      : undefined;
  return {
    ...(watch ? { watch } : {}),
    get() {
      try {
        return storage?.getItem(KEY_ITEM) ?? memory;
      } catch {
        return memory;
      }
    },
    set(key) {
      memory = key;
      try {
        if (key === null) storage?.removeItem(KEY_ITEM);
        else storage?.setItem(KEY_ITEM, key);
      } catch {
        // memory holds it for this page
      }
    },
  };
}

export interface SessionApi {
  /** The page key of the session, for the WebSocket upgrade; null before sign-in. */
  pageKey(): string | null;
  /**
   * The session state, or null when the engine does not answer (down, or a proxy in
   * front of it says 502/503/504). Throws SignInError when the engine answers with a
   * refusal of its own (a Host it does not serve, a password file it cannot read): no
   * retry changes that, and its words say what to do.
   */
  check(): Promise<SessionState | null>;
  /**
   * Calls `changed` when another tab of this browser signs in or out here (the shared
   * page key changed); returns the function that stops it. Absent without shared storage.
   */
  watchOtherTabs?(changed: () => void): () => void;
  login(password: string): Promise<void>;
  setup(token: string, password: string): Promise<void>;
  logout(): Promise<void>;
}

/**
 * How long a request to the engine may take: an engine host that is off the network
 * (rather than refusing) would otherwise hold it for the system's connect timeout.
 */
export const REQUEST_TIMEOUT_MS = 10_000;

export function createSessionApi(
  fetchFn: typeof fetch,
  pageHref: string,
  keys: KeyStore = pageKeyStore(null),
): SessionApi {
  /** The page key header, when there is a key. */
  const keyHeader = (): Record<string, string> => {
    const key = keys.get();
    return key ? { [PAGE_KEY_HEADER]: key } : {};
  };

  const endpoint = (name: string) => {
    const url = new URL(`api/${name}`, pageHref);
    url.search = '';
    url.hash = '';
    return url.href;
  };

  /** The engine's refusal in its own words; null when the reply is not the engine's. */
  async function refusal(res: Response): Promise<SignInError | null> {
    const answer = (await res.json().catch(() => null)) as { error?: unknown; hint?: unknown };
    if (!answer || typeof answer.error !== 'string') return null;
    return new SignInError(
      answer.error,
      typeof answer.hint === 'string' ? answer.hint : undefined,
      res.status,
    );
  }

  async function post(name: string, body: unknown): Promise<void> {
    let res: Response;
    try {
      res = await fetchFn(endpoint(name), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...keyHeader() },
        body: JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch {
      throw new SignInError(
        'The console could not reach the BranchSAN engine.',
        'Check that the engine service is running (systemctl status branchsan), then try again.',
        0,
      );
    }
    if (res.ok) {
      const answer = (await res.json().catch(() => null)) as { pageKey?: unknown } | null;
      if (typeof answer?.pageKey === 'string') keys.set(answer.pageKey);
      return;
    }
    throw (
      (await refusal(res)) ??
      new SignInError(`The engine refused (HTTP ${res.status}).`, undefined, res.status)
    );
  }

  return {
    async check() {
      let res: Response;
      try {
        res = await fetchFn(endpoint('session'), {
          headers: keyHeader(),
          credentials: 'same-origin',
          cache: 'no-store',
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
      } catch {
        return null;
      }
      if (!res.ok) {
        if (res.status === 502 || res.status === 503 || res.status === 504) return null;
        const refused = await refusal(res);
        if (refused) throw refused;
        return null; // not the engine's answer: something in between, retried
      }
      const s = (await res.json().catch(() => null)) as Partial<SessionState> | null;
      if (!s) return null;
      const idle = s.idleTimeoutSec;
      return {
        authenticated: s.authenticated === true,
        setupRequired: s.setupRequired === true,
        ...(typeof idle === 'number' && idle > 0 ? { idleTimeoutSec: idle } : {}),
      };
    },
    pageKey: () => keys.get(),
    ...(keys.watch ? { watchOtherTabs: keys.watch } : {}),
    login: (password) => post('login', { password }),
    setup: (token, password) => post('setup', { token, password }),
    // the key goes with the request (the engine ends only the session it proves), then
    // it is of no use: forgotten whatever the answer, unless a sign-in since (while this
    // request was slow) stored a new one
    logout: () => {
      const sent = keys.get();
      return post('logout', {}).finally(() => {
        if (keys.get() === sent) keys.set(null);
      });
    },
  };
}
