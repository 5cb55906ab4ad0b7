// @vitest-environment happy-dom
import { mount } from '@vue/test-utils';
import { beforeEach, describe, expect, it } from 'vitest';
import { ApiError, ErrorCode, type ConsoleInfo } from '../../../../../contract/api.js';
import { API_CLIENT } from '../../../../../renderer/src/api/inject.js';
import StatusPage from '../../../../../renderer/src/pages/status/StatusPage.vue';
import { FakeClient, flush, installFake } from '../../support/fake-client.js';
import { alert, systemStatus, threadsDownAlert } from '../../support/fixtures.js';

/** What `system.console` says of a console on 127.0.0.1:8450, with `over` changed. */
function loopbackConsole(over: Partial<ConsoleInfo>): ConsoleInfo {
  return {
    enabled: true,
    url: 'http://127.0.0.1:8450/',
    listening: true,
    problem: null,
    remoteAccess: false,
    tls: false,
    certificateFingerprint: null,
    certificateExpiresAt: null,
    ...over,
  };
}

describe('StatusPage', () => {
  let client: FakeClient;

  function render() {
    const { pinia } = installFake(client);
    return mount(StatusPage, {
      global: { plugins: [pinia], provide: { [API_CLIENT as symbol]: client } },
    });
  }
  const text = (w: ReturnType<typeof render>, id: string) => w.get(`[data-testid="${id}"]`).text();

  beforeEach(() => {
    client = new FakeClient('connecting');
  });

  it('says it is connecting before the first snapshot', () => {
    const w = render();
    expect(text(w, 'status-loading')).toBe('Connecting to the BranchSAN engine…');
    expect(w.find('[data-testid="engine-unavailable"]').exists()).toBe(false);
  });

  it('shows the engine status once hydrated, and uptime follows heartbeats', async () => {
    const w = render();
    client.setState('connected');
    client.answer('system.status', systemStatus());
    await flush();

    expect(text(w, 'node-id')).toBe('node-7f3a9c');
    expect(text(w, 'hostname')).toBe('branch-sto-a');
    expect(text(w, 'version')).toBe('0.1.0 API v1');
    expect(text(w, 'uptime')).toBe('2 h 3 min 5 s');
    expect(text(w, 'pid')).toBe('4242');
    expect(text(w, 'data-dir')).toBe('/var/lib/branchsan');
    expect(text(w, 'db-schema')).toBe('version 3');
    expect(text(w, 'connection-state')).toBe('Connected · web console');
    expect(w.find('[data-testid="status-loading"]').exists()).toBe(false);

    expect(text(w, 'engine-summary')).toContain('Engine running on branch-sto-a');
    expect(w.find('[data-testid="last-heartbeat"]').exists()).toBe(false);

    client.emit('system.heartbeat', { at: Date.now(), uptimeSec: 7386 });
    await flush();
    expect(text(w, 'uptime')).toBe('2 h 3 min 6 s');
    expect(text(w, 'last-heartbeat')).toMatch(/^Last heartbeat /);
  });

  it('explains a lost connection and keeps the last-known values, marked as such', async () => {
    const w = render();
    client.setState('connected');
    client.answer('system.status', systemStatus());
    await flush();
    client.setState('disconnected');
    await flush();

    const alert = text(w, 'engine-unavailable');
    expect(alert).toContain('Connection to the engine lost');
    expect(alert).toContain(
      'The console lost its connection to the BranchSAN engine. It reconnects by itself; if this persists, check that the engine service is running: systemctl status branchsan or npx branchsan serve.',
    );
    expect(text(w, 'stale-note')).toMatch(/^Last known values, as of /);
    expect(w.find('[data-testid="engine-summary"]').exists()).toBe(false);
    expect(text(w, 'node-id')).toBe('node-7f3a9c');
    expect(text(w, 'connection-state')).toBe('Disconnected');
  });

  it('says it cannot reach the engine when it never connected', async () => {
    const w = render();
    client.setState('disconnected');
    await flush();
    const alert = text(w, 'engine-unavailable');
    expect(alert).toContain('Cannot reach the engine');
    expect(alert).toContain('could not connect to the BranchSAN engine');
    expect(alert).toContain('systemctl status branchsan');
    expect(w.find('[data-testid="node-id"]').exists()).toBe(false);
  });

  it('in the desktop app, says why main cannot reach the engine, in its words', async () => {
    client = new FakeClient('connecting', 'bridge');
    const w = render();
    const why =
      'you may not open /run/branchsan/engine.sock: add your account to the branchsan-admin group (sudo usermod -aG branchsan-admin $USER) and log in again';
    client.setFailure(why);
    client.setState('disconnected');
    await flush();
    expect(text(w, 'link-failure')).toBe(`Why: ${why}.`);
    expect(text(w, 'engine-unavailable')).toContain(
      'The desktop app could not connect to the BranchSAN engine.',
    );

    client.setFailure(null);
    client.setState('connected');
    client.answer('system.status', systemStatus());
    await flush();
    expect(w.find('[data-testid="link-failure"]').exists()).toBe(false);
  });

  it('says how to set the first admin password when the engine has none', async () => {
    const w = render();
    client.setState('disconnected');
    client.setProblem('setup-required');
    await flush();
    const alert = text(w, 'engine-unavailable');
    expect(alert).toContain('This engine has no admin password yet');
    expect(alert).toContain('Open the console with the URL printed by branchsan serve');
    expect(alert).toContain('branchsan passwd --data DIR');
  });

  it('shows why the snapshot failed, and Try again asks once more', async () => {
    const w = render();
    client.setState('connected');
    client.fail(
      'system.status',
      new ApiError(ErrorCode.Internal, 'The database could not be read.', {
        hint: 'Check free disk space on the data directory.',
      }),
    );
    await flush();
    const panel = text(w, 'status-error');
    expect(panel).toContain('The database could not be read.');
    expect(panel).toContain('Check free disk space on the data directory.');

    // the alerts are read even though the status could not be
    expect(w.find('[data-testid="alerts"]').exists()).toBe(true);
    await w.get('[data-testid="status-error"] button').trigger('click');
    expect(client.calls.map((c) => c.method)).toEqual([
      'system.console',
      'alerts.list',
      'system.status',
    ]);
    client.answer('system.status', systemStatus());
    await flush();
    expect(w.find('[data-testid="status-error"]').exists()).toBe(false);
    expect(text(w, 'node-id')).toBe('node-7f3a9c');
  });

  it('shows how the console is served, with the certificate fingerprint to compare', async () => {
    const w = render();
    client.setState('connected');
    client.answer('system.status', systemStatus());
    const fingerprint =
      'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89';
    client.answer('system.console', {
      enabled: true,
      url: 'https://192.0.2.10:8450/',
      listening: true,
      problem: null,
      remoteAccess: true,
      tls: true,
      certificateFingerprint: fingerprint,
      certificateExpiresAt: Date.UTC(2031, 0, 1),
    });
    await flush();
    expect(text(w, 'console-url')).toBe('https://192.0.2.10:8450/');
    expect(text(w, 'console-remote')).toBe('other machines (HTTPS only)');
    expect(text(w, 'console-fingerprint')).toBe(fingerprint);
    expect(w.find('[data-testid="console-problem"]').exists()).toBe(false);
  });

  it('says why a console does not listen yet', async () => {
    const w = render();
    client.setState('connected');
    client.answer('system.status', systemStatus());
    client.answer(
      'system.console',
      loopbackConsole({
        listening: false,
        problem:
          'Cannot listen for the web console on 127.0.0.1:8450: EADDRINUSE. Another program uses that port.',
      }),
    );
    await flush();
    expect(text(w, 'console-problem')).toBe(
      'Not listening, tried again every few seconds: Cannot listen for the web console on 127.0.0.1:8450: EADDRINUSE. Another program uses that port.',
    );
  });

  it('says a console not served this run comes back only with a restart', async () => {
    const w = render();
    client.setState('connected');
    client.answer('system.status', systemStatus());
    const problem = 'The web console TLS key file can be read by others; chmod 600 it.';
    client.answer('system.console', loopbackConsole({ url: null, listening: false, problem }));
    await flush();
    expect(text(w, 'console-url')).toBe('not served');
    expect(text(w, 'console-problem')).toBe(`Not served until the engine restarts: ${problem}`);
  });

  it('says a loopback console has no TLS and shows no fingerprint', async () => {
    const w = render();
    client.setState('connected');
    client.answer('system.status', systemStatus());
    client.answer('system.console', loopbackConsole({}));
    await flush();
    expect(text(w, 'console-tls')).toBe('none (loopback only)');
    expect(w.find('[data-testid="console-fingerprint"]').exists()).toBe(false);
  });

  it('lists the active alerts, acknowledges one, and keeps the list while the link is down', async () => {
    const w = render();
    client.setState('connected');
    client.answer('system.status', systemStatus());
    await flush();
    client.answer('alerts.list', {
      alerts: [alert({ id: 7 }), threadsDownAlert()],
    });
    await flush();
    expect(text(w, 'alerts-count')).toBe('2 active');
    const items = w.findAll('[data-testid="alert"]');
    expect(items.map((i) => i.attributes('data-rule'))).toEqual([
      'volume.io-threads',
      'engine.unclean-restart',
    ]);
    expect(items[0]!.get('[data-testid="alert-severity"]').text()).toBe('Critical');
    expect(items[0]!.get('[data-testid="alert-title"]').text()).toBe(
      'Volume vol1 (namespace 1) is down: its storage threads failed',
    );
    expect(items[0]!.get('[data-testid="alert-message"]').text()).toContain('hosts keep retrying');
    // the recently closed ones follow, each saying how it ended
    expect(w.find('[data-testid="alerts-recent"]').exists()).toBe(false);
    const t = Date.UTC(2026, 10, 27, 4, 0, 0);
    // the volume's earlier failure, over before the active one (raised at 03:00) began
    const earlier = threadsDownAlert({
      id: 4,
      raisedAt: Date.UTC(2026, 10, 27, 2, 0, 0),
      clearedAt: Date.UTC(2026, 10, 27, 2, 30, 0),
    });
    client.answer('alerts.list', {
      alerts: [
        alert({ id: 5, subject: 'event 40', clearedAt: t, ackedAt: t, ackedBy: 'admin' }),
        earlier,
      ],
    });
    await flush();
    const closed = w.findAll('[data-testid="alert-recent"]');
    expect(closed.map((i) => i.attributes('data-rule'))).toEqual([
      'engine.unclean-restart',
      'volume.io-threads',
    ]);
    expect(closed[0]!.get('[data-testid="alert-recent-when"]').text()).toMatch(
      /^raised .+, closed when admin acknowledged it, .+$/,
    );
    expect(closed[1]!.get('[data-testid="alert-recent-title"]').text()).toBe(
      'Volume vol1 (namespace 1) is down: its storage threads failed',
    );
    expect(closed[1]!.get('[data-testid="alert-recent-when"]').text()).toMatch(
      /^raised .+, resolved .+$/,
    );

    await items[1]!.get('[data-testid="alert-ack"]').trigger('click');
    expect(client.calls.map((c) => [c.method, c.params])).toContainEqual(['alerts.ack', { id: 7 }]);
    client.answer('alerts.ack', alert({ id: 7, ackedAt: Date.now(), ackedBy: 'admin' }));
    await flush();
    const acked = w.findAll('[data-testid="alert"]')[1]!;
    expect(acked.get('[data-testid="alert-acked"]').text()).toMatch(/^· Acknowledged by admin at /);
    expect(acked.find('[data-testid="alert-ack"]').exists()).toBe(false);

    client.setState('disconnected');
    await flush();
    expect(w.findAll('[data-testid="alert"]')).toHaveLength(2); // last known
    expect(
      w
        .findAll('[data-testid="alert"]')[0]!
        .get('[data-testid="alert-ack"]')
        .attributes('disabled'),
    ).toBeDefined();

    client.setState('connected');
    client.answer('system.status', systemStatus());
    client.answer('alerts.list', { alerts: [] });
    await flush();
    expect(text(w, 'alerts-none')).toBe('No active alerts: nothing on this node needs attention.');
    expect(text(w, 'alerts-count')).toBe('none active');
    expect(w.findAll('[data-testid="alert-recent"]')).toHaveLength(2); // kept until read again
    client.answer('alerts.list', { alerts: [earlier] });
    await flush();
    expect(w.findAll('[data-testid="alert-recent"]')).toHaveLength(1);
  });
  it('has a screen reader say each alert raised or resolved while the page is open', async () => {
    const w = render();
    client.setState('connected');
    client.answer('system.status', systemStatus());
    await flush();
    client.answer('alerts.list', { alerts: [alert({ id: 7 })] });
    await flush();
    const region = w.get('[data-testid="alerts-announcement"]');
    expect(region.attributes('role')).toBe('status'); // polite: read after what is being said
    expect(region.text()).toBe(''); // what the list held when read is no news
    client.emit('alert.raised', threadsDownAlert());
    await flush();
    expect(region.text()).toBe(
      'New critical alert: Volume vol1 (namespace 1) is down: its storage threads failed',
    );
    client.emit('alert.cleared', alert({ id: 7, clearedAt: Date.now() }));
    await flush();
    expect(region.text()).toBe('Alert resolved: Engine restarted after an unexpected stop');
    // the clear of an alert this page does not list (superseded) is not news either
    client.emit('alert.cleared', threadsDownAlert({ id: 3, clearedAt: Date.now() }));
    await flush();
    expect(region.text()).toBe('Alert resolved: Engine restarted after an unexpected stop');
  });

  it('with more alerts active than the engine lists, says so and where to see them all', async () => {
    const w = render();
    client.setState('connected');
    // an engine on a data directory of its own (npm start's, one with a space)
    client.answer('system.status', systemStatus({ dataDir: "/home/ann/branch lab's" }));
    await flush();
    const many = Array.from({ length: 1000 }, (_, i) =>
      alert({ id: 2000 - i, subject: `event ${2000 - i}` }),
    );
    client.answer('alerts.list', { alerts: many });
    await flush();
    expect(text(w, 'alerts-count')).toBe('1000+ active');
    const note = text(w, 'alerts-truncated');
    expect(note).toContain('the oldest are not shown');
    // before: no word on how to see the others
    // this engine's directory, quoted for the shell; before, always the service's
    expect(note).toContain(
      "branchsan events --data '/home/ann/branch lab'\\''s' --type 'alert.*' --limit 10000",
    );
  });
});
