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
