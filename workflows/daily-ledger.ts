import * as wf from '@temporalio/workflow';
import {
  chargeSchema,
  chargeSignal,
  DAILY_LEDGER_ID_PREFIX,
  daySchema,
  ledgerClosesAtMs,
  RECENT_CHARGE_IDS_KEPT,
  usageQuery,
  usageQueryArgumentSchema,
  type Charge,
  type DailyUsage,
  type LedgerState,
  type UsageAnswer,
} from '../common/daily-ledger';
import { describeZodError } from '../common/agent-input';

/** Failure type of a ledger started under a workflow ID that names no UTC day. */
export const INVALID_LEDGER_ID = 'InvalidLedgerId';

/**
 * The arithmetic of one day's ledger, kept apart from the workflow so unit tests can drive it:
 * totals plus the recent charge IDs that make a retried charge count once.
 */
export class DailyLedgerBook {
  readonly #day: string;
  readonly #state: LedgerState;
  readonly #recent: Set<string>;

  constructor(day: string, state?: LedgerState) {
    this.#day = day;
    this.#state = {
      tokens: state?.tokens ?? 0,
      costUsd: state?.costUsd ?? 0,
      charges: state?.charges ?? 0,
      recentChargeIds: [...(state?.recentChargeIds ?? [])].slice(-RECENT_CHARGE_IDS_KEPT),
    };
    this.#recent = new Set(this.#state.recentChargeIds);
  }

  /** Adds the charge unless its ID was already recorded; returns whether it was added. */
  charge(charge: Charge): boolean {
    if (this.#recent.has(charge.chargeId)) return false;
    this.#state.tokens += charge.tokens;
    // Cents of cents add up in binary floating point; nine decimals keep the sum exact enough and readable.
    this.#state.costUsd = Math.round((this.#state.costUsd + charge.costUsd) * 1e9) / 1e9;
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
    return { ...this.#state, recentChargeIds: [...this.#state.recentChargeIds] };
  }
}

/**
 * The ledger of one UTC day, shared by every run of the namespace: runs charge it after each model
 * call (signal `charge`, idempotent by charge ID) and read it (query `usage`). An entity workflow
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
    const { chargeIds } = parsed.data;
    if (chargeIds === undefined) return book.usage();
    return { ...book.usage(), recorded: chargeIds.filter((chargeId) => book.has(chargeId)) };
  });
  wf.setHandler(chargeSignal, (payload: unknown) => {
    const parsed = chargeSchema.safeParse(payload);
    if (!parsed.success) {
      wf.log.warn('Invalid charge ignored', { error: describeZodError(parsed.error) });
      return;
    }
    if (!book.charge(parsed.data)) wf.log.info('Charge already recorded', { chargeId: parsed.data.chargeId });
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
