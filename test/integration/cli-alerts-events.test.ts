/**
 * `branchsan alerts`, `branchsan events` and the alert line of `branchsan status`
 * against a real engine process: an engine killed outright and started again raises
 * the unexpected-restart alert, which the CLI lists, acknowledges and then lists as
 * closed, while `events --follow` prints the events it causes as they happen.
 */
import fs from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { connectSocket, type SocketClient } from '../helpers/api.js';
import { killGroup, killStarted, start } from '../helpers/cli-process.js';
import {
  LOCAL_ACTOR,
  NATIVE_BUILT,
  runCli,
  startEngine,
  tempDir,
  type RunningEngine,
} from '../helpers/engine.js';
import { until } from '../helpers/wait.js';
import { parseExposition } from '../unit/metrics/exposition.js';

let dir: string;
let engine: RunningEngine;
let api: SocketClient;

const cli = (...args: string[]) => runCli([...args, '--data', dir]);

beforeAll(async () => {
  dir = tempDir('branchsan-cli-alerts-');
  const first = await startEngine({ dataDir: dir });
  await first.stop('SIGKILL');
  engine = await startEngine({ dataDir: dir });
  api = await connectSocket(engine.socketPath);
  // the engine's rules run every 5 s: wait for the unexpected-restart alert
  await until(async () => {
    const { alerts } = await api.call('alerts.list', { active: true });
    return alerts.some((a) => a.rule === 'engine.unclean-restart');
  });
}, 60_000);

afterEach(() => killStarted());

