/**
 * The console's setup token. While no admin password is set, `branchsan serve` prints a
 * console URL that carries it as ?token=…; it authorises the first-run setup only (the
 * API itself needs a signed-in session). On first load we keep it for this tab only
 * (sessionStorage) and take it out of the address bar, so it does not linger in
 * history, bookmarks or screenshots.
 */
const STORAGE_KEY = 'branchsan.console.token';

/** A token must be usable inside a WebSocket subprotocol name (an RFC 7230 token). */
const TOKEN_CHARS = /^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,512}$/;

export function isUsableToken(token: string): boolean {
  return TOKEN_CHARS.test(token);
}

/**
 * Returns the token from the URL (and remembers it) or the one remembered for this tab.
 * Must run before the router reads the URL: the hash history keeps location.search in its base.
 */
export function takeAccessToken(
  location: Pick<Location, 'href'>,
  history: Pick<History, 'replaceState' | 'state'>,
  storage: Pick<Storage, 'getItem' | 'setItem'> | null,
): string | null {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl !== null) {
    url.searchParams.delete('token');
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    remember(storage, fromUrl);
    return fromUrl;
  }
  try {
    return storage?.getItem(STORAGE_KEY) ?? null;
  } catch {
    return null; // storage disabled by browser policy: the token lives only in this page load
  }
}

function remember(storage: Pick<Storage, 'setItem'> | null, token: string): void {
  try {
    storage?.setItem(STORAGE_KEY, token);
  } catch {
    // Storage full or disabled: the console still works until the tab reloads.
  }
}
