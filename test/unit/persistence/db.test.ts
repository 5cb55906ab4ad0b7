import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  DatabaseError,
  ensureNodeId,
  openDatabase,
  openDatabaseReadOnly,
  recordEvent,
} from '../../../engine/src/persistence/db.js';
import { MIGRATIONS } from '../../../engine/src/persistence/migrations.js';
import { tempDir } from '../../helpers/engine.js';
import { makeDamagedDatabase } from '../../helpers/sqlite-damaged.js';
import { heldExclusively } from '../../helpers/sqlite-full.js';

describe('database', () => {
  it('migrates a new database once, in WAL mode with foreign keys', () => {
    const file = path.join(tempDir(), 'b.db');
    const first = openDatabase(file);
    expect(first.applied.length).toBe(MIGRATIONS.length);
    expect(first.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(first.db.pragma('foreign_keys', { simple: true })).toBe(1);
    const id = ensureNodeId(first.db);
    recordEvent(first.db, { type: 't', severity: 'info', message: 'm' });
    first.db.close();
    const again = openDatabase(file);
    expect(again.applied).toEqual([]);
    expect(again.schemaVersion).toBe(MIGRATIONS.length);
    expect(ensureNodeId(again.db)).toBe(id);
    again.db.close();
  });

  it('rolls back a failing migration as a whole', () => {
    const file = path.join(tempDir(), 'b.db');
    const broken = [
      ...MIGRATIONS,
      { name: 'broken', sql: 'CREATE TABLE ok_part (x INTEGER); CREATE TABLE oops (' },
    ];
    expect(() => openDatabase(file, broken)).toThrow();
    const { db, schemaVersion } = openDatabase(file);
    expect(schemaVersion).toBe(MIGRATIONS.length);
    expect(
      db.prepare("SELECT name FROM sqlite_master WHERE name = 'ok_part'").get(),
    ).toBeUndefined();
    db.close();
  });

  it('refuses a database written by a newer engine', () => {
    const file = path.join(tempDir(), 'b.db');
    openDatabase(file, [
      ...MIGRATIONS,
      { name: 'future', sql: 'CREATE TABLE future (x INTEGER)' },
    ]).db.close();
    expect(() => openDatabase(file)).toThrow(/newer than this engine/);
  });

  it('refuses a damaged database with a hint', () => {
    const file = path.join(tempDir(), 'b.db');
    makeDamagedDatabase(file);
    let err: unknown;
    try {
      openDatabase(file).db.close();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(DatabaseError);
    expect((err as DatabaseError).hint).toMatch(/backup|peer/);
  });

  it('a reader is told at once that the engine holds the database exclusively', () => {
    const file = path.join(tempDir(), 'b.db');
    const engine = heldExclusively(file);
    ensureNodeId(engine); // the first write takes the exclusive lock
    try {
      let err: unknown;
      try {
        openDatabaseReadOnly(file).close();
      } catch (e) {
        err = e;
      }
      // Before: the open "worked", and every read then failed with "database is locked"
      // after waiting out the busy timeout.
      expect(err).toBeInstanceOf(DatabaseError);
      expect((err as DatabaseError).message).toContain('held exclusively by the running engine');
      expect((err as DatabaseError).hint).toContain('restart the engine');
    } finally {
      engine.close();
    }
    // released: readable again
    const r = openDatabaseReadOnly(file);
    expect(r.prepare("SELECT value FROM settings WHERE key = 'node.id'").get()).toBeTruthy();
    r.close();
  });
});
