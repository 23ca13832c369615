import { defineQuery, defineSignal } from '@temporalio/workflow';
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

/**
 * The argument of a `usage` query: with `chargeIds`, the answer also says which of those charges are
 * recorded, so callers that just sent them know whether the totals include them yet. A list, because
 * one query answers every caller of a worker that is waiting on the same ledger.
 */
export const usageQueryArgumentSchema = z
  .object({ chargeIds: z.array(chargeSchema.shape.chargeId).max(RECENT_CHARGE_IDS_KEPT).optional() })
  .strict();
export type UsageQueryArgument = z.infer<typeof usageQueryArgumentSchema>;

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

/** A `usage` answer: the day's totals and, when asked about charges, those of them that are recorded. */
export type UsageAnswer = DailyUsage & { recorded?: string[] };

/**
 * Records a charge, once per `chargeId`; an invalid payload is logged and ignored. A signal, not an
 * update, because every run of the namespace charges the one ledger of the day: signals have no
 * in-flight limit per workflow (updates have, 10 by default, and 50 concurrent runs hit it), the
 * server hands the signals that queue up meanwhile to the ledger's next workflow task as one batch,
 * and a signal reaches the ledger, and starts it with Signal-With-Start, even when no worker is
 * running. The sender learns the totals from {@link usageQuery}.
 */
export const chargeSignal = defineSignal<[Charge]>('charge');

/**
 * The day's totals; with `{ chargeIds }`, also which of those charges are recorded (`recorded`): a
 * charge is recorded at the ledger's next workflow task after its signal, so its sender may ask first.
 */
export const usageQuery = defineQuery<UsageAnswer, [UsageQueryArgument?]>('usage');

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
