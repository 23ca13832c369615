import { setTimeout as sleep } from 'node:timers/promises';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { ApplicationFailure, type SignalDefinition } from '@temporalio/common';
import { z } from 'zod';
import { describeZodError } from '../common/agent-input';
import { TASK_QUEUE } from '../common/constants';
import {
  chargeSchema,
  chargeSignal,
  dailyLedgerWorkflowId,
  daySchema,
  reserveSignal,
  UNDERWAY_SENT_MAX,
  usageQuery,
  type Charge,
  type DailyUsage,
  type Reservation,
  type ReservationDecision,
  type UsageAnswer,
} from '../common/daily-ledger';
import { nearDailyLimit, type Spend } from '../workflows/budgets';
import { DailyLedgerBook, dailyBudgetLedger } from '../workflows/daily-ledger';

/** A read of one UTC day's usage, with a charge to record first when `charge` is given. */
export const dailyUsageInputSchema = z.object({ day: daySchema, charge: chargeSchema.optional() }).strict();
export type DailyUsageInput = z.infer<typeof dailyUsageInputSchema>;

/** The day's totals after the charge, if any. */
export interface DailyUsageResult extends DailyUsage {
  /** The day's ledger had already closed (two days after the day), so the charge was not recorded. */
  chargeDropped?: true;
}

/** What a model call asks for room with: its projection and the run's daily limits. */
export type RoomRequest = Omit<Reservation, 'reservationId'>;

/**
 * How often a reservation's sender asks again for the decision a `usage` answer did not carry yet:
 * the ledger decides at its next workflow task, which the query usually waits for already.
 */
const DECISION_POLL_MS = 20;

/**
 * How long a sender waits for a decision before failing the attempt: a ledger without a worker to
 * run it decides nothing, and the retry sends the reservation again, which the ledger decides anew.
 */
const DECISION_WAIT_MS = 30_000;

/** Failure type of a `dailyUsage` call whose input is malformed: retrying cannot fix it. */
export const INVALID_DAILY_USAGE_INPUT = 'InvalidDailyUsageInput';

/**
 * Callers waiting for the next `usage` query of one day's ledger, and the charges and reservations
 * they just sent.
 */
interface QueryRound {
  chargeIds: Set<string>;
  reservationIds: Set<string>;
  answer: Promise<UsageAnswer>;
}

/**
 * What this worker knows of one day without asking: the totals of the last `usage` answer, the
 * charges it sent that the answer did not include yet, the calls it let start that have not
 * charged yet, and the calls waiting for the ledger's decision, each with what it is expected to
 * spend.
 */
interface KnownDay {
  totals?: DailyUsage;
  unconfirmed: Map<string, Charge>;
  underway: Map<string, Spend>;
  asking: Map<string, Spend>;
}

/**
 * What a call is expected to spend: its projection, or for a call without one (a run's first) the
 * day's average charge, so that calls deciding while it is under way count it.
 */
