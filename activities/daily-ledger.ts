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

/**
 * What this worker knows of one day without asking: the totals of the last `usage` answer, and the
 * charges it sent that the answer did not include yet.
 */
interface KnownDay {
  totals?: DailyUsage;
  unconfirmed: Map<string, Charge>;
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
  const known = new Map<string, KnownDay>();

  function knownDay(day: string): KnownDay {
    let entry = known.get(day);
    if (entry === undefined) {
      entry = { unconfirmed: new Map() };
      known.set(day, entry);
      // Days before yesterday are no longer charged by any run of this worker.
      for (const other of known.keys()) if (other < day && known.size > 2) known.delete(other);
    }
    return entry;
  }

  /** Takes in a `usage` answer: its totals, and the charges it confirms. */
  function learn(answer: UsageAnswer): void {
    const entry = knownDay(answer.day);
    entry.totals = totalsOf(answer);
    for (const chargeId of answer.recorded ?? []) entry.unconfirmed.delete(chargeId);
  }

  async function queryLedger(temporal: Client, day: string, chargeIds: string[]): Promise<UsageAnswer> {
    try {
      const handle = temporal.workflow.getHandle(dailyLedgerWorkflowId(day));
      const answer = await handle.query(usageQuery, chargeIds.length === 0 ? {} : { chargeIds });
      learn(answer);
      return answer;
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
          for (const chargeId of knownDay(day).unconfirmed.keys()) chargeIds.add(chargeId);
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

  /** Sends `charge` to the ledger of `day`; false when the day's ledger has closed. */
  async function sendCharge(temporal: Client, day: string, charge: Charge): Promise<boolean> {
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
      return true;
    } catch (error) {
      if (error instanceof WorkflowExecutionAlreadyStartedError) return false;
      throw error;
    }
  }

  return {
    /**
     * Charges one model call's spend and answers at once with what this worker knows of the day:
     * the last totals a `usage` query gave, plus its own charges not yet in them. It waits only for
     * the server to accept the charge, which from then on cannot be lost; a query then refreshes the
     * worker's figure in the background. The figure may miss what other workers charged since their
     * last answer reached this one, so a run near its daily limit reads the ledger itself
     * (`dailyUsage`) before each call.
     */
    async chargeCall(day: string, charge: Charge): Promise<DailyUsageResult> {
      const temporal = await client();
      if (!(await sendCharge(temporal, day, charge))) {
        return { ...totalsOf(await readUsage(temporal, day)), chargeDropped: true };
      }
      const entry = knownDay(day);
      if (entry.totals === undefined) return usageIncluding(temporal, day, charge);
      entry.unconfirmed.set(charge.chargeId, charge);
      const estimate = new DailyLedgerBook(day, { ...entry.totals, recentChargeIds: [] });
      for (const unconfirmed of entry.unconfirmed.values()) estimate.charge(unconfirmed);
      // The refresh's failure is the next caller's concern: this charge is recorded either way.
      readUsage(temporal, day, charge.chargeId).catch(() => undefined);
      return estimate.usage();
    },

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

      if (!(await sendCharge(temporal, day, charge))) {
        return { ...totalsOf(await readUsage(temporal, day)), chargeDropped: true };
      }
      return usageIncluding(temporal, day, charge);
    },
  };
}

/** The daily ledger activities as the workflow sees them. */
export type DailyLedgerActivities = ReturnType<typeof createDailyLedgerActivities>;
