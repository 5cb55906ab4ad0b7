/**
 * Waiting on calls that may never end (a file system call on a hung NFS or FUSE mount
 * stays in the thread pool until the mount answers).
 */

export const LATE = Symbol('late');

/**
 * The work's result, or LATE once it took longer than ms (the work itself goes on
 * until its file system answers).
 */
export async function within<T>(work: Promise<T>, ms: number): Promise<T | typeof LATE> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<typeof LATE>((resolve) => (timer = setTimeout(resolve, ms, LATE)));
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Calls with a time limit, and those that outlived it. A call on a hung NFS or FUSE
 * mount holds one of the thread pool's four threads until the mount answers, and four
 * such calls stall every file system call of the engine: so while a call of a key is
 * still out, no other call of that key starts, and the key counts as not answering.
 * Backend opens (TargetRuntime), new backing paths' checks (TargetService) and the
 * alert pass's file system calls (events/inputs.ts) go through one of these.
 */
export class BoundedCalls {
  /** Calls past their limit and still out, by key: when each started, and what it was for. */
  private readonly out = new Map<string, { since: number; what: string }>();

  constructor(
    readonly limitMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The call's result, or LATE when it did not answer within the limit or an earlier
   * call of `key` is still out (then no call is started). A call that fails in time
   * rejects as it would. `what` names a call that outlives the limit (outFor), and
   * `late` gets its result should it come after all (to release it); the key stays out
   * until that has ended.
   */
  async run<T>(
    key: string,
    call: () => Promise<T>,
    o: { what?: string; late?: (result: T) => unknown } = {},
  ): Promise<T | typeof LATE> {
    if (this.out.has(key)) return LATE;
    const started = this.now();
    const work = call();
    const got = await within(work, this.limitMs);
    if (got === LATE) {
      this.out.set(key, { since: started, what: o.what ?? key });
      void work
        .then((r) => o.late?.(r))
        .catch(() => undefined)
        .finally(() => this.out.delete(key));
    }
    return got;
  }

  /** When the call of `key` that is still out started; undefined when none is out. */
  outSince(key: string): number | undefined {
    return this.out.get(key)?.since;
  }

  /** What the call of `key` that is still out was for; undefined when none is out. */
  outFor(key: string): string | undefined {
    return this.out.get(key)?.what;
  }
}
