/**
 * The alert pass's file system calls, grouped by the file system they touch
 * (MountCalls), on top of the engine's calls with a time limit (util/within.ts).
 */
import { LATE, type BoundedCalls } from '../util/within.js';

/** How one call of MountCalls.run ended: its answer (undefined: it failed), or late. */
export type MountAnswer<T> = { answer: T | undefined } | { lateSince: number };

/** A call to make, and the file system it touches (undefined: not known). */
export interface MountCall<T> {
  /** As for BoundedCalls.run: one call of a key at a time. */
  key: string;
  fsKey: string | undefined;
  call: () => Promise<T>;
}

/**
 * Calls grouped by the file system they touch, so that a hung mount holds one pool
 * thread whatever is on it. Those of one file system are made one after another; once
 * one does not answer, the rest count as not answering without a call, from when that
 * call started, and while it is out no call is made there. Calls whose file system is
 * not known are taken as all of one (safe for the pool), except that those not called
 * then are left out of the answers, not counted as not answering: nothing says they are
 * on the hung one.
 */
export class MountCalls {
  /** The file system of each call past its limit and still out. */
  private readonly outOn = new Map<string, string | undefined>();

  constructor(private readonly calls: BoundedCalls) {}

  /** The answer of each call by key; a call not made and not known late is left out. */
  async run<T>(todo: MountCall<T>[]): Promise<Map<string, MountAnswer<T>>> {
    const hung = this.hungSince();
    const byFs = new Map<string | undefined, MountCall<T>[]>();
    for (const c of todo) byFs.set(c.fsKey, [...(byFs.get(c.fsKey) ?? []), c]);
    const got = new Map<string, MountAnswer<T>>();
    const runOn = async (fsKey: string | undefined, on: MountCall<T>[]) => {
      let since = hung.get(fsKey);
      for (const c of on) {
        // a call still out from when its path was on another file system (a mount
        // appeared or went since) is late by itself and says nothing of this one
        const own = this.calls.outSince(c.key);
        if (own !== undefined) got.set(c.key, { lateSince: own });
        else if (since !== undefined) {
          if (fsKey !== undefined) got.set(c.key, { lateSince: since });
        } else {
          const r = await this.calls.run(c.key, c.call).catch(() => undefined);
          if (r !== LATE) got.set(c.key, { answer: r });
          else {
            since = this.calls.outSince(c.key)!;
            this.outOn.set(c.key, fsKey);
            got.set(c.key, { lateSince: since });
          }
        }
      }
    };
    await Promise.all([...byFs].map(([fsKey, on]) => runOn(fsKey, on)));
    return got;
  }

  /** The file systems with a call still out, each with when the first of them started. */
  private hungSince(): Map<string | undefined, number> {
    const hung = new Map<string | undefined, number>();
    for (const [key, fsKey] of this.outOn) {
      const since = this.calls.outSince(key);
      if (since === undefined) this.outOn.delete(key);
      else hung.set(fsKey, Math.min(since, hung.get(fsKey) ?? since));
    }
    return hung;
  }
}
