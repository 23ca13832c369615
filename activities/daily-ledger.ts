import {
  WithStartWorkflowOperation,
  WorkflowExecutionAlreadyStartedError,
  WorkflowNotFoundError,
  WorkflowUpdateFailedError,
  type Client,
} from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import { TASK_QUEUE } from '../common/constants';
import {
  chargeSchema,
  chargeUpdate,
  dailyLedgerWorkflowId,
  daySchema,
  INVALID_CHARGE,
  usageQuery,
  type DailyUsage,
} from '../common/daily-ledger';
import { dailyBudgetLedger } from '../workflows/daily-ledger';

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

/**
 * The activity that reads and charges the daily budget ledgers. It takes a function for the client so
 * the worker can hand over a connection it opens lazily, or share the one it already has.
 */
export function createDailyLedgerActivities(client: () => Promise<Client> | Client) {
  async function readUsage(temporal: Client, day: string): Promise<DailyUsage> {
    try {
      return await temporal.workflow.getHandle(dailyLedgerWorkflowId(day)).query(usageQuery);
    } catch (error) {
      // No charge yet today: nothing to read, and no reason to start a ledger just to read zeros.
      if (error instanceof WorkflowNotFoundError) return { day, tokens: 0, costUsd: 0, charges: 0 };
      throw error;
    }
  }

  return {
    /**
     * The day's usage over all runs of the namespace; with `charge`, records it first, exactly once
     * per `chargeId` however often this activity is retried. The charge is an Update-With-Start, so
     * the first charge of a day starts its ledger and no separate start can race it.
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
      if (charge === undefined) return readUsage(temporal, day);

      try {
        return await temporal.workflow.executeUpdateWithStart(chargeUpdate, {
          args: [charge],
          // The server answers a repeated update ID within one run with the first outcome; the
          // ledger's own list of charge IDs covers a retry that lands after a continue-as-new.
          updateId: charge.chargeId,
          startWorkflowOperation: new WithStartWorkflowOperation(dailyBudgetLedger, {
            workflowId: dailyLedgerWorkflowId(day),
            taskQueue: TASK_QUEUE,
            workflowIdConflictPolicy: 'USE_EXISTING',
            // A day whose ledger completed stays closed; one that was terminated or failed may start again.
            workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
            args: [],
          }),
        });
      } catch (error) {
        if (error instanceof WorkflowExecutionAlreadyStartedError) {
          return { ...(await readUsage(temporal, day)), chargeDropped: true };
        }
        if (error instanceof WorkflowUpdateFailedError) {
          throw ApplicationFailure.nonRetryable(
            `The ledger of ${day} refused charge '${charge.chargeId}': ${error.cause?.message ?? error.message}`,
            INVALID_CHARGE,
          );
        }
        throw error;
      }
    },
  };
}

/** The daily ledger activities as the workflow sees them. */
export type DailyLedgerActivities = ReturnType<typeof createDailyLedgerActivities>;
