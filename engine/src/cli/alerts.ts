/** `branchsan alerts`: a running engine's alerts on the command line, and acknowledging one. */
import {
  SEVERITY_LABEL,
  closedHow,
  closedInWords,
  mostSevereFirst,
} from '../../../contract/alert-words.js';
import type { Alert } from '../../../contract/events.js';
import { connectSocket, engineSocket } from './api-client.js';
import { parseCommandArgs, parseWholeNumber, usageError, type Command } from './command.js';
import { formatWhen } from './when.js';

const HELP = `Usage: branchsan alerts (--data DIR | --socket PATH) [--closed] [--limit N] [--json]
       branchsan alerts ack ID (--data DIR | --socket PATH) [--json]

Lists a running engine's active alerts, the most severe first, each with what to do.
An alert is a condition that holds now (a host gone, a disk nearly full): it clears
by itself once the condition ends. Acknowledging one records that someone has seen
it; an incident (an unexpected restart) closes when acknowledged.

Options:
  --data DIR      the engine's data directory (finds the socket of the engine
                  running on it, DIR/engine.sock by default)
  --socket PATH   the engine's API socket
  --closed        list the alerts closed last instead, the last closed first,
                  each saying how it ended
  --limit N       list at most N alerts, 1 to 1000                      [100]
  --json          print the raw JSON answer

Examples:
  branchsan alerts --data /var/lib/branchsan
  branchsan alerts ack 12 --data /var/lib/branchsan`;

export const alerts: Command = {
  name: 'alerts',
  help: HELP,
  async run(argv) {
    // `ack -1`: a negative ID reads as an option to the parser ("Unknown option '-1'")
    const id = argv[argv.indexOf('ack') + 1];
    if (argv.includes('ack') && id !== undefined && /^-\d/.test(id))
      throw usage(`"${id}" is not an alert ID (a whole number).`);
    const { values, positionals } = parseCommandArgs(
      'alerts',
      argv,
      {
        data: { type: 'string' },
        socket: { type: 'string' },
        closed: { type: 'boolean' },
        limit: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      true,
    );
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    const ackId = parseAck(positionals);
    if (ackId !== undefined && (values.closed || values.limit !== undefined))
      throw usage('ack takes no --closed or --limit.');
    const limit = parseWholeNumber('alerts', 'limit', values.limit, {
      min: 1,
      max: 1000,
      fallback: 100,
    });
    const client = await connectSocket(engineSocket('alerts', values.data, values.socket));
    try {
      if (ackId !== undefined) {
        const a = await client.call('alerts.ack', { id: ackId });
        if (values.json) console.log(JSON.stringify(a, null, 2));
        else console.log(acknowledged(a));
        return 0;
      }
      const { alerts: list } = await client.call('alerts.list', {
        active: !values.closed,
        limit,
      });
      if (values.json) console.log(JSON.stringify(list, null, 2));
      else if (values.closed) {
        // a closed alert replaced by one of another severity: its successor may be active
        const active = await client.call('alerts.list', { active: true, limit: 1000 });
        console.log(closedList(list, [...active.alerts, ...list]));
      } else console.log(activeList(list, ackCommand(values.data, values.socket)));
      return 0;
    } finally {
      client.close();
    }
  },
};

const usage = (message: string) => usageError('alerts', message);

/** `ack ID` → ID; no positionals → undefined; anything else is refused. */
function parseAck(positionals: string[]): number | undefined {
  if (positionals.length === 0) return undefined;
  const [verb, id, ...rest] = positionals;
  if (verb !== 'ack') throw usage(`"${verb}" is not something alerts does; it knows ack ID.`);
  if (id === undefined) throw usage('ack needs the ID of the alert (the list shows it).');
  if (rest.length > 0) throw usage(`ack takes one ID, not also "${rest.join(' ')}".`);
  if (!/^[1-9]\d{0,14}$/.test(id)) throw usage(`"${id}" is not an alert ID (a whole number).`);
  return Number(id);
}

/** The ack command for an alert, naming the engine the way this command was told it. */
function ackCommand(data: string | undefined, socket: string | undefined): (id: number) => string {
  const where = socket !== undefined ? `--socket ${quote(socket)}` : `--data ${quote(data!)}`;
  return (id) => `branchsan alerts ack ${id} ${where}`;
}

const quote = (s: string) => (/^[\w./:@=+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);

function activeList(list: Alert[], ack: (id: number) => string): string {
  if (list.length === 0) return 'No active alerts: nothing on this node needs attention.';
  const sorted = [...list].sort(mostSevereFirst);
  const head = `${list.length} active alert${list.length === 1 ? '' : 's'}:`;
  return [head, ...sorted.map((a) => activeEntry(a, ack))].join('\n\n');
}

function activeEntry(a: Alert, ack: (id: number) => string): string {
  const state =
    a.ackedAt !== null
      ? `acknowledged by ${a.ackedBy ?? 'someone'} at ${formatWhen(a.ackedAt)}`
      : a.id === 0
        ? 'not in the event log yet (the engine cannot write to its data disk); it can be acknowledged once it is'
        : `acknowledge: ${ack(a.id)}`;
  return [
    `${SEVERITY_LABEL[a.severity].toUpperCase()}  ${a.title}`,
    `  ${a.message}`,
    `  raised ${formatWhen(a.raisedAt)}${a.id > 0 ? `, id ${a.id}` : ''}; ${state}`,
  ].join('\n');
}

function closedList(list: Alert[], others: Alert[]): string {
  if (list.length === 0) return 'No alert has closed yet.';
  return list
    .map((a) =>
      [
        `${SEVERITY_LABEL[a.severity].toUpperCase()}  ${a.title}`,
        `  raised ${formatWhen(a.raisedAt)}, ${closedInWords(closedHow(a, others), formatWhen(a.clearedAt!))}`,
      ].join('\n'),
    )
    .join('\n');
}

function acknowledged(a: Alert): string {
  const closed =
    a.clearedAt !== null ? ' It is closed now.' : ' It stays active until its condition ends.';
  return `Alert ${a.id} acknowledged by ${a.ackedBy ?? 'someone'}: ${a.title}.${closed}`;
}
