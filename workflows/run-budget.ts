import * as wf from '@temporalio/workflow';
import type { AgentActivities, ModelTurnInput } from '../activities';
import type { BudgetLimits } from '../common/agent-input';
import type { ModelUsage, RunUsage } from '../common/agent-run-types';
import { DAILY_LEDGER_HEARTBEAT_TIMEOUT_S } from '../common/constants';
import {
  applyBudgetOverrides,
  budgetWarnings,
  checkBudgets,
  currentWarningKeys,
  nearDailyLimit,
  utcDay,
  type BudgetUsage,
  type Spend,
} from './budgets';
import type { RunNotices } from './run-notices';

/** The part of a run's carried state that its budgets read and change. */
export interface BudgetState {
  usage: RunUsage;
  /** The run's budgets, with every `resume` override applied. */
  budgets: BudgetLimits;
  /** Budget warnings already sent, so each goes out once. */
  warnedBudgets: string[];
  /** Tokens and cost of the last model call: the projection for the next one. */
  lastCallSpend: Spend;
  /** Spend not yet charged to the daily ledger: charged before the next iteration, and at the end. */
  unchargedSpend: Spend;
  /** Charges sent so far: each charge's ID is the run's key and this count, so a retry counts once. */
  charges: number;
}

/** Today's spend of all runs, as last read from the shared ledger. */
export interface DailySpend extends Spend {
  day: string;
}

/**
 * A run's budgets inside the workflow: the session's usage, today's spend of all runs from the
 * shared daily ledger, warnings, and the pause, an awaited condition that only `resume` or `stop`
 * ends. The arithmetic is in `budgets.ts`; this class holds the state and calls the ledger.
 */
export class RunBudget {
  private daily: DailySpend = { day: '', tokens: 0, costUsd: 0 };
  /**
   * The day's spend the ledger counted when it refused the last model turn room: the next check
   * decides from it, and so reaches the ledger's verdict and gives its reason.
   */
  private refusal: Spend | undefined;
  private resumeRequested = false;
  private paused: string | null = null;

  constructor(
    private readonly run: BudgetState,
    private readonly context: {
      /** The run's key across continue-as-new: charge IDs start with it. */
      runKey: string;
      /** False when replaying an execution recorded before the ledger existed. */
      ledgerEnabled: boolean;
      /**
       * Model turns charge their own spend and bring back today's figure; false when replaying an
       * execution recorded before they did, which read the ledger before every iteration.
       */
      turnsCharge: boolean;
      /**
       * Model turns of a run with daily limits ask for room before they call the model, and the
       * run reads the ledger only to charge what a turn could not; false when replaying an
       * execution recorded before, which read the ledger near its limits.
       */
      turnsAskForRoom: boolean;
      notices: RunNotices;
      iteration: () => number;
      isStopped: () => boolean;
      /** The run shows `paused_budget`, and then goes back to work. */
      onPause: () => void;
      onResume: () => void;
    },
  ) {}

  /** Why the run is paused, while it is. */
  get pauseReason(): string | null {
    return this.paused;
  }

  /** Today's spend of all runs, once the ledger has been read. */
  get dailyUsage(): DailySpend | null {
    return this.daily.day === '' ? null : { ...this.daily };
  }

  /**
   * Applies a `resume`: its budgets replace the run's (a changed limit warns again at 80 % and 95 %
   * of itself), and a paused run checks again. False when there was nothing to act on.
   */
  resume(overrides: Partial<BudgetLimits> | undefined): boolean {
    if (overrides !== undefined) {
      this.run.budgets = applyBudgetOverrides(this.run.budgets, overrides);
      const changed = Object.keys(overrides);
      this.run.warnedBudgets = this.run.warnedBudgets.filter(
        (key) => !changed.some((name) => key.startsWith(`${name}:`)),
      );
    }
    if (this.paused !== null) this.resumeRequested = true;
    return overrides !== undefined || this.paused !== null;
  }

