/**
 * When to tell the operator that the engine connection was lost or restored, and which
 * raised alerts to show. Pure (tested); main shows the notices with Electron's
 * Notification.
 */
import { SEVERITY_LABEL, alertKey } from '../../contract/alert-words.js';
import type { Alert, ConnectionState } from '../../contract/api.js';

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

  next(state: ConnectionState, reason?: string): Notice | undefined {
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

  raised(a: Alert): Notice | undefined {
    if (a.severity === 'info' || a.clearedAt !== null) return undefined;
    const key = `${alertKey(a)}\u0000${a.severity}\u0000${a.raisedAt}`;
    if (this.told.includes(key)) return undefined;
    this.told.push(key);
    if (this.told.length > REMEMBER) this.told.shift();
    return { title: `${SEVERITY_LABEL[a.severity]}: ${a.title}`, body: a.message };
  }
}
