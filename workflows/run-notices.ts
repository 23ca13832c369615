import * as wf from '@temporalio/workflow';
import type { AgentActivities } from '../activities';
import type { NotificationSinks } from '../common/agent-input';
import type { AgentNotification, NotificationKind } from '../common/notification';

/** Fields a notice may carry besides its kind and text. */
export type NoticeDetails = Pick<AgentNotification, 'record' | 'request' | 'decision'>;

/**
 * Sends a run's notices through the `notify` activity without waiting for them, so a slow or
 * failing sink never slows the run; `settle` waits for the ones in flight before the run ends or
 * continues as new. Each notice is an activity input, so the history keeps it for the audit.
 */
export class RunNotices {
  private readonly inFlight = new Set<Promise<void>>();

  constructor(
    private readonly context: {
      agent: string;
      runKey: string;
      sinks: NotificationSinks;
      /** Notices sent so far in the whole run, carried across continue-as-new: IDs stay unique. */
      sequence: number;
      /** False when replaying an execution recorded before notices existed. */
      enabled: boolean;
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
      startToCloseTimeout: '1 minute',
      retry: { initialInterval: '1s', maximumAttempts: 3 },
      summary: `notice: ${kind}`,
    });
    // Not cancellable with the turn: a stop must not lose the notice that says why the run stopped.
    const delivery = wf.CancellationScope.nonCancellable(() => notify(notification)).catch(
      (error: unknown) => {
        wf.log.warn('Notice not delivered', {
          kind,
          error: error instanceof Error ? error.message : String(error),
        });
      },
    );
    this.inFlight.add(delivery);
    void delivery.finally(() => this.inFlight.delete(delivery));
  }

  /** Waits for every notice in flight. */
  async settle(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }
}
