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

/** Calls under way a reservation may name (see `underway`): far more than a worker runs at once. */
export const UNDERWAY_SENT_MAX = 2_000;

/**
 * How long a granted reservation holds its spend when its charge does not come: longer than a model
 * turn may take with its retries, so a slow call keeps its place, and short enough that a run that
 * stopped before its call frees the room the same hour.
 */
export const RESERVATION_HOLD_MS = 30 * 60_000;

/**
 * A run near its daily limits asks for room for its next model call before making it. The ledger
 * decides reservations one at a time, in the order their signals arrive, counting the spend that
 * earlier granted reservations hold until their charges come: so runs racing for the last of a
 * daily budget cannot all be told there is room. The ID is the charge ID of the call it is for,
 * whose charge ends the hold.
 */
export const reservationSchema = z
  .object({
    reservationId: chargeSchema.shape.chargeId,
    /** What the call is expected to spend: the run's projection. */
    tokens: z.number().int().nonnegative(),
    costUsd: z.number().nonnegative().finite(),
    /** The run's daily limits; 0 is unlimited. */
    dailyTokens: z.number().nonnegative().finite(),
    dailyCostUsd: z.number().nonnegative().finite(),
    /**
     * The sender's calls that hold no room here and whose charges may not be recorded yet: those it
     * let start while the day was far from the limits, and charges it sent that no answer has
     * confirmed. Counted in this decision unless recorded or held already; never held.
     */
    underway: z.array(chargeSchema).max(UNDERWAY_SENT_MAX).default([]),
    /**
     * What a grant holds until the charge, when not the projection: a run's first call has no
     * projection to be refused by, yet holds what the day's calls cost on average, so the calls
     * deciding after it know it is under way.
     */
    holdTokens: z.number().int().nonnegative().optional(),
    holdCostUsd: z.number().nonnegative().finite().optional(),
  })
  .strict();
export type Reservation = z.input<typeof reservationSchema>;

/** The ledger's answer to a reservation. */
export interface ReservationDecision {
  granted: boolean;
  /**
   * The day's spend the decision counted: recorded charges, what other granted reservations hold,
   * and the sender's calls under way. With the projection it gives the run's own check the ledger's verdict, and a refused run
   * its reason.
   */
  tokens: number;
  costUsd: number;
}

/**
 * The argument of a `usage` query: with `chargeIds`, the answer also says which of those charges are
 * recorded, so callers that just sent them know whether the totals include them yet; with
 * `reservationIds`, the decisions on those reservations. Lists, because one query answers every
 * caller of a worker that is waiting on the same ledger.
 */
export const usageQueryArgumentSchema = z
  .object({
    chargeIds: z.array(chargeSchema.shape.chargeId).max(RECENT_CHARGE_IDS_KEPT).optional(),
    reservationIds: z.array(chargeSchema.shape.chargeId).max(RECENT_CHARGE_IDS_KEPT).optional(),
  })
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
  /** Reservations decided and not yet ended by their charge or their hold's end. */
  reservations?: HeldReservation[];
}

/** A reservation the ledger keeps until its charge comes or {@link RESERVATION_HOLD_MS} pass. */
export interface HeldReservation {
  reservationId: string;
  tokens: number;
  costUsd: number;
  /** Workflow time, epoch milliseconds, at which the hold ends. */
  holdsUntilMs: number;
  decision: ReservationDecision;
}

/**
 * A `usage` answer: the day's totals and, when asked about charges, those of them that are recorded;
 * when asked about reservations, the decisions on those the ledger has decided.
 */
export type UsageAnswer = DailyUsage & {
  recorded?: string[];
  reservations?: Record<string, ReservationDecision>;
};

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
 * Asks for room for one model call (see {@link reservationSchema}); a signal for the same reasons as
 * {@link chargeSignal}. The sender learns the decision from {@link usageQuery}.
 */
export const reserveSignal = defineSignal<[Reservation]>('reserve');

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
