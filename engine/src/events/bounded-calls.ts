/**
 * File system calls of the alert pass, each with a time limit, and the ones that
 * outlived it. A call on a hung NFS or FUSE mount holds one of the thread pool's four
 * threads until the mount answers, and four such calls stall every file system call of
 * the engine: so a call that has not answered is not started again while it is out,
 * and its key counts as still not answering (as TargetRuntime.addNamespace and
 * TargetService.checkPath do for opens and path checks).
 */
import { LATE, within } from '../util/within.js';

export class BoundedCalls {
  /** Calls past their limit and still out, by key, with when each started. */
  private readonly out = new Map<string, number>();

  constructor(
    readonly limitMs: number,
    private readonly now: () => number,
  ) {}

  /**
   * The call's result, or LATE when it did not answer within the limit or an earlier
   * call of `key` is still out (then no call is started). A call that fails in time
   * rejects as it would.
   */
  async run<T>(key: string, call: () => Promise<T>): Promise<T | typeof LATE> {
    if (this.out.has(key)) return LATE;
    const started = this.now();
    const work = call();
    const got = await within(work, this.limitMs);
    if (got === LATE) {
      this.out.set(key, started);
      const done = () => void this.out.delete(key);
      work.then(done, done);
    }
    return got;
  }

  /** When the call of `key` that is still out started; undefined when none is out. */
  outSince(key: string): number | undefined {
    return this.out.get(key);
  }
}
