// @vitest-environment happy-dom
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiError, ErrorCode } from '../../../../contract/api.js';
import { useConnectionStore } from '../../../../renderer/src/stores/connection.js';
import { useSystemStore } from '../../../../renderer/src/stores/system.js';
import { FakeClient, flush, installFake } from '../support/fake-client.js';
import { systemStatus } from '../support/fixtures.js';

describe('useSystemStore', () => {
  let client: FakeClient;

  beforeEach(() => {
    client = new FakeClient('connecting');
    installFake(client);
  });
  afterEach(() => vi.useRealTimers());

  it('waits for the link, then hydrates from one system.status snapshot', async () => {
    const store = useSystemStore();
    expect(client.calls).toHaveLength(0);
    expect(store.status).toBeNull();

    client.setState('connected');
    expect(client.calls.map((c) => c.method)).toEqual(['system.status']);
    expect(client.calls[0]!.params).toEqual({});
    expect(store.loading).toBe(true);

    client.answer('system.status', systemStatus());
    await flush();
    expect(store.status?.nodeId).toBe('node-7f3a9c');
    expect(store.nodeName).toBe('branch-sto-a');
    expect(store.uptimeSec).toBe(7385);
    expect(store.loading).toBe(false);
    expect(store.error).toBeNull();
  });

  it('hydrates at once when the link is already up', () => {
    client.setState('connected');
    useSystemStore();
    expect(client.calls.map((c) => c.method)).toEqual(['system.status']);
  });

  it('advances uptime from pushed heartbeats only, never from a local timer', async () => {
    vi.useFakeTimers();
    client.setState('connected');
    const store = useSystemStore();
    client.answer('system.status', systemStatus({ uptimeSec: 100 }));
    await vi.advanceTimersByTimeAsync(0);

    await vi.advanceTimersByTimeAsync(5_000);
    expect(store.uptimeSec).toBe(100);

    client.emit('system.heartbeat', { at: 1_700_000_001_000, uptimeSec: 101 });
    vi.setSystemTime(1_800_000_000_000); // this browser's clock is not the engine's
    client.emit('system.heartbeat', { at: 1_700_000_002_000, uptimeSec: 102 });
    expect(store.uptimeSec).toBe(102);
    // when it arrived here, so it reads right beside the viewer's own clock
    expect(store.lastHeartbeatAt).toBe(1_800_000_000_000);
    expect(store.heartbeats).toBe(2);
  });

  it('keeps a heartbeat that overtook the snapshot it raced with', async () => {
    client.setState('connected');
    const store = useSystemStore();
    client.emit('system.heartbeat', { at: 2_000, uptimeSec: 51 });
    client.answer('system.status', systemStatus({ uptimeSec: 50 }));
    await flush();
    expect(store.uptimeSec).toBe(51);
  });

  it('re-hydrates after a reconnect and takes the new engine run as the truth', async () => {
    client.setState('connected');
    const store = useSystemStore();
    client.answer('system.status', systemStatus({ uptimeSec: 900 }));
    await flush();
    client.emit('system.heartbeat', { at: 1, uptimeSec: 901 });

    client.setState('disconnected');
    expect(store.connectionState).toBe('disconnected');
    expect(store.status?.uptimeSec).toBe(900); // last-known values stay for the page

    client.setState('connected');
    expect(client.calls.map((c) => c.method)).toEqual(['system.status']);
    client.answer('system.status', systemStatus({ uptimeSec: 3, pid: 5151 }));
    await flush();
    expect(store.uptimeSec).toBe(3); // the engine restarted: a smaller uptime is right
    expect(store.status?.pid).toBe(5151);
  });

  it('reports a failed snapshot with its hint, and a retry clears it', async () => {
    client.setState('connected');
    const store = useSystemStore();
    client.fail(
      'system.status',
      new ApiError(ErrorCode.Unavailable, 'Not connected to the BranchSAN engine.', {
        hint: 'The console reconnects by itself.',
      }),
    );
    await flush();
    expect(store.error).toEqual({
      message: 'Not connected to the BranchSAN engine.',
      hint: 'The console reconnects by itself.',
    });
    expect(store.loading).toBe(false);

    void store.hydrate();
    client.answer('system.status', systemStatus());
    await flush();
    expect(store.error).toBeNull();
  });

  it('does not show the last link’s failure while a new snapshot is on its way', async () => {
    client.setState('connected');
    const store = useSystemStore();
    client.fail(
      'system.status',
      new ApiError(ErrorCode.Unavailable, 'Not connected to the BranchSAN engine.'),
    );
    await flush();
    expect(store.error).not.toBeNull();
    client.setState('disconnected');
    client.setState('connected'); // reconnected: a new snapshot is asked for
    expect(store.loading).toBe(true);
    expect(store.error).toBeNull(); // before: "Not connected" under "Connected" until the answer
    client.answer('system.status', systemStatus());
    await flush();
    expect(store.status).not.toBeNull();
  });

  it('ignores the reply to a request that a newer one replaced', async () => {
    client.setState('connected');
    const store = useSystemStore();
    void store.hydrate();
    expect(client.calls).toHaveLength(2);
    client.calls[1]!.resolve(systemStatus({ hostname: 'newer' }));
    await flush();
    client.calls[0]!.resolve(systemStatus({ hostname: 'older' }));
    await flush();
    expect(store.status?.hostname).toBe('newer');
  });

  it('ignores malformed heartbeats', () => {
    const store = useSystemStore();
    client.emit('system.heartbeat', { at: 1, uptimeSec: 'soon' } as never);
    expect(store.uptimeSec).toBeNull();
    expect(store.heartbeats).toBe(0);
  });

  it('unsubscribes from engine events when disposed', () => {
    const store = useSystemStore();
    expect(client.listenerCount('system.heartbeat')).toBe(1);
    store.$dispose();
    expect(client.listenerCount('system.heartbeat')).toBe(0);
  });
});

describe('useConnectionStore', () => {
  it('follows the client state and problem', () => {
    const client = new FakeClient('connecting', 'bridge');
    installFake(client);
    const connection = useConnectionStore();
    expect(connection.state).toBe('connecting');
    expect(connection.transport).toBe('bridge');
    expect(connection.everConnected).toBe(false);

    client.setState('connected');
    client.setState('disconnected');
    expect(connection.state).toBe('disconnected');
    expect(connection.everConnected).toBe(true);

    client.setProblem('signed-out');
    expect(connection.problem).toBe('signed-out');
  });
});
