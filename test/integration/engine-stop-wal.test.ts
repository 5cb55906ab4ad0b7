/**
 * A clean stop leaves the database in one file: the engine's connection, closed last,
 * checkpoints the WAL and removes DB-wal and DB-shm. The event log's reader thread
 * (persistence/db-reader.ts) has a connection of its own, which must close first.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { connectSocket } from '../helpers/api.js';
import { startEngine } from '../helpers/engine.js';

describe('a clean stop', () => {
  it('leaves neither DB-wal nor DB-shm, after the event log was read on its thread', async () => {
    const engine = await startEngine();
    const api = await connectSocket(engine.socketPath);
    // a filtered page is read by the reader thread, which then idles for a minute
    const page = await api.call('events.list', { type: 'engine.*', limit: 10 });
    expect(page.events.map((e) => e.type)).toContain('engine.started');
    // changes committed while its connection is open, and read through it
    await api.call('notifications.test', {});
    const after = await api.call('events.list', { type: 'notifications.*', limit: 10 });
    expect(after.events.map((e) => e.type)).toContain('notifications.test');
    api.close();
    expect(await engine.stop()).toBe(0);
    const db = path.join(engine.dataDir, 'branchsan.db');
    expect(fs.existsSync(db)).toBe(true);
    expect(fs.existsSync(`${db}-wal`)).toBe(false);
    expect(fs.existsSync(`${db}-shm`)).toBe(false);
  });
});
