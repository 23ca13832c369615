import * as wf from '@temporalio/workflow';
import type { AgentActivities } from '../activities';
import type { NotificationSinks } from '../common/agent-input';
import { MAX_NOTICES_IN_FLIGHT, NOTICE_START_TO_CLOSE_TIMEOUT_S } from '../common/constants';
import type { AgentNotification, NotificationKind } from '../common/notification';

/** Fields a notice may carry besides its kind and text. */
export type NoticeDetails = Pick<AgentNotification, 'record' | 'request' | 'decision' | 'decisions'>;

/**
 * Sends a run's notices through the `notify` activity without waiting for them, so a slow or
 * failing sink never slows the run; `settle` waits for the ones in flight before the run ends or
 * continues as new. Each notice is an activity input, so the history keeps it for the audit.
 * Notices go out one after the other, each once the one before is delivered or given up: a notice
 * whose attempt failed (a killed worker) is retried before the next starts, so `log.jsonl`, the
 * console and a webhook get a run's notices in the order the run sent them.
 */
export class RunNotices {
  private readonly inFlight = new Set<Promise<void>>();
  /** Notices held for the next model turn to deliver, oldest first. */
  private held: AgentNotification[] = [];
  /** The delivery of the last notice sent; it never rejects. */
  private lastDelivery: Promise<void> = Promise.resolve();

  constructor(
    private readonly context: {
      agent: string;
      runKey: string;
      sinks: NotificationSinks;
      /** Notices sent so far in the whole run, carried across continue-as-new: IDs stay unique. */
      sequence: number;
      /** False when replaying an execution recorded before notices existed. */
      enabled: boolean;
      /** False when replaying an execution recorded while notices went out all at once. */
      inOrder: boolean;
      /** False when replaying an execution recorded before model turns delivered notices. */
      turnsDeliver: boolean;
    },
  ) {}

  /** Notices sent by the run so far, to carry across continue-as-new. */
  get sequence(): number {
    return this.context.sequence;
  }

  send(kind: NotificationKind, text: string, iteration: number, details: NoticeDetails = {}): void {
    if (!this.context.enabled) return;
    this.release();
    this.deliver(this.notification(kind, text, iteration, details));
  }

  /**
   * Sends a notice the way {@link send} does, unless the run is about to call its model: then the
   * notice rides with that model turn ({@link takeHeld}), which delivers it before it calls the
   * model, saving the run an activity and a workflow task per iteration. The notice is still in the
   * history, in the turn's input. Anything else the run does first sends it on its own: another
   * notice, a wait, the end of the run ({@link release}).
   */
  sendWithNextTurn(
    kind: NotificationKind,
    text: string,
    iteration: number,
    details: NoticeDetails = {},
  ): void {
    if (!this.context.enabled) return;
    if (!this.context.turnsDeliver) return this.send(kind, text, iteration, details);
    this.held.push(this.notification(kind, text, iteration, details));
  }

  /**
   * The held notices, for the model turn about to start to deliver; none while an earlier notice is
   * still on its way, which a held one must not overtake (those go out in order with {@link release}).
   */
  takeHeld(): AgentNotification[] {
    if (this.held.length === 0) return [];
    if (this.inFlight.size > 0) {
      this.release();
      return [];
    }
    const held = this.held;
    this.held = [];
    return held;
  }

  /** Sends the held notices on their own, in order: the run does something else before its next turn. */
  release(): void {
    const held = this.held;
    this.held = [];
    for (const notification of held) this.deliver(notification);
  }

  private notification(
    kind: NotificationKind,
    text: string,
    iteration: number,
    details: NoticeDetails,
  ): AgentNotification {
    this.context.sequence += 1;
    return {
      id: `${this.context.runKey}:${this.context.sequence}`,
      agent: this.context.agent,
      runKey: this.context.runKey,
      kind,
      text,
      at: new Date().toISOString(),
      iteration,
      ...details,
      sinks: this.context.sinks,
    };
  }

  private deliver(notification: AgentNotification): void {
    const { kind } = notification;
    const { notify } = wf.proxyActivities<AgentActivities>({
      startToCloseTimeout: `${NOTICE_START_TO_CLOSE_TIMEOUT_S}s`,
      retry: { initialInterval: '1s', maximumAttempts: 3 },
      summary: `notice: ${kind}`,
    });
    const previous = this.lastDelivery;
    // Not cancellable with the turn: a stop must not lose the notice that says why the run stopped.
    const delivery = wf.CancellationScope.nonCancellable(
      this.context.inOrder ? () => previous.then(() => notify(notification)) : () => notify(notification),
    ).catch((error: unknown) => {
      wf.log.warn('Notice not delivered', {
        kind,
        error: error instanceof Error ? error.message : String(error),
      });
    });
    this.lastDelivery = delivery;
    this.inFlight.add(delivery);
    void delivery.finally(() => this.inFlight.delete(delivery));
  }

  /**
   * Waits, when {@link MAX_NOTICES_IN_FLIGHT} notices are in flight, until half of them are
   * delivered, so the run never gets far ahead of its notices: each is an activity (Temporal fails
   * the workflow task of a run with 2,000 pending) and waits in the run's memory until it is sent.
   * In a run whose sinks keep up this never waits, and issues no command.
   */
  async makeRoom(): Promise<void> {
    if (this.inFlight.size < MAX_NOTICES_IN_FLIGHT) return;
    await wf.condition(() => this.inFlight.size <= MAX_NOTICES_IN_FLIGHT / 2);
  }

  /** Sends the held notices and waits for every notice in flight. */
  async settle(): Promise<void> {
    this.release();
    await Promise.all([...this.inFlight]);
  }
}