  /**
   * Checks the budgets with what the next step is expected to spend; over budget, waits until
   * `resume` (then checks again) or `stop`. Returns false when stopped while paused. With
   * `freshDaily` (before each iteration) the spend not yet charged goes to the ledger, and today's
   * total comes back, in one call; between model calls the last total plus this run's own spend
   * since then is used.
   */
  async check(projected: Spend, freshDaily: boolean): Promise<boolean> {
    for (let fresh = freshDaily; ; fresh = true) {
      const today = utcDay(Date.now());
      if (this.context.turnsCharge) await this.readDailyIfDue(today, projected, fresh);
      else if (fresh || this.daily.day !== today) await this.refreshDaily(fresh);
      const usage = this.usage(today);
      const verdict = checkBudgets(
        this.run.budgets,
        this.refusal === undefined ? usage : { ...usage, daily: this.refusal },
        projected,
      );
      this.refusal = undefined;
      if (!verdict.exceeded) {
        this.warn(usage, today);
        return true;
      }
      this.paused = verdict.reason;
      this.resumeRequested = false;
      this.context.onPause();
      this.context.notices.send(
        'paused',
        `Paused: ${verdict.reason}. Send signal resume, with new budgets if needed: {"budgets": {"${verdict.budget}": …}}`,
        this.context.iteration(),
      );
      try {
        await wf.condition(() => this.resumeRequested || this.context.isStopped());
      } finally {
        this.paused = null;
      }
      if (this.context.isStopped()) return false;
      this.context.notices.send('resumed', 'Resumed.', this.context.iteration());
      this.context.onResume();
    }
  }

  /**
   * Adds a model call's spend to the run; the ledger gets it before the next iteration. Estimated
   * counts mark the run's usage as estimated from then on.
   */
  record(usage: ModelUsage, costUsd: number): void {
    const spend = this.addToRun(usage, costUsd);
    this.run.unchargedSpend = {
      tokens: this.run.unchargedSpend.tokens + spend.tokens,
      costUsd: this.run.unchargedSpend.costUsd + spend.costUsd,
    };
  }

  /**
   * The daily charge a model turn makes itself, with the ID that makes its retries count once, and
   * for a run with daily limits the room it asks for first: the last call's spend as projection;
   * none when turns do not charge.
   */
  turnCharge(callIndex: number): ModelTurnInput['charge'] {
    if (!this.context.ledgerEnabled || !this.context.turnsCharge) return undefined;
    const charge = { day: utcDay(Date.now()), chargeId: `${this.context.runKey}:call:${callIndex}` };
    const { dailyTokens, dailyCostUsd } = this.run.budgets;
    if (!this.context.turnsAskForRoom || !(dailyTokens > 0 || dailyCostUsd > 0)) return charge;
    return { ...charge, room: { ...this.run.lastCallSpend, dailyTokens, dailyCostUsd } };
  }

  /**
   * Takes the daily ledger's refusal of a model turn: the next check decides from the spend the
   * ledger counted, which pauses the run on its daily budget with the ledger's figures, or, if a
   * `resume` raised the limits meanwhile, lets the turn ask again.
   */
  refused(counted: Spend): void {
    this.refusal = { tokens: counted.tokens, costUsd: counted.costUsd };
    const today = utcDay(Date.now());
    if (this.daily.day !== today) this.daily = { day: today, ...this.refusal };
  }

  /**
   * Adds the spend of a model turn that charged it to the ledger itself, and takes today's figure
   * the turn brought back.
   */
  recordCharged(usage: ModelUsage, costUsd: number, daily: DailySpend): void {
    this.addToRun(usage, costUsd);
    this.daily = { day: daily.day, tokens: daily.tokens, costUsd: daily.costUsd };
  }

  /** Adds a model call's spend to the run's usage and makes it the projection of the next call. */
  private addToRun(usage: ModelUsage, costUsd: number): Spend {
    const spend = { tokens: usage.inputTokens + usage.outputTokens, costUsd };
    this.run.usage.inputTokens += usage.inputTokens;
    this.run.usage.outputTokens += usage.outputTokens;
    this.run.usage.costUsd += costUsd;
    if (usage.estimated === true) this.run.usage.estimated = true;
    this.run.lastCallSpend = spend;
    return spend;
  }

  /** Charges what the run spent since the last charge, when the run ends. */
  async flush(): Promise<void> {
    const { tokens, costUsd } = this.run.unchargedSpend;
    if (tokens > 0 || costUsd > 0) await this.refreshDaily(true);
  }