function expectedSpend(request: RoomRequest, day: DailyUsage): Spend {
  if (request.tokens > 0 || request.costUsd > 0 || day.charges === 0) {
    return { tokens: request.tokens, costUsd: request.costUsd };
  }
  return { tokens: Math.ceil(day.tokens / day.charges), costUsd: day.costUsd / day.charges };
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
      entry = { unconfirmed: new Map(), underway: new Map(), asking: new Map() };
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

  async function queryLedger(
    temporal: Client,
    day: string,
    chargeIds: string[],
    reservationIds: string[],
  ): Promise<UsageAnswer> {
    try {
      const handle = temporal.workflow.getHandle(dailyLedgerWorkflowId(day));
      const answer = await handle.query(usageQuery, {
        ...(chargeIds.length === 0 ? {} : { chargeIds }),
        ...(reservationIds.length === 0 ? {} : { reservationIds }),
      });
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
   * signal the server accepted before it; asked about `sent` too, a charge or a reservation. At
   * most one query per ledger is in flight from this worker: while the ledger has a workflow task
   * pending, the server holds one query for it (`history.MaxBufferedQueryCount`, 1 by default) and
   * refuses others with `ResourceExhausted`, which 50 runs charging at once would meet at every
   * charge. Callers that come while a query is in flight share the next one instead.
   */
  function readUsage(
    temporal: Client,
    day: string,
    sent?: { chargeId: string } | { reservationId: string },
  ): Promise<UsageAnswer> {
    let round = nextRound.get(day);
    if (round === undefined) {
      const chargeIds = new Set<string>();
      const reservationIds = new Set<string>();
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
          return queryLedger(temporal, day, [...chargeIds], [...reservationIds]);
        });
      const forget = () => {
        if (lastQuery.get(day) === answer) lastQuery.delete(day);
      };
      void answer.then(forget, forget);
      lastQuery.set(day, answer);
      round = { chargeIds, reservationIds, answer };
      nextRound.set(day, round);
    }
    if (sent !== undefined && 'chargeId' in sent) round.chargeIds.add(sent.chargeId);
    if (sent !== undefined && 'reservationId' in sent) round.reservationIds.add(sent.reservationId);
    return round.answer;
  }

  /**
   * The day's totals including `charge`, whose signal the server accepted: the ledger records it at
   * its next workflow task, which the query normally waits for; should the answer not include it yet,
   * it is added here with the ledger's own arithmetic. Either way the caller sees its own spend.
   */
  async function usageIncluding(temporal: Client, day: string, charge: Charge): Promise<DailyUsage> {
    const answer = await readUsage(temporal, day, charge);
    if (answer.recorded?.includes(charge.chargeId) === true) return totalsOf(answer);
    const { tokens, costUsd, charges } = answer;
    const book = new DailyLedgerBook(day, { tokens, costUsd, charges, recentChargeIds: [] });
    book.charge(charge);
    return book.usage();
  }

  /** Sends `charge` or a reservation to the ledger of `day`; false when the day's ledger has closed. */
  async function sendToLedger<Payload extends Charge | Reservation>(
    temporal: Client,
    day: string,
    signal: SignalDefinition<[Payload]>,
    payload: Payload,
  ): Promise<boolean> {
    try {
      await temporal.workflow.signalWithStart(dailyBudgetLedger, {
        workflowId: dailyLedgerWorkflowId(day),
        taskQueue: TASK_QUEUE,
        signal,
        signalArgs: [payload],
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

  /**
   * The day's spend as this worker knows it: the last totals plus its own charges not yet in them.
   * Asks the ledger first when this worker has no totals for the day yet.
   */
  async function estimate(temporal: Client, day: string): Promise<DailyUsage> {
    const entry = knownDay(day);
    if (entry.totals === undefined) await readUsage(temporal, day);
    const book = new DailyLedgerBook(day, {
      ...(entry.totals ?? { tokens: 0, costUsd: 0, charges: 0 }),
      recentChargeIds: [],
    });
    for (const unconfirmed of entry.unconfirmed.values()) book.charge(unconfirmed);
    return book.usage();
  }

  /**
   * Asks the ledger for room for one call and waits for its decision. The signal is decided at the
   * ledger's next workflow task; a `usage` answer that does not carry the decision yet was given
   * before it, so the sender asks again, for {@link DECISION_WAIT_MS} at most.
   */
  async function reserve(
    temporal: Client,
    day: string,
    reservation: Reservation,
  ): Promise<ReservationDecision> {
    if (!(await sendToLedger(temporal, day, reserveSignal, reservation))) {
      // A closed day takes no charge either: nothing to hold room against.
      const { tokens, costUsd } = await readUsage(temporal, day);
      return { granted: true, tokens, costUsd };
    }
    const giveUpAt = Date.now() + DECISION_WAIT_MS;
    for (;;) {
      const answer = await readUsage(temporal, day, reservation);
      const decision = answer.reservations?.[reservation.reservationId];
      if (decision !== undefined) return decision;
      if (Date.now() >= giveUpAt) {
        throw new Error(
          `The daily ledger ${dailyLedgerWorkflowId(day)} has not decided reservation ` +
            `${reservation.reservationId} within ${DECISION_WAIT_MS / 1000} s; is a worker running?`,
        );
      }
      await sleep(DECISION_POLL_MS);
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
      if (!(await sendToLedger(temporal, day, chargeSignal, charge))) {
        return { ...totalsOf(await readUsage(temporal, day)), chargeDropped: true };
      }
      const entry = knownDay(day);
      entry.underway.delete(charge.chargeId);
      // Unconfirmed until an answer says it is recorded, so the calls deciding meanwhile count it.
      entry.unconfirmed.set(charge.chargeId, charge);
      if (entry.totals === undefined) return usageIncluding(temporal, day, charge);
      const figure = await estimate(temporal, day);
      // The refresh's failure is the next caller's concern: this charge is recorded either way.
      readUsage(temporal, day, charge).catch(() => undefined);
      return figure;
    },

    /**
     * Decides whether a model call may start under the run's daily limits, just before it does.
     * Far from the limits this worker decides alone, from what it knows of the day plus what its
     * calls under way and those waiting for the ledger are expected to spend. Once that reaches
     * `DAILY_EXACT_FROM_SHARE` (90 %) of a limit, the ledger decides (signal `reserve`), in the
     * order requests arrive from every worker, counting the room earlier grants hold and this
     * worker's calls under way and charges it has not seen recorded, so runs racing for the last
     * of a budget cannot all be let through. A call that waits for the ledger counts here until
     * its decision: the ledger's grants meanwhile do not know of the calls this worker lets start
     * alone. What other workers let start on their own before the day neared a limit is the one
     * thing the ledger cannot count. The call's charge ends its hold; {@link forgetCall} ends it
     * on this worker when the call fails.
     */
    async admitCall(day: string, chargeId: string, request: RoomRequest): Promise<ReservationDecision> {
      const temporal = await client();
      const figure = await estimate(temporal, day);
      const entry = knownDay(day);
      entry.underway.delete(chargeId);
      const all = { tokens: figure.tokens, costUsd: figure.costUsd };
      for (const call of [...entry.underway.values(), ...entry.asking.values()]) {
        all.tokens += call.tokens;
        all.costUsd += call.costUsd;
      }
      const hold = expectedSpend(request, figure);
      if (!nearDailyLimit({ sessionTokens: 0, sessionCostUsd: 0, ...request }, all, hold)) {
        entry.underway.set(chargeId, hold);
        return { granted: true, ...all };
      }
      entry.asking.set(chargeId, hold);
      try {
        const decision = await reserve(temporal, day, {
          reservationId: chargeId,
          ...request,
          // The ledger counts those it has neither recorded nor holds room for; calls still
          // asking are decided in their turn, counting this one if it is granted.
          underway: [
            ...[...entry.underway].map(([id, spend]) => ({ chargeId: id, ...spend })),
            ...entry.unconfirmed.values(),
          ].slice(-UNDERWAY_SENT_MAX),
          holdTokens: hold.tokens,
          holdCostUsd: hold.costUsd,
        });
        if (decision.granted) entry.underway.set(chargeId, hold);
        return decision;
      } finally {
        entry.asking.delete(chargeId);
      }
    },

    /** Forgets a call {@link admitCall} let start that will not charge: its attempt failed. */
    forgetCall(day: string, chargeId: string): void {
      known.get(day)?.underway.delete(chargeId);
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

      if (!(await sendToLedger(temporal, day, chargeSignal, charge))) {
        return { ...totalsOf(await readUsage(temporal, day)), chargeDropped: true };
      }
      return usageIncluding(temporal, day, charge);
    },
  };
}

/** The daily ledger activities as the workflow sees them. */
export type DailyLedgerActivities = ReturnType<typeof createDailyLedgerActivities>;
