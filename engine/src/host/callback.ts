/**
 * Callers' callbacks (onStateChange, onAsyncEvent, onPathChange, onRetry, and a raw
 * request's onDone) run in the middle of the library's own work: a state transition, a
 * queue's failure, a completion read off a socket. A throw there must not skip what comes
 * after it (failing the other queues of a lost association, resending a command, the
 * other completions of a received chunk) nor escape into a socket or timer callback,
 * where it would end the process. It is reported as a process warning instead (printed
 * on stderr; process.on('warning') sees it), and the library goes on.
 */
import type { NvmeRequest } from './request.js';

export function callUser<A extends unknown[]>(
  name: string,
  fn: ((...args: A) => void) | undefined,
  ...args: A
): void {
  if (!fn) return;
  try {
    fn(...args);
  } catch (e) {
    reportThrow(name, e);
  }
}

/** Ends `req` with its onDone, as callUser does (no rest array: it runs once per I/O). */
export function callDone(req: NvmeRequest): void {
  try {
    req.onDone(req);
  } catch (e) {
    reportThrow('onDone', e);
  }
}

function reportThrow(name: string, e: unknown): void {
  const why = e instanceof Error ? e.message : String(e);
  process.emitWarning(
    `${name} callback threw: ${why}. The NVMe/TCP host library went on without it; fix ` +
      `the callback so it does not throw.`,
    {
      type: 'BranchSANHostWarning',
      code: 'BRANCHSAN_HOST_CALLBACK_THREW',
      detail: e instanceof Error ? e.stack : undefined,
    },
  );
}
