/**
 * Who the audit trail names for a call on the local API socket: the caller's user as
 * the kernel knows it (SO_PEERCRED through the C addon), `NAME@local`; without the
 * addon, the connection's number. (The web console's `admin@ADDRESS` is seen by the
 * Chromium test, which acknowledges an alert.)
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabaseReadOnly } from '../../engine/src/persistence/db.js';
import { userName } from '../../engine/src/service/peer-identity.js';
import { connectSocket } from '../helpers/api.js';
import { NATIVE_BUILT, startEngine, tempDir, type RunningEngine } from '../helpers/engine.js';

const engines: RunningEngine[] = [];
afterEach(async () => {
  for (const e of engines.splice(0)) {
    await e.stop();
    fs.rmSync(e.dataDir, { recursive: true, force: true });
  }
});

/** Creates a subsystem over the socket and returns the actor its audit row names. */
async function auditedActor(env: NodeJS.ProcessEnv = {}): Promise<string> {
  const engine = await startEngine({ dataDir: tempDir('branchsan-actor-'), env });
  engines.push(engine);
  const api = await connectSocket(engine.socketPath);
  try {
    await api.call('target.subsystem.create', { nqn: 'nqn.2026-11.io.branchsan.test:who' });
  } finally {
    api.close();
  }
  const db = openDatabaseReadOnly(path.join(engine.dataDir, 'branchsan.db'));
  try {
    const row = db
      .prepare("SELECT actor FROM audit WHERE action LIKE 'target.subsystem%' ORDER BY id DESC")
      .get() as { actor: string };
    return row.actor;
  } finally {
    db.close();
  }
}

describe('the actor of a local API call', () => {
  it.runIf(NATIVE_BUILT)('is the calling user, as the kernel saw it connect', async () => {
    expect(await auditedActor()).toBe(`${os.userInfo().username}@local`);
  });

  it('is the connection number when the C addon is off', async () => {
    expect(await auditedActor({ BRANCHSAN_NATIVE: 'off' })).toMatch(/^local#\d+$/);
  });

  it('names a user from the password database, or by number when it has no name', () => {
    expect(userName(0)).toBe('root');
    expect(userName(65534)).toBe('nobody'); // Debian's, not the user running the tests
    expect(userName(4_000_000_123)).toBe('uid 4000000123');
  });
});
