/**
 * When to tell the operator that the engine connection was lost or restored, and which
 * raised alerts to show. Pure (tested); main shows the notices with Electron's
 * Notification.
 */
import { SEVERITY_LABEL, alertKey } from '../../contract/alert-words.js';
import { Alert, type ConnectionState } from '../../contract/api.js';

export interface Notice {
  title: string;
  body: string;
}

/**
 * Turns the stream of link states into at most one "lost" and one "restored" notice
 * per outage: retries (connecting ↔ disconnected) stay silent, and nothing is said
 * before the first connection (the window shows that state already).
 */
export class ConnectionNotifier {
  private everConnected = false;
  private lost = false;

  /** `closedByUs`: the app closed the link itself (quitting): nothing was lost. */
  next(state: ConnectionState, reason?: string, closedByUs = false): Notice | undefined {
    if (closedByUs) return undefined;
    if (state === 'connected') {
      this.everConnected = true;
      if (!this.lost) return undefined;
      this.lost = false;
      return { title: 'BranchSAN engine reconnected', body: 'The dashboard is live again.' };
    }
    if (!this.everConnected || this.lost) return undefined;
    this.lost = true;
    return {
      title: 'Lost the connection to the BranchSAN engine',
      body:
        (reason ? `${capitalise(reason)}. ` : '') +
        'Storage keeps serving if the engine is running; BranchSAN reconnects by itself.',
    };
  }
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** Raises remembered so one raise pushed twice (a reconnect's replay) is shown once. */
const REMEMBER = 500;

/**
 * Turns pushed `alert.raised` events into desktop notices: warning and above (info is
 * for the event log), each raise once. An alert raised while the engine's database was
 * full (id 0) is shown too; its later `alert.stored` is no new raise and is not listened to.
 */
export class AlertNotifier {
  private readonly told: string[] = [];

  /** `data`: the event as pushed over the socket, checked here like every input from it. */
  raised(data: unknown): Notice | undefined {
    const parsed = Alert.safeParse(data);
    if (!parsed.success) return undefined;
    const a = parsed.data;
    if (a.severity === 'info' || a.clearedAt !== null) return undefined;
    const key = `${alertKey(a)}\u0000${a.severity}\u0000${a.raisedAt}`;
    if (this.told.includes(key)) return undefined;
    this.told.push(key);
    if (this.told.length > REMEMBER) this.told.shift();
    return { title: `${SEVERITY_LABEL[a.severity]}: ${a.title}`, body: a.message };
  }
}

/**
 * A notice as the desktop gets it. On Linux the notification server reads the body as
 * markup (the freedesktop notification spec: links, images, bold), and alert texts carry
 * names a network peer chose (a host's NQN): there `&`, `<` and `>` are escaped, so
 * the body shows as the text it is and never as a link or an image. The title (summary)
 * is plain text everywhere.
 */
export function forDesktop(n: Notice, platform: NodeJS.Platform): Notice {
  if (platform !== 'linux') return n;
  const body = n.body.replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'));
  return { title: n.title, body };
}