afterAll(async () => {
  api?.close();
  await engine?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('branchsan alerts and events', () => {
  it('lists the alert, follows the events of acknowledging it, then lists it as closed', async () => {
    const status = await cli('status');
    expect(status.stdout).toContain(
      '  alerts: 1 warning active (`branchsan alerts` lists them, with what to do)',
    );

    const listed = await cli('alerts');
    expect(listed.code, listed.stderr).toBe(0);
    const { alerts } = await api.call('alerts.list', { active: true });
    const id = alerts.find((a) => a.rule === 'engine.unclean-restart')!.id;
    expect(listed.stdout).toMatch(
      new RegExp(
        '^1 active alert:\\n\\nWARNING {2}Engine restarted after an unexpected stop\\n' +
          '  The storage engine restarted at .* after an unexpected stop \\(crash, kill or power loss\\)\\..*\\n' +
          `  raised \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d, id ${id}; acknowledge: branchsan alerts ack ${id} --data ${dir}\\n$`,
      ),
    );
    const json = await cli('alerts', '--json');
    expect(JSON.parse(json.stdout)).toEqual(alerts);

    // a head office's Prometheus sees it too
    const { token } = await api.call('metrics.settings.set', { prometheusEnabled: true });
    const scrape = async () => {
      const res = await fetch(new URL('/metrics', engine.consoleUrl!), {
        headers: { Authorization: `Bearer ${token}` },
      });
      return parseExposition(await res.text());
    };
    const fams = await scrape();
    expect(
      fams.get('branchsan_alerts_active')!.samples.find((s) => s.labels.severity === 'warning')!
        .value,
    ).toBe(1);
    expect(fams.get('branchsan_alert_active')!.samples).toEqual([
      {
        name: 'branchsan_alert_active',
        labels: {
          rule: 'engine.unclean-restart',
          subject: alerts[0]!.subject,
          severity: 'warning',
          acknowledged: 'false',
        },
        value: 1,
      },
    ]);

    // the event log holds the raise
    const log = await cli('events', '--type', 'alert.*');
    expect(log.code, log.stderr).toBe(0);
    expect(log.stdout).toMatch(
      /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {2}WARNING {3}alert\.raised {2}The storage engine restarted at /m,
    );

    // follow the alert events while the alert is acknowledged from another command
    const follow = start(['events', '--data', dir, '--type', 'alert.*', '--follow'], 30_000);
    await until(async () => follow.stdout().includes('alert.raised'));
    const acked = await cli('alerts', 'ack', String(id));
    expect(acked.code, acked.stderr).toBe(0);
    expect(acked.stdout).toMatch(
      new RegExp(
        `^Alert ${id} acknowledged by ${LOCAL_ACTOR}: Engine restarted after an unexpected stop\\. It is closed now\\.\\n$`,
      ),
    );
    await until(async () => follow.stdout().includes('alert.cleared'));
    const lines = follow.stdout().trim().split('\n');
    expect(lines.map((l) => l.split(/ {2,}/)[2])).toEqual([
      'alert.raised',
      'alert.acknowledged',
      'alert.cleared',
    ]);
    killGroup(follow.proc, 'SIGINT');
    const ended = await follow.exited;
    expect(ended.code, ended.stderr).toBe(0);
    expect(ended.stderr).toBe('');

    const none = await cli('alerts');
    expect(none.stdout).toBe('No active alerts: nothing on this node needs attention.\n');
    expect((await scrape()).get('branchsan_alert_active')!.samples).toEqual([]);
    expect((await cli('status')).stdout).toContain('  alerts: none active\n');
    const closed = await cli('alerts', '--closed');
    expect(closed.stdout).toMatch(
      new RegExp(
        `^WARNING {2}Engine restarted after an unexpected stop\\n {2}raised .+, closed when ${LOCAL_ACTOR} acknowledged it, \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\\n$`,
      ),
    );
  });

  // `branchsan events -f | head -1` on a quiet engine: head has exited and no event
  // comes to fail a write, yet following must end (as GNU tail -f does), or the
  // user's pipeline waits for the next event, maybe for hours. The type filter keeps
  // every event out, so only the check of the output can end it.
  it.runIf(NATIVE_BUILT)(
    'stops following once its output has no reader, without waiting for an event to write',
    async () => {
      const follow = start(['events', '--data', dir, '--type', 'alert.raised', '--follow'], 20_000);
      await until(async () => follow.stdout().includes('alert.raised'));
      follow.proc.stdout!.destroy(); // the reader exits
      const ended = await follow.exited;
      expect(ended.timedOut, 'still following 20 s after its reader left').toBe(false);
      expect(ended.code, ended.stderr).toBe(0);
      expect(ended.stderr).toBe('');
    },
  );

  it('filters the event log by time and severity, and pages through more than one answer holds', async () => {
    for (let i = 0; i < 1005; i++) await api.call('notifications.test', {});
    const all = await cli('events', '--type', 'notifications.test', '--limit', '1003', '--json');
    expect(all.code, all.stderr).toBe(0);
    const ids = all.stdout
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { id: number }).id);
    // the newest 1003 across two answers, oldest first: what the engine pages out itself
    const pages = [await api.call('events.list', { type: 'notifications.test', limit: 1000 })];
    pages.push(
      await api.call('events.list', {
        type: 'notifications.test',
        limit: 3,
        before: pages[0]!.nextBefore!,
      }),
    );
    expect(ids).toEqual(pages.flatMap((p) => p.events.map((e) => e.id)).reverse());

    const future = await cli('events', '--since', '2099-01-01');
    expect(future.code, future.stderr).toBe(0);
    expect(future.stdout).toBe('');
    const recent = await cli('events', '--since', '10m', '--type', 'notifications.test');
    expect(recent.stdout.trim().split('\n')).toHaveLength(100); // the default limit
    // the engine's own events: two starts (info) and the unexpected restart (warning)
    const types = async (...args: string[]) =>
      (await cli('events', '--type', 'engine.*', ...args)).stdout
        .trim()
        .split('\n')
        .map((l) => l.split(/ {2,}/).slice(1, 3).join(' '));
    expect(await types()).toEqual([
      'INFO engine.started',
      'WARNING engine.unclean-restart',
      'INFO engine.started',
    ]);
    expect(await types('--severity', 'warning')).toEqual(['WARNING engine.unclean-restart']);
  });

  it('stops following once its output is gone, at the next event', async () => {
    const follow = start(['events', '--data', dir, '--follow', '--limit', '1'], 30_000);
    await until(async () => follow.stdout().length > 0);
    follow.proc.stdout!.destroy(); // as `| head -1` exits
    await api.call('notifications.test', {});
    const ended = await follow.exited;
    expect(ended.timedOut).toBe(false);
    expect(ended.code, ended.stderr).toBe(0);
  });

  it('says what went wrong, and what to do, for a wrong call', async () => {
    const cases: [string[], RegExp][] = [
      [['alerts', 'ack', '999999'], /^branchsan: There is no alert 999999\.\n/],
      [['alerts', 'mute'], /alerts: "mute" is not something alerts does; it knows ack ID\./],
      [['alerts', 'ack'], /alerts: ack needs the ID of the alert \(the list shows it\)\./],
      [['alerts', 'ack', 'x1'], /alerts: "x1" is not an alert ID \(a whole number\)\./],
      [['alerts', 'ack', '-1'], /alerts: "-1" is not an alert ID \(a whole number\)\./],
      [
        ['alerts', '--limit', '0'],
        /alerts: --limit must be a whole number from 1 to 1000, not "0"\./,
      ],
      [
        ['events', '--since', 'yesterday'],
        /events: --since "yesterday" is neither a time ago nor a date\./,
      ],
      [
        ['events', '--since', '2026-02-31'],
        /events: --since "2026-02-31" is neither a time ago nor a date\./,
      ],
      [
        ['events', '--type', 'Alert.raised'],
        /events: --type "Alert\.raised" is not an event type; give one such as alert\.raised/,
      ],
      [
        ['events', '--severity', 'loud'],
        /events: --severity "loud" is not a level; give info, warning, error or critical\./,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr, args.join(' ')).not.toMatch(/\n\s+at /); // no stack trace
    }
    const nowhere = await runCli(['alerts']);
    expect(nowhere.stderr).toContain('alerts: say which engine: --data DIR or --socket PATH.');
    // both: which engine was meant is not known (before, --socket won without a word)
    for (const command of ['status', 'alerts', 'events']) {
      const both = await runCli([command, '--data', dir, '--socket', engine.socketPath]);
      expect(both.code, command).toBe(2);
      expect(both.stdout).toBe('');
      expect(both.stderr).toContain(
        `${command}: give --data DIR or --socket PATH, not both: they may name two engines.`,
      );
    }
  });
});
