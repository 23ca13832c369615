import * as wf from '@temporalio/workflow';
import {
  chargeSchema,
  chargeSignal,
  DAILY_LEDGER_ID_PREFIX,
  daySchema,
  ledgerClosesAtMs,
  RECENT_CHARGE_IDS_KEPT,
  RESERVATION_HOLD_MS,
  reservationSchema,
  reserveSignal,
  usageQuery,
  usageQueryArgumentSchema,
  type Charge,
  type DailyUsage,
  type HeldReservation,
  type LedgerState,
  type Reservation,
  type ReservationDecision,
  type UsageAnswer,
} from '../common/daily-ledger';
import { describeZodError } from '../common/agent-input';
import { checkBudgets, type Spend } from './budgets';

/** Failure type of a ledger started under a workflow ID that names no UTC day. */
export const INVALID_LEDGER_ID = 'InvalidLedgerId';

/** Cents of cents add up in binary floating point; nine decimals keep a sum exact enough and readable. */
function addUsd(sum: number, amount: number): number {
  return Math.round((sum + amount) * 1e9) / 1e9;
}

/**
 * The arithmetic of one day's ledger, kept apart from the workflow so unit tests can drive it:
 * totals plus the recent charge IDs that make a retried charge count once, and the reservations
 * that hold room for calls under way.
 */
export class DailyLedgerBook {
  readonly #day: string;
  readonly #state: Omit<LedgerState, 'reservations'>;
  readonly #recent: Set<string>;
  /** By reservation ID, oldest first. */
  readonly #reservations: Map<string, HeldReservation>;

