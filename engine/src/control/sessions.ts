/**
 * Connected API clients (socket and console alike) and the event fan-out to them.
 * A slow client is dropped rather than buffered without bound.
 */
import type { EventName, EventData } from '../../../contract/api.js';

export interface Session {
  readonly id: number;
  readonly kind: 'socket' | 'console';
  readonly peer: string;
  /** Sends one serialized message; returns false if the client is too far behind. */
  send(text: string): boolean;
  close(reason: string): void;
}

export class SessionHub {
  private readonly sessions = new Set<Session>();
  private nextId = 1;

  newId(): number {
    return this.nextId++;
  }

  add(s: Session): void {
    this.sessions.add(s);
  }

  remove(s: Session): void {
    this.sessions.delete(s);
  }

  get size(): number {
    return this.sessions.size;
  }

  broadcast<E extends EventName>(name: E, data: EventData<E>): void {
    if (this.sessions.size === 0) return;
    const text = JSON.stringify({ jsonrpc: '2.0', method: 'event', params: { name, data } });
    for (const s of this.sessions) {
      if (!s.send(text)) s.close('client is not reading its events');
    }
  }

  closeAll(reason: string): void {
    for (const s of [...this.sessions]) s.close(reason);
    this.sessions.clear();
  }
}

/** Bytes a client may have unread before it is disconnected. */
export const MAX_CLIENT_BACKLOG = 8 << 20;
