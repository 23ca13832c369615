import { defineQuery, defineUpdate } from '@temporalio/workflow';
import { z } from 'zod';

/**
 * The daily budget ledger: one `dailyBudgetLedger` workflow per UTC day holds the tokens and cost
 * that every run of the namespace spent that day (SEED-BEHAVIOURS 15–17). Its messages, payloads and
 * naming are defined here once for the workflow, the activity and the tests.
 */

/** Workflow IDs of the daily ledgers are this prefix plus the UTC day, `YYYY-MM-DD` (contract). */
export const DAILY_LEDGER_ID_PREFIX = 'agents-budget-';

/** Workflow type of the daily ledger (contract). */
export const DAILY_LEDGER_WORKFLOW_TYPE = 'dailyBudgetLedger';

/**
 * Charge IDs a ledger remembers, newest last, so that a retried charge is never counted twice; they
 * are carried across continue-as-new. Far more than the charges a retrying activity could be behind.
 */
export const RECENT_CHARGE_IDS_KEPT = 10_000;

/**
 * A ledger ends this long after its day is over, so that ledgers do not pile up; charges still in
 * retry at the turn of the day land well within it.
 */
export const LEDGER_CLOSES_AFTER_DAY_MS = 48 * 3_600_000;

const DAY_MS = 86_400_000;

/** A UTC day as `YYYY-MM-DD`, and a real calendar date. */
export const daySchema = z
  .string()
  .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a UTC day as YYYY-MM-DD')
  .refine((day) => dayStartMs(day) !== undefined, 'must be a real calendar date');

/**
 * One charge against the day's budgets. `chargeId` makes it idempotent: the caller derives it from
 * the model call it pays for, so every retry of that call's charge carries the same ID. IDs are kept
 * short because the ledger carries thousands of them across continue-as-new.
 */
export const chargeSchema = z
  .object({
    chargeId: z.string().min(1).max(128),
    tokens: z.number().int().nonnegative(),
    costUsd: z.number().nonnegative().finite(),
  })
  .strict();
export type Charge = z.infer<typeof chargeSchema>;

/** Failure type of a charge that is refused because its payload is not a valid charge. */
export const INVALID_CHARGE = 'InvalidCharge';

/** What one UTC day has used so far, over all runs of the namespace. */
export interface DailyUsage {
  day: string;
  tokens: number;
  costUsd: number;
  /** Distinct charges recorded. */
  charges: number;
}

/** What a ledger hands to its next execution on continue-as-new: plain JSON. */
export interface LedgerState {
  tokens: number;
  costUsd: number;
  charges: number;
  /** The last {@link RECENT_CHARGE_IDS_KEPT} charge IDs recorded, oldest first. */
  recentChargeIds: string[];
}

/** Records a charge (once per `chargeId`) and returns the day's totals. */
export const chargeUpdate = defineUpdate<DailyUsage, [Charge]>('charge');

/** The day's totals. */
export const usageQuery = defineQuery<DailyUsage>('usage');

/** The workflow ID of the ledger of `day` (`YYYY-MM-DD`). */
export function dailyLedgerWorkflowId(day: string): string {
  return `${DAILY_LEDGER_ID_PREFIX}${day}`;
}

/** The UTC day, `YYYY-MM-DD`, of a moment given in epoch milliseconds (workflow time in workflows). */
export function utcDay(epochMs: number): string {
  return new Date(epochMs).toISOString().slice(0, 10);
}

/** Epoch milliseconds at which `day` begins, or undefined when it is not a real `YYYY-MM-DD` date. */
export function dayStartMs(day: string): number | undefined {
  const start = Date.parse(`${day}T00:00:00.000Z`);
  return Number.isNaN(start) || utcDay(start) !== day ? undefined : start;
}

/** Epoch milliseconds after which the ledger of `day` ends (see {@link LEDGER_CLOSES_AFTER_DAY_MS}). */
export function ledgerClosesAtMs(day: string): number | undefined {
  const start = dayStartMs(day);
  return start === undefined ? undefined : start + DAY_MS + LEDGER_CLOSES_AFTER_DAY_MS;
}
