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
    },
  ) {}

  /** Notices sent by the run so far, to carry across continue-as-new. */
  get sequence(): number {
    return this.context.sequence;
  }

  send(kind: NotificationKind, text: string, iteration: number, details: NoticeDetails = {}): void {
    if (!this.context.enabled) return;
    this.context.sequence += 1;
    const notification: AgentNotification = {
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

  /** Waits for every notice in flight. */
  async settle(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }
}
