import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import { TASK_QUEUE } from '../common/constants';
import {
  chargeSchema,
  chargeSignal,
  dailyLedgerWorkflowId,
  daySchema,
  usageQuery,
  type Charge,
  type DailyUsage,
  type UsageAnswer,
} from '../common/daily-ledger';
import { DailyLedgerBook, dailyBudgetLedger } from '../workflows/daily-ledger';

/** A read of one UTC day's usage, with a charge to record first when `charge` is given. */
export const dailyUsageInputSchema = z.object({ day: daySchema, charge: chargeSchema.optional() }).strict();
export type DailyUsageInput = z.infer<typeof dailyUsageInputSchema>;

/** The day's totals after the charge, if any. */
export interface DailyUsageResult extends DailyUsage {
  /** The day's ledger had already closed (two days after the day), so the charge was not recorded. */
  chargeDropped?: true;
}

/** Failure type of a `dailyUsage` call whose input is malformed: retrying cannot fix it. */
export const INVALID_DAILY_USAGE_INPUT = 'InvalidDailyUsageInput';

/** Callers waiting for the next `usage` query of one day's ledger, and the charges they just sent. */
interface QueryRound {
  chargeIds: Set<string>;
  answer: Promise<UsageAnswer>;
}

/** The totals of a `usage` answer, without the charge IDs it was asked about. */
function totalsOf({ day, tokens, costUsd, charges }: UsageAnswer): DailyUsage {
  return { day, tokens, costUsd, charges };
}

/**
 * The activity that reads and charges the daily budget ledgers. It takes a function for the client so
 * the worker can hand over a connection it opens lazily, or share the one it already has.
 */
export function createDailyLedgerActivities(client: () => Promise<Client> | Client) {
  // Per day: the last query sent, and the round of callers that will share the next one.
  const lastQuery = new Map<string, Promise<UsageAnswer>>();
  const nextRound = new Map<string, QueryRound>();

  async function queryLedger(temporal: Client, day: string, chargeIds: string[]): Promise<UsageAnswer> {
    try {
      const handle = temporal.workflow.getHandle(dailyLedgerWorkflowId(day));
      return await handle.query(usageQuery, chargeIds.length === 0 ? {} : { chargeIds });
    } catch (error) {
      // No charge yet today: nothing to read, and no reason to start a ledger just to read zeros.
      if (error instanceof WorkflowNotFoundError)
        return { day, tokens: 0, costUsd: 0, charges: 0, recorded: [] };
      throw error;
    }
  }

  /**
   * The day's totals from a `usage` query sent after this call, so they reflect every charge whose
   * signal the server accepted before it; asked about `chargeId` too. At most one query per ledger is
   * in flight from this worker: while the ledger has a workflow task pending, the server holds one
   * query for it (`history.MaxBufferedQueryCount`, 1 by default) and refuses others with
   * `ResourceExhausted`, which 50 runs charging at once would meet at every charge. Callers that come
   * while a query is in flight share the next one instead.
   */
  function readUsage(temporal: Client, day: string, chargeId?: string): Promise<UsageAnswer> {
    let round = nextRound.get(day);
    if (round === undefined) {
      const chargeIds = new Set<string>();
      const previous = lastQuery.get(day) ?? Promise.resolve(undefined);
      const answer = previous
        .then(
          () => undefined,
          () => undefined,
        )
        .then(() => {
          // Sent now: callers from here on wait for the round after this one.
          nextRound.delete(day);
          return queryLedger(temporal, day, [...chargeIds]);
        });
      const forget = () => {
        if (lastQuery.get(day) === answer) lastQuery.delete(day);
      };
      void answer.then(forget, forget);
      lastQuery.set(day, answer);
      round = { chargeIds, answer };
      nextRound.set(day, round);
    }
    if (chargeId !== undefined) round.chargeIds.add(chargeId);
    return round.answer;
  }

  /**
   * The day's totals including `charge`, whose signal the server accepted: the ledger records it at
   * its next workflow task, which the query normally waits for; should the answer not include it yet,
   * it is added here with the ledger's own arithmetic. Either way the caller sees its own spend.
   */
  async function usageIncluding(temporal: Client, day: string, charge: Charge): Promise<DailyUsage> {
    const answer = await readUsage(temporal, day, charge.chargeId);
    if (answer.recorded?.includes(charge.chargeId) === true) return totalsOf(answer);
    const { tokens, costUsd, charges } = answer;
    const book = new DailyLedgerBook(day, { tokens, costUsd, charges, recentChargeIds: [] });
    book.charge(charge);
    return book.usage();
  }

  return {
    /**
     * The day's usage over all runs of the namespace; with `charge`, records it first, exactly once
     * per `chargeId` however often this activity is retried: the ledger ignores a charge ID it has
     * recorded. The charge is a Signal-With-Start, so the first charge of a day starts its ledger and
     * no separate start can race it, and any number of runs can charge at once.
     */
    async dailyUsage(input: DailyUsageInput): Promise<DailyUsageResult> {
      const parsed = dailyUsageInputSchema.safeParse(input);
      if (!parsed.success) {
        throw ApplicationFailure.nonRetryable(
          `Invalid daily usage request: ${describeZodError(parsed.error)}`,
          INVALID_DAILY_USAGE_INPUT,
        );
      }
      const { day, charge } = parsed.data;
      const temporal = await client();
      if (charge === undefined) return totalsOf(await readUsage(temporal, day));

      try {
        await temporal.workflow.signalWithStart(dailyBudgetLedger, {
          workflowId: dailyLedgerWorkflowId(day),
          taskQueue: TASK_QUEUE,
          signal: chargeSignal,
          signalArgs: [charge],
          args: [],
          workflowIdConflictPolicy: 'USE_EXISTING',
          // A day whose ledger completed stays closed; one that was terminated or failed may start again.
          workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
        });
      } catch (error) {
        if (error instanceof WorkflowExecutionAlreadyStartedError) {
          return { ...totalsOf(await readUsage(temporal, day)), chargeDropped: true };
        }
        throw error;
      }
      return usageIncluding(temporal, day, charge);
    },
  };
}

/** The daily ledger activities as the workflow sees them. */
export type DailyLedgerActivities = ReturnType<typeof createDailyLedgerActivities>;