  /**
   * With turns charging themselves, the ledger is read only when its figure would not do: spend
   * left to charge (a stopped turn's, or one whose ledger was unreachable) is charged, a run with
   * daily limits reads the ledger when it has no figure for today, and, unless turns ask for room
   * themselves, when today's spend is near a limit, where every other run's last calls count.
   */
  private async readDailyIfDue(today: string, projected: Spend, fresh: boolean): Promise<void> {
    const { unchargedSpend } = this.run;
    if (fresh && (unchargedSpend.tokens > 0 || unchargedSpend.costUsd > 0)) return this.refreshDaily(true);
    if (this.daily.day !== today) return this.refreshDaily(false);
    // Near a limit the model turn asks for room itself, from the freshest figure, just before the call.
    if (
      !this.context.turnsAskForRoom &&
      nearDailyLimit(this.run.budgets, this.usage(today).daily, projected)
    ) {
      await this.refreshDaily(false);
    }
  }

  private usage(today: string): BudgetUsage {
    const { usage, unchargedSpend } = this.run;
    const charged = this.daily.day === today ? this.daily : { tokens: 0, costUsd: 0 };
    return {
      session: { tokens: usage.inputTokens + usage.outputTokens, costUsd: usage.costUsd },
      daily: {
        tokens: charged.tokens + unchargedSpend.tokens,
        costUsd: charged.costUsd + unchargedSpend.costUsd,
      },
    };
  }

  private warn(usage: BudgetUsage, today: string): void {
    this.run.warnedBudgets = currentWarningKeys(this.run.warnedBudgets, today);
    for (const warning of budgetWarnings(this.run.budgets, usage, this.run.warnedBudgets, today)) {
      this.run.warnedBudgets.push(...warning.keys);
      this.context.notices.send('warning', `Budget warning: ${warning.message}`, this.context.iteration());
    }
  }

  /**
   * Reads today's spend of all runs from the ledger, charging first what this run spent since its
   * last charge when `charge` is set. Every run charges, so the ledger is right for runs with daily
   * limits; only those read it without a charge. Not a local activity: it waits on the ledger's
   * workflow task, which must not queue behind workflow tasks held open by local activities. A
   * ledger that cannot be reached is logged and the last figure kept: budgets must not stop work
   * on their own failure.
   */
  private async refreshDaily(charge: boolean): Promise<void> {
    const { budgets, unchargedSpend } = this.run;
    const hasDailyLimits = budgets.dailyTokens > 0 || budgets.dailyCostUsd > 0;
    const charging = charge && (unchargedSpend.tokens > 0 || unchargedSpend.costUsd > 0);
    if (!this.context.ledgerEnabled || (!charging && !hasDailyLimits)) return;
    const day = utcDay(Date.now());
    // A few quick attempts: a ledger that stays unreachable must not hold the run for minutes. The
    // heartbeat timeout retries the read of a killed worker after seconds, as for every other activity.
    const { dailyUsage } = wf.proxyActivities<AgentActivities>({
      startToCloseTimeout: '30s',
      heartbeatTimeout: `${DAILY_LEDGER_HEARTBEAT_TIMEOUT_S}s`,
      retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '5s', maximumAttempts: 4 },
      summary: 'daily budget',
    });
    const sent = charging ? { ...unchargedSpend } : undefined;
    if (sent !== undefined) this.run.charges += 1;
    try {
      const totals = await dailyUsage({
        day,
        ...(sent === undefined
          ? {}
          : { charge: { chargeId: `${this.context.runKey}:${this.run.charges}`, ...sent } }),
      });
      this.daily = { day, tokens: totals.tokens, costUsd: totals.costUsd };
      if (sent !== undefined) this.run.unchargedSpend = { tokens: 0, costUsd: 0 };
    } catch (error) {
      if (wf.isCancellation(error)) throw error;
      wf.log.warn('Daily ledger unavailable', {
        error: error instanceof Error ? error.message : String(error),
      });
      if (this.daily.day !== day) this.daily = { day, tokens: 0, costUsd: 0 };
    }
  }
}
