/**
 * kill -9 while the engine's connection commits and the checkpoint thread
 * (persistence/wal-checkpointer.ts) copies the WAL into the file: reopened, the
 * database passes its integrity check and holds every row whose commit returned.
 *
 * Needs the built engine (npm test builds it; or npm run build:engine).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../../engine/src/persistence/db.js';
import { tempDir } from '../helpers/engine.js';

const dist = (m: string) =>
  fileURLToPath(new URL(`../../dist/engine/src/persistence/${m}`, import.meta.url));

/**
 * Commits 16 rows of 4000 bytes at a time, checkpointed past 256 KiB, and after each
 * commit prints the largest id committed and how many checkpoints ran. A write to a
 * pipe is synchronous: a line read means its commit had returned.
 */
const WRITER = `
const { openDatabase } = await import(${JSON.stringify(dist('db.js'))});
const { WalCheckpointer } = await import(${JSON.stringify(dist('wal-checkpointer.js'))});
const { db } = openDatabase(process.argv[2]);
db.exec('CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, b BLOB NOT NULL)');
const cp = new WalCheckpointer(db, undefined, { thresholdBytes: 256 << 10, tickMs: 5 });
if ((await cp.start()) !== 'worker') throw new Error('no checkpoint thread');
const ins = db.prepare('INSERT INTO blobs (b) VALUES (?)');
const top = db.prepare('SELECT max(id) FROM blobs').pluck();
for (let n = 0; ; n++) {
  db.transaction(() => {
    for (let i = 0; i < 16; i++) ins.run(Buffer.alloc(4000, n & 255));
  })();
  process.stdout.write(top.get() + ' ' + cp.checkpoints + '\\n');
  if (n % 4 === 3) await cp.room();
  else await new Promise((r) => setImmediate(r));
}
`;

const children: ReturnType<typeof spawn>[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
});

/** Runs the writer until it has committed past `rows` and checkpointed `checkpoints` times, then kills it. */
async function writeThenKill(
  script: string,
  file: string,
  rows: number,
  checkpoints: number,
): Promise<number> {
  const child = spawn(process.execPath, [script, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  let committed = 0;
  for await (const line of readline.createInterface({ input: child.stdout })) {
    const [id, done] = line.split(' ').map(Number) as [number, number];
    committed = id;
    if (id >= rows && done >= checkpoints) break;
  }
  if (committed === 0) throw new Error(`the writer wrote nothing: ${stderr}`);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  return committed;
}

describe('a kill -9 while the checkpoint thread runs', () => {
  it('loses no committed row, three kills in a row', async () => {
    const dir = tempDir();
    const script = path.join(dir, 'writer.mjs');
    fs.writeFileSync(script, WRITER);
    const file = path.join(dir, 'branchsan.db');
    let target = 0;
    for (let round = 1; round <= 3; round++) {
      target += 4000;
      const committed = await writeThenKill(script, file, target, 5);
      const { db } = openDatabase(file); // runs the integrity check
      try {
        const [count, top] = db.prepare('SELECT count(*), max(id) FROM blobs').raw().get() as [
          number,
          number,
        ];
        expect(top).toBeGreaterThanOrEqual(committed);
        expect(count).toBe(top); // ids 1..top, none missing
      } finally {
        db.close();
      }
    }
  });
});
