/**
 * Polls `f` every `everyMs` until it returns something truthy, and returns that; throws
 * after `ms`.
 */
export async function until<T>(
  f: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 20_000,
  everyMs = 50,
): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
