/**
 * Events, alerts and notifications as one part the composition root starts and
 * stops: every recorded event is pushed to UI clients and handed to the notifier;
 * the alert rules run every few seconds over a fresh snapshot; retention runs every
 * few minutes. Nothing here blocks the engine: deliveries are queued, evaluation is
 * one short pass, and a failure in any of it is logged and retried next round.
 */
import type { EventData, EventName } from '../../../contract/api.js';
import type {
  Alert,
  EngineSettings,
  EventRecord,
  SettingsSetParams,
} from '../../../contract/events.js';
import { onEventRecorded, recordEvent, type Db } from '../persistence/db.js';
import type { DbReader } from '../persistence/db-reader.js';
import { betweenBatches, type WalCheckpointer } from '../persistence/wal-checkpointer.js';
import { storageProblem, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { AckNotStored, AlertEngine } from './alert-engine.js';
import type { QueueOptions } from './delivery/queue.js';
import { EventStore, type EventQuery } from './event-store.js';
import type { AlertInputs, Rule } from './rules.js';
import { defaultRules } from './rules.js';
import { Notifier, type Channel } from './notifier.js';
import {
  SecretsNotInPlace,
  SettingsStore,
  describeNotInPlace,
  describeResets,
  notInPlaceHint,
  type SecretFiles,
  type SecretNotInPlace,
} from './settings.js';
import { WatchedHostStore } from './watched-host-store.js';

export type Publish = <E extends EventName>(name: E, data: EventData<E>) => void;

export interface EventsServiceOptions {
  db: Db;
  nodeId: string;
  version: string;
  publish: Publish;
  secrets: SecretFiles;
  /** One snapshot for the rules; the composition root binds it to the live target. */
  collect: () => Promise<AlertInputs>;
  log: Logger;
  rules?: Rule[];
  now?: () => number;
  /** How often the rules run (default 5 s). */
  intervalMs?: number;
  syslogCommand?: string[];
  queue?: Partial<QueueOptions>;
  /** Reads event pages off the engine's thread (absent: on the engine's connection). */
  reader?: DbReader;
  /** Checkpoints the WAL off the engine's thread; retention waits for it between batches. */
  checkpointer?: Pick<WalCheckpointer, 'room'>;
  /**
   * Guards retention by age against a wall clock stepped ahead (a bad RTC at boot, a
   * wrong NTP answer, a manual change): `monotonicSec` is a clock such steps do not move
   * (the engine: the time since boot), `lastEventAt` the newest event's stamp when the
   * database was opened (null: none). When the wall clock runs more than CLOCK_STEP_MS
   * ahead of it, at start or between two retention passes, retention by age waits
   * CLOCK_SETTLE_MS of the monotonic clock: a clock a year ahead at boot, set right by
   * NTP minutes later, otherwise deleted the whole event log and every closed alert at
   * the start's pass. The count limit holds meanwhile. Absent: the clock is trusted.
   */
  clock?: { monotonicSec: () => number; lastEventAt: number | null };
  /**
   * The newest event's number when the engine opened the database (0: none): the events
   * its start recorded before start() (a volume that cannot be opened, a console or scrape
   * token file that cannot be used) are delivered at start(), as the later ones are.
   * Absent: none are.
   */
  deliverAfterId?: number;
}

const PRUNE_EVERY_MS = 10 * 60_000;
/** The wall clock ran this much further than the monotonic one: a step ahead. */
export const CLOCK_STEP_MS = 5 * 60_000;
/** Retention by age waits this long (monotonic) after a step ahead, as the metric history's does. */
export const CLOCK_SETTLE_MS = 3600_000;

export class EventsService {
  readonly events: EventStore;
  readonly settings: SettingsStore;
  readonly alerts: AlertEngine;
  private readonly notifier: Notifier;
  private readonly now: () => number;
  private unsubscribe?: () => void;
  private evalTimer?: NodeJS.Timeout;
  private pruneTimer?: NodeJS.Timeout;
  private evaluating = false;
  private pruning: Promise<void> | null = null;
  private closed = false;
  /** The wall and monotonic clocks (ms) at the last retention pass, for clockSettled. */
  private lastWall: number | null = null;
  private lastMono = 0;
  private settledAt = -Infinity;

  constructor(private readonly o: EventsServiceOptions) {
    this.now = o.now ?? Date.now;
    if (o.clock) {
      this.lastWall = o.clock.lastEventAt;
      this.lastMono = o.clock.monotonicSec() * 1000;
    }
    this.events = new EventStore(o.db, o.reader);
    this.settings = new SettingsStore(o.db, o.secrets);
    this.alerts = new AlertEngine(
      o.db,
      o.rules ?? defaultRules({ watchedHosts: new WatchedHostStore(o.db, o.log) }),
      () => this.settings.stored().alerts,
      {
        raised: (a) => o.publish('alert.raised', a),
        cleared: (a) => o.publish('alert.cleared', a),
        acknowledged: (a) => o.publish('alert.acknowledged', a),
        stored: (a) => o.publish('alert.stored', a),
      },
      o.log,
    );
    this.notifier = new Notifier({
      settings: this.settings,
      nodeId: o.nodeId,
      version: o.version,
      log: o.log,
      report: (ev) => this.report(ev),
      ...(o.syslogCommand ? { syslogCommand: o.syslogCommand } : {}),
      ...(o.queue ? { queue: o.queue } : {}),
    });
  }

  /** Listens for recorded events; the first rule pass runs right after the current start-up step. */
  start(): void {
    this.unsubscribe = onEventRecorded(this.o.db, (ev) => this.onRecorded(ev));
    this.deliverEarlyEvents();
    this.reportSettingsResets();
    // secret changes stored by an earlier run whose files could not be put in place then
    try {
      const failed = this.settings.applyPending();
      if (failed.length > 0) this.secretsNotInPlace(failed, 'start');
    } catch (err) {
      this.o.log.warn('cannot check for stored secret changes not in effect', { err });
    }
    void this.prune();
    const interval = this.o.intervalMs ?? 5_000;
    // a chain of timeouts, not an interval: a slow pass (statfs on a hung NFS mount) never overlaps the next
    const tick = async () => {
      await this.evaluate();
      if (this.closed) return;
      this.evalTimer = setTimeout(() => void tick(), interval);
      this.evalTimer.unref();
    };
    this.evalTimer = setTimeout(() => void tick(), 0);
    this.evalTimer.unref();
    this.pruneTimer = setInterval(() => void this.prune(), PRUNE_EVERY_MS);
    this.pruneTimer.unref();
  }

  /** One rule pass now (tests and the first pass at start). */
  async evaluate(): Promise<void> {
    if (this.evaluating || this.closed) return;
    this.evaluating = true;
    try {
      const inputs = await this.o.collect();
      if (this.closed) return; // the database may be closing
      this.alerts.evaluate({ ...inputs, delivery: this.notifier.state() }, this.now());
    } catch (err) {
      this.o.log.warn('alert evaluation failed; retrying next round', { err });
    } finally {
      this.evaluating = false;
    }
  }

  /**
   * Retention (at start, then every 10 minutes), in batches with the engine's thread
   * free between them (EventStore.prune). One run at a time: while one is going (a
   * lowered maxEvents on a large log), this resolves when it ends.
   */
  prune(): Promise<void> {
    this.pruning ??= this.pruneNow().finally(() => (this.pruning = null));
    return this.pruning;
  }

  private async pruneNow(): Promise<void> {
    try {
      const s = this.settings.stored().events;
      // a wall clock just stepped ahead deletes nothing by age (the count limit holds)
      const maxAge = this.clockSettled(this.now()) ? s.retentionDays * 24 * 3600_000 : Infinity;
      const n = await this.events.prune(this.now(), maxAge, s.maxEvents, {
        stopped: () => this.closed,
        pause: () => betweenBatches(this.o.checkpointer),
      });
      if (this.closed) return; // the database may be closing
      // closed alerts: as many as events at most (each has two events or more)
      const m = await this.alerts.store.prune(this.now(), maxAge, s.maxEvents, {
        stopped: () => this.closed,
        pause: () => betweenBatches(this.o.checkpointer),
        ...(this.o.reader ? { reader: this.o.reader } : {}),
      });
      if (this.closed) return;
      if (n + m > 0) this.o.log.info('old events pruned', { events: n, alerts: m });
    } catch (err) {
      if (!this.closed) this.o.log.warn('event retention failed; retrying later', { err });
    }
  }

  /**
   * Whether retention by age may trust the wall clock at `now`: not within
   * CLOCK_SETTLE_MS after it stepped ahead of the monotonic clock (see options.clock).
   */
  private clockSettled(now: number): boolean {
    if (!this.o.clock) return true;
    const mono = this.o.clock.monotonicSec() * 1000;
    if (this.lastWall !== null && now - this.lastWall - (mono - this.lastMono) > CLOCK_STEP_MS)
      this.settledAt = mono + CLOCK_SETTLE_MS;
    this.lastWall = now;
    this.lastMono = mono;
    return mono >= this.settledAt;
  }

  listEvents(q: EventQuery) {
    return this.events.list(q);
  }

  /**
   * Newest first; active alerts the database could not store yet (id 0) come first, so
   * a console that reads the list while the data disk is full still shows them.
   */
  listAlerts(active: boolean | undefined, limit: number): Alert[] {
    const unstored = active === false ? [] : this.alerts.unstoredAlerts();
    return [...unstored, ...this.alerts.store.list(active, limit)].slice(0, limit);
  }

  /**
   * The audit row and the acknowledgement are one transaction: when the data disk cannot
   * take them, nothing is acknowledged and the error says so (before, the alert was
   * acknowledged and the call still failed).
   */
  acknowledge(id: number, actor: string): Alert {
    let a: Alert | undefined;
    try {
      a = this.alerts.acknowledge(id, actor, this.now(), () =>
        this.audit(actor, 'alerts.ack', { id }),
      );
    } catch (err) {
      if (!(err instanceof AckNotStored)) throw err; // acknowledged; a later step failed
      const why = storageProblem(err.cause);
      if (!why) throw err.cause;
      throw new UserError(
        `The alert was not acknowledged: ${why}, so the engine cannot record who acknowledged it.`,
        "Free space on the data directory's filesystem (or make it writable), then acknowledge it again.",
        'unavailable',
      );
    }
    if (!a)
      throw new UserError(
        `There is no alert ${id}.`,
        'List the alerts for their ids (`branchsan alerts`, or refresh the console).',
        'not-found',
        'id',
      );
    return a;
  }

  getSettings(): EngineSettings {
    return this.settings.view();
  }

  setSettings(p: SettingsSetParams, actor: string): EngineSettings {
    // the audit says which secrets changed, never their values
    const redacted = structuredClone(p) as Record<string, Record<string, unknown> | undefined>;
    if (redacted.smtp?.password !== undefined)
      redacted.smtp.password = redacted.smtp.password === null ? 'deleted' : 'set';
    if (redacted.webhook?.secret !== undefined)
      redacted.webhook.secret = redacted.webhook.secret === null ? 'deleted' : 'set';
    // the audit row is written with the change, or neither is
    let view: EngineSettings;
    try {
      view = this.settings.update(p, () => this.audit(actor, 'settings.set', redacted));
    } catch (err) {
      if (!(err instanceof SecretsNotInPlace)) throw err;
      // stored, a secret of it not in effect: the rest of the change is
      this.secretsNotInPlace(err.failed, 'settings.set');
      this.settingsChanged(p);
      throw err;
    }
    this.settingsChanged(p);
    return view;
  }

  /** A corrected channel delivers what waits at once, not after the backoff; one switched off drops it. */
  private settingsChanged(p: SettingsSetParams): void {
    if (p.smtp) this.notifier.settingsChanged('smtp');
    if (p.webhook) this.notifier.settingsChanged('webhook');
  }

  /** Secret changes stored but not in effect: an error event that says what to do. */
  private secretsNotInPlace(failed: SecretNotInPlace[], when: 'settings.set' | 'start'): void {
    this.o.log.warn('stored secret changes are not in effect', {
      secrets: failed.map((f) => f.name),
      errors: failed.map((f) => String((f.error as Error).message ?? f.error)),
    });
    this.report({
      type: 'settings.secret-not-in-place',
      severity: 'error',
      message:
        `${when === 'start' ? 'Saved settings are not fully in effect' : 'The settings were saved'}, but ${describeNotInPlace(failed)}. ` +
        notInPlaceHint(failed),
      data: { secrets: failed.map((f) => f.name) },
    });
  }

  /** Records a test event that every enabled channel delivers whatever its level. */
  sendTest(actor: string): { channels: ('ui' | Channel)[]; eventId: number } {
    const id = recordEvent(this.o.db, {
      type: 'notifications.test',
      severity: 'warning',
      message: `Test notification requested by ${actor}. If you read this, BranchSAN alerts reach you here; nothing needs to be done.`,
      data: { test: true, title: 'Test notification' },
    });
    const channels = this.lastChannels.get(id) ?? [];
    this.lastChannels.delete(id);
    // queued behind messages waiting out a backoff: those are tried now, then the test
    for (const c of channels) if (c !== 'syslog') this.notifier.retryNow(c);
    return { channels: ['ui', ...channels], eventId: id };
  }

  async stop(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.evalTimer);
    clearInterval(this.pruneTimer);
    await this.pruning; // ends after the batch it is in
    // mail and webhook messages left in their (in-memory) queues are lost: said in the
    // log, and in the event log while the database is open (the engine closes it after)
    for (const lost of await this.notifier.close()) {
      this.o.log.warn('notifications not sent: the engine stopped', {
        channel: lost.data?.channel,
        events: lost.data?.eventIds,
        count: lost.data?.count,
      });
      if (!this.o.db.open) continue;
      try {
        recordEvent(this.o.db, lost);
      } catch (err) {
        this.o.log.warn('cannot record a delivery event', { err, type: lost.type });
      }
    }
    this.unsubscribe?.();
  }

  private readonly lastChannels = new Map<number, Channel[]>();

  private onRecorded(ev: EventRecord): void {
    this.o.publish('event.recorded', ev);
    if (this.closed) return;
    const channels = this.notifier.deliver(ev);
    if (ev.type === 'notifications.test') this.lastChannels.set(ev.id, channels);
  }

  private report(ev: {
    type: string;
    severity: EventRecord['severity'];
    message: string;
    data?: Record<string, unknown>;
  }): void {
    if (this.closed) return;
    try {
      recordEvent(this.o.db, ev);
    } catch (err) {
      this.o.log.warn('cannot record a delivery event', { err, type: ev.type });
    }
  }

  /** The events of this start recorded before start() (options.deliverAfterId), in order. */
  private deliverEarlyEvents(): void {
    if (this.o.deliverAfterId === undefined) return;
    let early: EventRecord[];
    try {
      early = this.events.after(this.o.deliverAfterId);
    } catch (err) {
      this.o.log.warn('events of the start not delivered: they cannot be read back', { err });
      return;
    }
    for (const ev of early) this.onRecorded(ev);
  }

  /** Stored settings this version refused (a downgrade, say): told once per start. */
  private reportSettingsResets(): void {
    const resets = this.settings.resets();
    if (resets.length === 0) return;
    const fields = resets.map((r) => r.field);
    this.o.log.warn('some stored settings are not valid in this version; replaced alone', {
      fields,
    });
    this.report({
      type: 'settings.replaced',
      severity: 'warning',
      message: describeResets(resets),
      data: { fields },
    });
  }

  private audit(actor: string, action: string, details: unknown): void {
    this.o.db
      .prepare('INSERT INTO audit (ts, actor, action, details) VALUES (?, ?, ?, ?)')
      .run(this.now(), actor, action, JSON.stringify(details));
  }
}
