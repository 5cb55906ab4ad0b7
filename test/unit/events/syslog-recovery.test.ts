/**
 * The syslog writer with real child processes: a logger that starts and exits at once
 * is one failure streak (with a growing backoff), not a failing/recovered pair per
 * event; a restarted logger counts as working only once it has stayed up.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { EventRecord } from '../../../contract/events.js';
import { SyslogWriter } from '../../../engine/src/events/delivery/syslog.js';
import { tempDir } from '../../helpers/engine.js';

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const ev = (id: number): EventRecord => ({
  id,
  ts: Date.UTC(2026, 0, 2, 3, 4, 5),
  severity: 'warning',
  type: 'alert.raised',
  message: `event ${id}`,
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function writer(command: string[], stableMs: number) {
  const report: string[] = [];
  const w = new SyslogWriter({
    command,
    stableMs,
    onFailing: (err) => report.push(`failing: ${err.message}`),
    onRecovered: () => report.push('recovered'),
  });
  cleanups.push(() => w.close(500));
  return { w, report };
}

describe('syslog writer failure streaks', () => {
  it('a logger that exits at once is reported failing once, never recovered', async () => {
    const { w, report } = writer(['sh', '-c', 'echo "socket refused" >&2; exit 1'], 200);
    // an event every 100 ms for 3.5 s: before the fix each one restarted logger
    // (the backoff was reset on every start) and each start reported "recovered"
    for (let i = 0; i < 35; i++) {
      w.write(ev(i));
      await sleep(100);
    }
    expect(report).toEqual(['failing: sh exited (1): socket refused']);
  }, 15_000);

  it('a restarted logger counts as working once it has stayed up, not when it starts', async () => {
    const dir = tempDir();
    const out = path.join(dir, 'syslog.txt');
    const fake = path.join(dir, 'fake-logger');
    // fails on its first start (the socket not there yet), works from then on
    fs.writeFileSync(
      fake,
      `#!/bin/sh\nif [ ! -e ${dir}/started ]; then touch ${dir}/started; exit 1; fi\nexec cat >> ${out}\n`,
      { mode: 0o755 },
    );
    const { w, report } = writer([fake], 400);
    w.write(ev(1));
    const deadline = Date.now() + 5_000;
    while (report.length === 0 && Date.now() < deadline) await sleep(20);
    expect(report).toEqual(['failing: ' + fake + ' exited (1)']);
    await sleep(1_100); // the first backoff
    w.write(ev(2));
    await sleep(150);
    // started and fed, but not up for long enough to say so
    expect(report).toHaveLength(1);
    while (report.length === 1 && Date.now() < deadline + 5_000) await sleep(20);
    expect(report).toEqual([`failing: ${fake} exited (1)`, 'recovered']);
    await w.close();
    expect(fs.readFileSync(out, 'utf8')).toBe('<28>[alert.raised] event 2\n');
  }, 15_000);
});