  constructor(day: string, state?: LedgerState) {
    this.#day = day;
    this.#state = {
      tokens: state?.tokens ?? 0,
      costUsd: state?.costUsd ?? 0,
      charges: state?.charges ?? 0,
      recentChargeIds: [...(state?.recentChargeIds ?? [])].slice(-RECENT_CHARGE_IDS_KEPT),
    };
    this.#recent = new Set(this.#state.recentChargeIds);
    this.#reservations = new Map(
      (state?.reservations ?? []).map((held) => [held.reservationId, { ...held }] as const),
    );
  }

  /**
   * Decides a reservation at workflow time `nowMs`: granted when the day's spend, with what the
   * other granted reservations hold and the sender's calls under way, leaves room for the
   * projection under the run's daily limits, by the same rule a run applies to itself. Asking
   * again for the same ID decides again. Granted, the projection is held until the charge of that
   * ID comes or {@link RESERVATION_HOLD_MS} pass.
   */
  reserve(reservation: Reservation, nowMs: number): ReservationDecision {
    const { reservationId, tokens, costUsd, dailyTokens, dailyCostUsd } = reservation;
    for (const [id, held] of this.#reservations)
      if (held.holdsUntilMs <= nowMs) this.#reservations.delete(id);
    this.#reservations.delete(reservationId);
    const committed = this.#committed();
    for (const call of reservation.underway ?? []) {
      if (
        this.#recent.has(call.chargeId) ||
        this.#reservations.get(call.chargeId)?.decision.granted === true
      ) {
        continue;
      }
      committed.tokens += call.tokens;
      committed.costUsd = addUsd(committed.costUsd, call.costUsd);
    }
    const verdict = checkBudgets(
      { sessionTokens: 0, sessionCostUsd: 0, dailyTokens, dailyCostUsd },
      { session: { tokens: 0, costUsd: 0 }, daily: committed },
      { tokens, costUsd },
    );
    const decision = { granted: !verdict.exceeded, ...committed };
    this.#reservations.set(reservationId, {
      reservationId,
      tokens: reservation.holdTokens ?? tokens,
      costUsd: reservation.holdCostUsd ?? costUsd,
      holdsUntilMs: nowMs + RESERVATION_HOLD_MS,
      decision,
    });
    // Only reservations a charge never ended pile up; the oldest of them go first.
    for (const id of this.#reservations.keys()) {
      if (this.#reservations.size <= RECENT_CHARGE_IDS_KEPT) break;
      this.#reservations.delete(id);
    }
    return decision;
  }

  /** The decisions on those of `reservationIds` the book holds. */
  decisions(reservationIds: readonly string[]): Record<string, ReservationDecision> {
    const decisions: Record<string, ReservationDecision> = {};
    for (const id of reservationIds) {
      const held = this.#reservations.get(id);
      if (held !== undefined) decisions[id] = { ...held.decision };
    }
    return decisions;
  }

  /** Recorded spend plus what granted reservations hold. */
  #committed(): Spend {
    let { tokens, costUsd } = this.#state;
    for (const held of this.#reservations.values()) {
      if (!held.decision.granted) continue;
      tokens += held.tokens;
      costUsd = addUsd(costUsd, held.costUsd);
    }
    return { tokens, costUsd };
  }

  /**
   * Adds the charge unless its ID was already recorded; returns whether it was added. Either way it
   * ends the reservation of that ID: the call's real spend replaces what it held.
   */
  charge(charge: Charge): boolean {
    this.#reservations.delete(charge.chargeId);
    if (this.#recent.has(charge.chargeId)) return false;
    this.#state.tokens += charge.tokens;
    this.#state.costUsd = addUsd(this.#state.costUsd, charge.costUsd);
    this.#state.charges += 1;
    this.#state.recentChargeIds.push(charge.chargeId);
    this.#recent.add(charge.chargeId);
    if (this.#state.recentChargeIds.length > RECENT_CHARGE_IDS_KEPT) {
      const forgotten = this.#state.recentChargeIds.shift();
      if (forgotten !== undefined) this.#recent.delete(forgotten);
    }
    return true;
  }

  /** Whether a charge with this ID is recorded (among the recent IDs the book keeps). */
  has(chargeId: string): boolean {
    return this.#recent.has(chargeId);
  }

  /** The day's totals. */
  usage(): DailyUsage {
    const { tokens, costUsd, charges } = this.#state;
    return { day: this.#day, tokens, costUsd, charges };
  }

  /** A copy of the state, to carry across continue-as-new. */
  state(): LedgerState {
    return {
      ...this.#state,
      recentChargeIds: [...this.#state.recentChargeIds],
      reservations: [...this.#reservations.values()].map((held) => ({ ...held })),
    };
  }
}

/**
 * The ledger of one UTC day, shared by every run of the namespace: runs charge it after each model
 * call (signal `charge`, idempotent by charge ID), read it (query `usage`), and near their daily
 * limits ask it for room before a call (signal `reserve`, decided in arrival order). An entity workflow
 * rather than a file or a table, so the day's totals survive worker and server restarts and every
 * worker sees the same numbers. The day is the one its workflow ID names (`agents-budget-YYYY-MM-DD`),
 * so a Signal-With-Start needs no arguments.
 *
 * A signal cannot be refused, so the ledger checks each charge itself: an invalid one is logged and
 * ignored, and one whose ID is already recorded (a retried activity sends the same ID again) is
 * ignored. Signals that arrive while the ledger continues as new reach the next run, which carries
 * the totals and the recent charge IDs.
 *
 * The ledger ends 48 hours after its day is over, by workflow time, once no handler is running; it
 * returns the day's final totals. A charge that arrives after that is not recorded: the activity
 * starts ledgers with the reuse policy `ALLOW_DUPLICATE_FAILED_ONLY`, so a completed day cannot be
 * reopened, and it answers with the final totals and `chargeDropped`. Nothing reads a day that old to
 * enforce a budget, so dropping it costs nothing but the day's record.
 */
export async function dailyBudgetLedger(state?: LedgerState): Promise<DailyUsage> {
  const { workflowId } = wf.workflowInfo();
  const day = workflowId.startsWith(DAILY_LEDGER_ID_PREFIX)
    ? workflowId.slice(DAILY_LEDGER_ID_PREFIX.length)
    : '';
  const closesAt = daySchema.safeParse(day).success ? ledgerClosesAtMs(day) : undefined;
  if (closesAt === undefined) {
    throw wf.ApplicationFailure.nonRetryable(
      `Workflow ID '${workflowId}' names no day: a daily ledger's ID is '${DAILY_LEDGER_ID_PREFIX}YYYY-MM-DD'.`,
      INVALID_LEDGER_ID,
    );
  }
  const book = new DailyLedgerBook(day, state);

  // Registered before the first await: a Signal-With-Start's charge arrives with the first task.
  wf.setHandler(usageQuery, (argument): UsageAnswer => {
    const parsed = usageQueryArgumentSchema.safeParse(argument ?? {});
    if (!parsed.success) {
      // Fails this query only, and its caller sees only the message: the ledger goes on.
      throw wf.ApplicationFailure.nonRetryable(
        `Invalid usage query: ${describeZodError(parsed.error)}`,
        'InvalidUsageQuery',
      );
    }
    const { chargeIds, reservationIds } = parsed.data;
    return {
      ...book.usage(),
      ...(chargeIds === undefined ? {} : { recorded: chargeIds.filter((chargeId) => book.has(chargeId)) }),
      ...(reservationIds === undefined ? {} : { reservations: book.decisions(reservationIds) }),
    };
  });
  wf.setHandler(chargeSignal, (payload: unknown) => {
    const parsed = chargeSchema.safeParse(payload);
    if (!parsed.success) {
      wf.log.warn('Invalid charge ignored', { error: describeZodError(parsed.error) });
      return;
    }
    if (!book.charge(parsed.data)) wf.log.info('Charge already recorded', { chargeId: parsed.data.chargeId });
  });
  wf.setHandler(reserveSignal, (payload: unknown) => {
    const parsed = reservationSchema.safeParse(payload);
    if (!parsed.success) {
      wf.log.warn('Invalid reservation ignored', { error: describeZodError(parsed.error) });
      return;
    }
    book.reserve(parsed.data, Date.now());
  });

  for (;;) {
    const remainingMs = closesAt - Date.now();
    if (remainingMs <= 0) break;
    if (await wf.condition(() => wf.workflowInfo().continueAsNewSuggested, remainingMs)) {
      await wf.condition(wf.allHandlersFinished);
      return wf.continueAsNew<typeof dailyBudgetLedger>(book.state());
    }
  }
  await wf.condition(wf.allHandlersFinished);
  return book.usage();
}
