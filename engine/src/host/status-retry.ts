/**
 * Retrying an I/O command the controller completed with an error status, as the Linux
 * host does for block I/O (core.c, nvme_decide_disposition and nvme_retry_req): a status
 * without DNR (Do Not Retry) says the same command may pass if sent again, so it is, on
 * the same controller, at most MAX_STATUS_RETRIES times, each after the delay its CRD
 * field picks from the controller's CRDT1..3 (none when CRD is 0). A controller sets CRD
 * only once the host enabled ACRE (Host Behavior Support), which the association does
 * when CRDT1 is not 0, as Linux does. Admin and raw requests are never retried (Linux's
 * passthrough commands are not either): their caller decides.
 *
 * A multipath namespace fails path statuses (SCT 3) over to another path instead
 * (multipath.ts, rule 1), and retries the others on the same path by these rules.
 *
 * On one controller, a path status (SCT 3: ANA inaccessible, persistent loss or
 * transition, a path error) the controller gives no CRD delay for is sent again after a
 * short backoff instead of at once: 50 ms, doubling, so the 5 retries span about 1.5 s.
 * Such a status is about the path's state, which changes over a failover (ANATT is in
 * seconds), not within a millisecond: BranchSAN's target answers ANA Transition while
 * its ANA group is in change and while its backend is away (a storage thread
 * restarting, a stale mount), and five retries at once all landed in that same moment
 * and failed. (Linux sends them again at once; it has no multipath to wait on there
 * either, and loses the command the same way.) One whose group the ANA log says is in
 * change is held until the group is usable again instead (NvmeNamespace.afterTransition).
 *
 * The delays a command waits out are bounded: they add up against a budget (one
 * controller: the command's timeout, ioTimeoutMs; multipath: noPathTimeoutMs, with its
 * parks), and a delay longer than what is left of it is not waited out: the command
 * fails at once with its status, naming the delay (retryDelayRefusal). A controller may
 * ask for up to 65535 × 100 ms (109 minutes) per retry.
 */
import { DNR, statusType } from '../protocol/status.js';

/** Retries of one command after a status without DNR (Linux's nvme_max_retries). */
export const MAX_STATUS_RETRIES = 5;

/** CRDT units: 100 ms. */
const CRDT_UNIT_MS = 100;

/** First backoff before sending again a path status without a CRD delay, ms (doubles). */
const PATH_STATUS_BACKOFF_MS = 50;

/** Status Code Type 3: path related. */
const SCT_PATH = 3;

/** A command that ended with `status`, sent again `retries` times so far, may be sent again. */
export function statusRetryable(status: number, retries: number): boolean {
  return status !== 0 && (status & DNR) === 0 && retries < MAX_STATUS_RETRIES;
}

/**
 * How long to wait before sending again a command that ended with `status`, sent again
 * `retries` times before, ms: the Command Retry Delay its CRD field (status bits 12:11)
 * selects from `crdt` (the controller's CRDT1..3, in 100 ms units); without one, 0, or
 * for a path status the backoff above (50 ms × 2^retries).
 */
export function statusRetryDelayMs(status: number, crdt: readonly number[], retries = 0): number {
  const crd = (status >> 11) & 3;
  const asked = crd === 0 ? 0 : (crdt[crd - 1] ?? 0) * CRDT_UNIT_MS;
  if (asked > 0 || statusType(status) !== SCT_PATH) return asked;
  return PATH_STATUS_BACKOFF_MS * 2 ** retries;
}

/**
 * Why a command may not wait `ms` before it is sent again, or null when it may: the delay
 * is longer than `left`, what is left of the budget `budget` (named `name`, `total` ms in
 * all) on the delays it waits out. `who` asked for the delay (a path's name, "the
 * controller"). For the "not sent again: ..." part of the command's error.
 */
export function retryDelayRefusal(
  who: string,
  ms: number,
  left: number,
  name: string,
  total: number,
): string | null {
  if (ms <= left) return null;
  return (
    `${who} asks to wait ${ms} ms before sending it again, more than the ` +
    `${Math.max(0, Math.round(left))} ms left of its ${name} (${total} ms); raise ${name} ` +
    `to have such delays waited out`
  );
}

/** For an error message: how often the command was sent again before it failed. */
export function retriedNote(retries: number): string {
  return retries === 0 ? '' : timesNote('sent again', retries);
}

/** " (sent once)", " (sent again 3 times)": `what` happened `n` (> 0) times. */
export function timesNote(what: string, n: number): string {
  return n === 1 ? ` (${what} once)` : ` (${what} ${n} times)`;
}
