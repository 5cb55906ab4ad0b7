/** `branchsan events`: a running engine's event log on the command line, and following it. */
import { SEVERITY_RANK } from '../../../contract/alert-words.js';
import { EventsListParams, type EventRecord, type Severity } from '../../../contract/events.js';
import { loadNativeAddon } from '../storage/io-worker-pool.js';
import { UserError } from '../util/errors.js';
import { connectSocket, engineSocket } from './api-client.js';
import {
  parseCommandArgs,
  parseWholeNumber,
  usageError,
  stopSignal,
  type Command,
} from './command.js';
import { formatWhen, parseSince } from './when.js';

const HELP = `Usage: branchsan events (--data DIR | --socket PATH) [--since WHEN] [--severity LEVEL]
                        [--type TYPE] [--limit N] [--follow] [--json]

Prints a running engine's event log, oldest first: the last events, or those since
a time. Each line is when, how severe, what type, and what happened with what to do.
With --follow it then prints new events as they happen, until Ctrl-C.

Options:
  --data DIR        the engine's data directory (finds the socket of the engine
                    running on it, DIR/engine.sock by default)
  --socket PATH     the engine's API socket
  --since WHEN      only events since then: a time ago (90s, 30m, 2h, 7d), or a
                    date and time in local time (2026-11-27, "2026-11-27 06:00")
  --severity LEVEL  only events at least this severe: info, warning, error, critical
  --type TYPE       only events of this type (alert.raised), or of a family (alert.*)
  --limit N         at most the last N events, 1 to 10000                      [100]
  --follow, -f      go on printing new events until interrupted (Ctrl-C), or
                    until the output's reader is gone (\`| head -1\`)
  --json            one JSON object per event and line (JSON Lines)

Examples:
  branchsan events --data /var/lib/branchsan --since 2h --severity warning
  branchsan events --data /var/lib/branchsan --type 'alert.*' --follow`;

/** The engine lists at most this many events per call (the contract's limit). */
const PAGE = 1000;

export const events: Command = {
  name: 'events',
  help: HELP,
  async run(argv) {
    const { values } = parseCommandArgs('events', argv, {
      data: { type: 'string' },
      socket: { type: 'string' },
      since: { type: 'string' },
      severity: { type: 'string' },
      type: { type: 'string' },
      limit: { type: 'string' },
      follow: { type: 'boolean', short: 'f' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const since = values.since === undefined ? undefined : parseSince('events', values.since);
    const severity = parseSeverity(values.severity);
    const type = parseType(values.type);
    const limit = parseWholeNumber('events', 'limit', values.limit, {
      min: 1,
      max: 10_000,
      fallback: 100,
    });
    const client = await connectSocket(engineSocket('events', values.data, values.socket));
    const print = (e: EventRecord) => console.log(values.json ? JSON.stringify(e) : line(e));
    try {
      // Listen before listing, so an event recorded in between is not missed; one
      // both listed and pushed is printed once (by id).
      const early: EventRecord[] = [];
      let listed = false;
      let newest = 0;
      const wanted = matcher(severity, type);
      const onEvent = (e: EventRecord) => {
        if (!wanted(e)) return;
        if (!listed) return void early.push(e);
        if (e.id !== 0 && e.id <= newest) return;
        newest = Math.max(newest, e.id);
        print(e);
      };
      if (values.follow) client.session.on('event.recorded', (d) => onEvent(d as EventRecord));
      const list = await lastEvents(client, { since, severity, type }, limit);
      for (const e of list) print(e);
      newest = list.at(-1)?.id ?? 0;
      listed = true;
      if (!values.follow) return 0;
      for (const e of early) onEvent(e);
      const why = await Promise.race([
        stopSignal('events').then(() => 'stopped' as const),
        readerGone().then(() => 'stopped' as const),
        client.ended.then(() => 'ended' as const),
      ]);
      if (why === 'stopped') return 0;
      throw new UserError(
        'events: the engine closed the connection: it stopped or restarted, or this command read its events too slowly.',
        'Run the command again once the engine answers (`branchsan status` tells).',
        'unavailable',
      );
    } finally {
      client.close();
    }
  },
};

/**
 * Settles when nobody reads standard output any more (`events -f | head -1`: head
 * exited). Writing shows it (EPIPE) at the next event; with the C addon a poll of the
 * descriptor every OUTPUT_CHECK_MS shows it without one, so a quiet engine does not keep
 * the pipeline waiting, as GNU tail -f does. Without the addon (not built, or
 * BRANCHSAN_NATIVE=off) only the next event tells.
 */
async function readerGone(): Promise<void> {
  const closed = (await loadNativeAddon())?.outputClosed;
  await new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const done = () => {
      clearInterval(timer);
      resolve();
    };
    if (typeof closed === 'function') {
      timer = setInterval(() => {
        if (closed(process.stdout.fd) === true) done();
      }, OUTPUT_CHECK_MS).unref();
    }
    process.stdout.once('error', done);
    process.stdout.once('close', done);
  });
}

/** How often following checks whether standard output still has a reader. */
const OUTPUT_CHECK_MS = 500;

type Filter = { since?: number; severity?: Severity; type?: string };

/** The newest `limit` events that pass the filter, oldest first (paging by id). */
async function lastEvents(
  client: Awaited<ReturnType<typeof connectSocket>>,
  filter: Filter,
  limit: number,
): Promise<EventRecord[]> {
  const out: EventRecord[] = [];
  let before: number | undefined;
  while (out.length < limit) {
    const page = await client.call('events.list', {
      ...filter,
      limit: Math.min(PAGE, limit - out.length),
      ...(before !== undefined ? { before } : {}),
    });
    out.push(...page.events);
    if (page.nextBefore === null || page.events.length === 0) break;
    before = page.nextBefore;
  }
  return out.reverse();
}

/** The same filter the engine applies to a list, for pushed events. */
function matcher(severity: Severity | undefined, type: string | undefined) {
  const family = type?.endsWith('.*') ? type.slice(0, -1) : undefined;
  return (e: EventRecord) =>
    (severity === undefined || SEVERITY_RANK[e.severity] >= SEVERITY_RANK[severity]) &&
    (type === undefined || (family ? e.type.startsWith(family) : e.type === type));
}

function line(e: EventRecord): string {
  const unstored =
    (e.data as { unstored?: unknown } | undefined)?.unstored === true
      ? ' (not in the event log: the data disk is full)'
      : '';
  return `${formatWhen(e.ts)}  ${e.severity.toUpperCase().padEnd(8)}  ${e.type}  ${e.message}${unstored}`;
}

const usage = (message: string) => usageError('events', message);

/** The engine's own rule for a type filter (the contract's), said before asking it. */
function parseType(text: string | undefined): string | undefined {
  if (text === undefined || EventsListParams.shape.type.safeParse(text).success) return text;
  throw usage(
    `--type "${text}" is not an event type; give one such as alert.raised, or a family such as 'alert.*' (lower case).`,
  );
}

function parseSeverity(text: string | undefined): Severity | undefined {
  if (text === undefined) return undefined;
  if (Object.hasOwn(SEVERITY_RANK, text)) return text as Severity;
  throw usage(`--severity "${text}" is not a level; give info, warning, error or critical.`);
}
