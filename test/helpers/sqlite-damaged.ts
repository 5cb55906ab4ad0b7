/**
 * A database damaged for real: made by the engine, filled, then interior pages
 * overwritten (the header kept, so SQLite still opens it and its check finds the harm).
 */
import fs from 'node:fs';
import { openDatabase } from '../../engine/src/persistence/db.js';

export function makeDamagedDatabase(file: string): void {
  const { db } = openDatabase(file);
  db.exec('CREATE TABLE filler (x TEXT)');
  const ins = db.prepare('INSERT INTO filler VALUES (?)');
  for (let i = 0; i < 2000; i++) ins.run('x'.repeat(200));
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, Buffer.alloc(8192, 0xa5), 0, 8192, 4096 * 3);
  fs.closeSync(fd);
}
