/** API handlers for hosts' DH-HMAC-CHAP secrets; changes go to the audit log, secrets never do. */
import type { HandlerGroup } from '../../control/rpc.js';
import type { Db } from '../../persistence/db.js';
import type { HostSecretStore } from '../host-secrets.js';
import { actorOf } from './target.js';

export type HostSecretMethods = 'host.secret.create' | 'host.secret.rotate' | 'host.secret.get';

export function hostSecretHandlers(
  store: HostSecretStore,
  db: Db,
): HandlerGroup<HostSecretMethods> {
  // The audit row is written before the new secret takes effect: a change that cannot
  // be recorded (a full disk) is not made.
  const audit = (actor: string, action: string) => (change: { hostNqn: string; hash: number }) =>
    db
      .prepare('INSERT INTO audit (ts, actor, action, details) VALUES (?, ?, ?, ?)')
      .run(Date.now(), actor, action, JSON.stringify(change));
  return {
    'host.secret.create': (p, ctx) =>
      store.create(p.hostNqn, p.hash, audit(actorOf(ctx), 'host.secret.create')),
    'host.secret.rotate': (p, ctx) =>
      store.rotate(p.hostNqn, p.hash, audit(actorOf(ctx), 'host.secret.rotate')),
    'host.secret.get': (p) => store.get(p.hostNqn),
  };
}
