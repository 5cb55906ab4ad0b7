// @vitest-environment happy-dom
import { beforeEach, describe, expect, it } from 'vitest';
import { ApiError, ErrorCode, type Alert } from '../../../../contract/api.js';
import { closedInWords } from '../../../../contract/alert-words.js';
import { useAlertsStore } from '../../../../renderer/src/stores/alerts.js';
import { FakeClient, flush, installFake } from '../support/fake-client.js';
import { alert } from '../support/fixtures.js';

describe('useAlertsStore', () => {
  let client: FakeClient;

  beforeEach(() => {
    client = new FakeClient('connecting');
    installFake(client);
  });

  const ids = (s: ReturnType<typeof useAlertsStore>) => s.active.map((a) => a.id);

  /**
   * The store once the link is up and the engine answered the first list with `answer`,
   * and the list of closed alerts that follows it with `closed`.
   */
  async function listed(answer: { alerts: Alert[] }, closed: Alert[] = []) {
    const store = useAlertsStore();
    client.setState('connected');
    client.answer('alerts.list', answer);
    await flush();
    client.answer('alerts.list', { alerts: closed });
    await flush();
    return store;
  }

  const recentIds = (s: ReturnType<typeof useAlertsStore>) => s.recent.map((a) => a.id);

  it('lists the active alerts once the link is up, most severe and then newest first', async () => {
    const store = useAlertsStore();
    expect(client.calls).toHaveLength(0);
    client.setState('connected');
    expect(client.calls.map((c) => [c.method, c.params])).toEqual([
      ['alerts.list', { active: true, limit: 1000 }],
    ]);
    client.answer('alerts.list', {
      alerts: [
        alert({ id: 1, subject: 'a', severity: 'warning', raisedAt: 1000 }),
        alert({ id: 2, subject: 'b', severity: 'critical', raisedAt: 500 }),
        alert({ id: 3, subject: 'c', severity: 'warning', raisedAt: 2000 }),
      ],
    });
    await flush();
    expect(store.loaded).toBe(true);
    expect(ids(store)).toEqual([2, 3, 1]);
    expect(store.truncated).toBe(false);
  });

  it('follows raised, acknowledged and cleared alerts as the engine pushes them', async () => {
    const store = await listed({ alerts: [] });
    client.emit('alert.raised', alert({ id: 5 }));
    expect(ids(store)).toEqual([5]);
    client.emit('alert.acknowledged', alert({ id: 5, ackedAt: 9000, ackedBy: 'admin' }));
    expect(store.active[0]!.ackedBy).toBe('admin');
    client.emit('alert.cleared', alert({ id: 5, clearedAt: 9500 }));
    expect(ids(store)).toEqual([]);
  });

  it('a severity change replaces the alert, whichever of its two events comes first', async () => {
    const store = await listed({ alerts: [alert({ id: 10, severity: 'error' })] });
    // the engine's order: the old one cleared as superseded, then the new one raised
    client.emit('alert.cleared', alert({ id: 10, severity: 'error', clearedAt: 1 }));
    client.emit('alert.raised', alert({ id: 11, severity: 'critical' }));
    expect(store.active.map((a) => [a.id, a.severity])).toEqual([[11, 'critical']]);
    // and the other order: a late clear of the old one leaves the new one alone
    client.emit('alert.raised', alert({ id: 12, severity: 'error' }));
    client.emit('alert.cleared', alert({ id: 11, severity: 'critical', clearedAt: 2 }));
    expect(store.active.map((a) => [a.id, a.severity])).toEqual([[12, 'error']]);
  });

  it('an alert delivered before it could be stored (id 0) takes its id once stored', async () => {
    const disk = { rule: 'capacity', subject: '/var/lib/branchsan' };
    // a stored warning, then (disk full) its critical successor, delivered unstored
    const store = await listed({ alerts: [alert({ id: 1, ...disk, severity: 'warning' })] });
    client.emit('alert.raised', alert({ id: 0, ...disk, severity: 'critical' }));
    expect(store.active.map((a) => [a.id, a.severity])).toEqual([[0, 'critical']]);
    await store.acknowledge(store.active[0]!); // cannot be acknowledged yet: no call
    expect(client.calls).toHaveLength(0);
    // space is back: the warning's clear comes late, then the critical one is stored
    client.emit('alert.cleared', alert({ id: 1, ...disk, severity: 'warning', clearedAt: 5 }));
    expect(store.active.map((a) => [a.id, a.severity])).toEqual([[0, 'critical']]);
    client.emit('alert.stored', alert({ id: 2, ...disk, severity: 'critical' }));
    expect(store.active.map((a) => [a.id, a.severity])).toEqual([[2, 'critical']]);
    client.emit('alert.cleared', alert({ id: 2, ...disk, severity: 'critical', clearedAt: 9 }));
    expect(ids(store)).toEqual([]);
  });

  it('an unstored alert that ends before it is stored goes with its own clear', async () => {
    const store = await listed({ alerts: [] });
    client.emit('alert.raised', alert({ id: 0, rule: 'capacity', subject: '/data' }));
    client.emit(
      'alert.cleared',
      alert({ id: 0, rule: 'capacity', subject: '/data', clearedAt: 3 }),
    );
    expect(ids(store)).toEqual([]);
    expect(store.recent.map((a) => [a.id, a.subject])).toEqual([[0, '/data']]);
  });

  it('a list read while the disk is full keeps the newest alert of a pair: the unstored one', async () => {
    const store = useAlertsStore();
    client.setState('connected');
    const disk = { rule: 'capacity', subject: '/data' };
    client.answer('alerts.list', {
      alerts: [
        alert({ id: 0, ...disk, severity: 'critical' }),
        alert({ id: 4, ...disk, severity: 'warning' }), // its clear could not be stored
      ],
    });
    await flush();
    expect(store.active.map((a) => [a.id, a.severity])).toEqual([[0, 'critical']]);
  });

  it('keeps what was pushed while the list was being fetched', async () => {
    const store = useAlertsStore();
    client.setState('connected');
    client.emit('alert.raised', alert({ id: 21, subject: 'new' }));
    client.emit('alert.cleared', alert({ id: 20, subject: 'old', clearedAt: 3 }));
    // the answer was read before those events: it still has 20 and lacks 21
    client.answer('alerts.list', { alerts: [alert({ id: 20, subject: 'old' })] });
    await flush();
    expect(ids(store)).toEqual([21]);
  });

  it('acknowledges through the engine, and says why when it refuses', async () => {
    const store = await listed({ alerts: [alert({ id: 7 })] });
    const a = store.active[0]!;
    const first = store.acknowledge(a);
    expect(store.acking.has(7)).toBe(true);
    void store.acknowledge(a); // a second click while the first is in flight: no second call
    expect(client.calls.map((c) => [c.method, c.params])).toEqual([['alerts.ack', { id: 7 }]]);
    client.fail(
      'alerts.ack',
      new ApiError(ErrorCode.Unavailable, 'The database is read-only.', {
        hint: 'Check the data disk.',
      }),
    );
    await first;
    expect(store.ackErrors.get(7)).toEqual({
      message: 'The database is read-only.',
      hint: 'Check the data disk.',
    });
    expect(store.active[0]!.ackedAt).toBeNull();

    const again = store.acknowledge(a);
    client.answer('alerts.ack', alert({ id: 7, ackedAt: 42, ackedBy: 'admin' }));
    await again;
    expect(store.ackErrors.has(7)).toBe(false);
    expect(store.active[0]!.ackedBy).toBe('admin');
    // an incident closes on acknowledgement: the engine answers it cleared
    const incident = alert({ id: 8, subject: 'event 42' });
    client.emit('alert.raised', incident);
    const closing = store.acknowledge(incident);
    client.answer('alerts.ack', { ...incident, ackedAt: 50, ackedBy: 'admin', clearedAt: 50 });
    await closing;
    expect(ids(store)).toEqual([7]);
    // listed as closed by the answer alone, and once when the engine's clear follows
    expect(store.recent.map((a) => [a.id, store.closedHow(a)])).toEqual([
      [8, { kind: 'acknowledged', by: 'admin' }],
    ]);
    client.emit('alert.cleared', { ...incident, ackedAt: 50, ackedBy: 'admin', clearedAt: 50 });
    expect(recentIds(store)).toEqual([8]);
  });

  it('says why the list could not be read, and reads it again after a reconnect', async () => {
    const store = useAlertsStore();
    client.setState('connected');
    client.fail('alerts.list', new ApiError(ErrorCode.Internal, 'The database could not be read.'));
    await flush();
    expect(store.error?.message).toBe('The database could not be read.');
    expect(store.loaded).toBe(false);
    client.setState('disconnected');
    client.setState('connected');
    client.answer('alerts.list', { alerts: [alert({ id: 3 })] });
    await flush();
    expect(store.error).toBeNull();
    expect(ids(store)).toEqual([3]);
  });

  it('forgets an acknowledgement error when the list is read again, and a list lost with the link is no error', async () => {
    const store = await listed({ alerts: [alert({ id: 7 })] });
    const acking = store.acknowledge(store.active[0]!);
    client.fail('alerts.ack', new Error('The connection to the engine was lost.'));
    await acking;
    expect(store.ackErrors.has(7)).toBe(true);
    // the link drops while the next list is asked for: the page already says so
    client.setState('disconnected');
    client.setState('connected');
    client.setState('disconnected');
    client.fail('alerts.list', new Error('The connection to the engine was lost.'));
    await flush();
    expect(store.error).toBeNull();
    client.setState('connected');
    client.answer('alerts.list', { alerts: [alert({ id: 7, ackedAt: 3, ackedBy: 'admin' })] });
    await flush();
    expect(store.ackErrors.size).toBe(0); // the ack had reached the engine after all
    expect(store.active[0]!.ackedBy).toBe('admin');
  });

  describe('recently closed alerts', () => {
    it('are read after the active ones, the last closed first, and follow pushed clears', async () => {
      const store = useAlertsStore();
      client.setState('connected');
      client.answer('alerts.list', { alerts: [alert({ id: 9, subject: 'open' })] });
      await flush();
      expect(store.loaded).toBe(true); // the active list does not wait for the history
      expect(store.recentLoaded).toBe(false);
      expect(client.calls.map((c) => [c.method, c.params])).toEqual([
        ['alerts.list', { active: false, limit: 10 }],
      ]);
      // a clear pushed while the history is read is kept, and not listed twice
      client.emit('alert.cleared', alert({ id: 9, subject: 'open', clearedAt: 300 }));
      client.answer('alerts.list', {
        alerts: [
          alert({ id: 9, subject: 'open', clearedAt: 300 }),
          alert({ id: 4, subject: 'b', clearedAt: 200 }),
          alert({ id: 6, subject: 'a', clearedAt: 100 }),
        ],
      });
      await flush();
      expect(store.recentLoaded).toBe(true);
      expect(recentIds(store)).toEqual([9, 4, 6]);
      expect(ids(store)).toEqual([]);
      // at most ten, the oldest closed go
      for (let id = 20; id < 30; id++) {
        client.emit('alert.raised', alert({ id, subject: `s${id}` }));
        client.emit('alert.cleared', alert({ id, subject: `s${id}`, clearedAt: 1000 + id }));
      }
      expect(recentIds(store)).toEqual([29, 28, 27, 26, 25, 24, 23, 22, 21, 20]);
    });

    it('say how each ended: resolved, closed by its acknowledgement, or replaced', async () => {
      const store = await listed({ alerts: [] });
      const disk = { rule: 'capacity', subject: '/data' };
      client.emit('alert.raised', alert({ id: 1, ...disk, severity: 'warning', raisedAt: 10 }));
      // the engine clears the warning and raises its critical successor at the same moment
      client.emit(
        'alert.cleared',
        alert({ id: 1, ...disk, severity: 'warning', raisedAt: 10, clearedAt: 20 }),
      );
      client.emit('alert.raised', alert({ id: 2, ...disk, severity: 'critical', raisedAt: 20 }));
      client.emit(
        'alert.cleared',
        alert({ id: 2, ...disk, severity: 'critical', raisedAt: 20, clearedAt: 30 }),
      );
      const incident = { rule: 'engine.restart', subject: 'boot 1' };
      client.emit('alert.raised', alert({ id: 3, ...incident, raisedAt: 40 }));
      client.emit(
        'alert.cleared',
        alert({ id: 3, ...incident, raisedAt: 40, ackedAt: 50, ackedBy: 'admin', clearedAt: 50 }),
      );
      expect(store.recent.map((a) => [a.id, store.closedHow(a)])).toEqual([
        [3, { kind: 'acknowledged', by: 'admin' }],
        [2, { kind: 'resolved' }],
        [1, { kind: 'replaced', by: expect.objectContaining({ id: 2, severity: 'critical' }) }],
      ]);
      // on a full disk the critical successor is raised unstored first, and the warning
      // closed (superseded) only once the database takes it: replaced all the same
      const fs = { rule: 'capacity', subject: '/var' };
      client.emit('alert.raised', alert({ id: 0, ...fs, severity: 'critical', raisedAt: 60 }));
      client.emit(
        'alert.cleared',
        alert({ id: 4, ...fs, severity: 'warning', raisedAt: 55, clearedAt: 70 }),
      );
      client.emit('alert.stored', alert({ id: 5, ...fs, severity: 'critical', raisedAt: 60 }));
      expect(store.closedHow(store.recent[0]!)).toEqual({
        kind: 'replaced',
        by: expect.objectContaining({ id: 5, severity: 'critical' }),
      });
      // an alert of the pair raised again after one resolved did not replace it
      client.emit('alert.raised', alert({ id: 6, ...disk, severity: 'warning', raisedAt: 80 }));
      expect(store.closedHow(store.recent.find((a) => a.id === 2)!)).toEqual({ kind: 'resolved' });
    });

    it('say what the engine stored about how each ended, even with its successor out of view', async () => {
      const store = await listed(
        { alerts: [alert({ id: 9, rule: 'capacity', subject: '/data', raisedAt: 15 })] },
        [
          // replaced long ago: its successor closed too, and is not among these
          alert({
            id: 2,
            rule: 'capacity',
            subject: '/var',
            raisedAt: 1,
            clearedAt: 5,
            clearedWhy: 'superseded',
          }),
          // resolved, though an alert of its pair was active when it closed (the engine knows)
          alert({
            id: 3,
            rule: 'capacity',
            subject: '/data',
            raisedAt: 2,
            clearedAt: 20,
            clearedWhy: 'resolved',
          }),
        ],
      );
      expect(store.recent.map((a) => [a.id, store.closedHow(a)])).toEqual([
        [3, { kind: 'resolved' }],
        [2, { kind: 'replaced', by: null }],
      ]);
      expect(closedInWords(store.closedHow(store.recent[1]!), 'then')).toBe(
        'replaced by an alert of another severity, then',
      );
    });

    it('keep a closed alert the database never stored when the list is read again', async () => {
      const store = await listed({ alerts: [] });
      const unstored = { id: 0, rule: 'capacity', subject: '/data', raisedAt: 5 };
      client.emit('alert.raised', alert(unstored));
      client.emit('alert.cleared', alert({ ...unstored, clearedAt: 9 }));
      client.setState('disconnected');
      client.setState('connected');
      client.answer('alerts.list', { alerts: [] });
      await flush();
      client.answer('alerts.list', { alerts: [alert({ id: 3, clearedAt: 4 })] });
      await flush();
      expect(store.recent.map((a) => [a.id, a.clearedAt])).toEqual([
        [0, 9],
        [3, 4],
      ]);
    });

    it('a history that cannot be read leaves the active list shown and says nothing', async () => {
      const store = useAlertsStore();
      client.setState('connected');
      client.answer('alerts.list', { alerts: [alert({ id: 9 })] });
      await flush();
      client.fail(
        'alerts.list',
        new ApiError(ErrorCode.Internal, 'The database could not be read.'),
      );
      await flush();
      expect(store.error).toBeNull();
      expect(ids(store)).toEqual([9]);
      expect(store.recentLoaded).toBe(false);
    });
  });
});
