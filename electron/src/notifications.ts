/**
 * When to tell the operator that the engine connection was lost or restored.
 * Pure (tested); main shows the notices with Electron's Notification.
 */
import type { ConnectionState } from '../../contract/api.js';

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
