import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Client, Connection, WorkflowFailedError, WorkflowNotFoundError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { temporal as proto } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import {
  createDailyLedgerActivities,
  INVALID_DAILY_USAGE_INPUT,
  type RoomRequest,
} from '../activities/daily-ledger';
import { TASK_QUEUE } from '../common/constants';
import {
  chargeSignal,
  DAILY_LEDGER_ID_PREFIX,
  DAILY_LEDGER_WORKFLOW_TYPE,
  dailyLedgerWorkflowId,
  dayStartMs,
  ledgerClosesAtMs,
  RECENT_CHARGE_IDS_KEPT,
  RESERVATION_HOLD_MS,
  reserveSignal,
  usageQuery,
  utcDay,
  type Charge,
  type Reservation,
  type UsageQueryArgument,
} from '../common/daily-ledger';
import { loadWorkflowBundle } from '../worker/workflow-bundle';
import { DailyLedgerBook, dailyBudgetLedger, INVALID_LEDGER_ID } from '../workflows/daily-ledger';
import { countEvents, signalInputs } from './helpers/history';
import { useAgentsEnvironment } from './helpers/environment';
import { startWorker } from './helpers/worker';
import { waitFor } from './helpers/wait';

// The server suggests continue-as-new after 40 events instead of thousands, so a handful of charges
// exercise it; every test below then also runs across continue-as-new boundaries.
const env = useAgentsEnvironment({ dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 40 } });

const DAY_MS = 86_400_000;
let daysUsed = 0;

/** A day no other test of this file charges: far in the future, or long past when `past`. */
function uniqueDay(options: { past?: boolean } = {}): string {
  daysUsed += 1;
  const base = dayStartMs(options.past === true ? '2020-01-01' : '2100-01-01') ?? 0;
  return utcDay(base + daysUsed * DAY_MS);
}

/** Two independent callers of the activity, as two runs on two workers would be. */
function twoCallers() {
  const first = createDailyLedgerActivities(() => env.temporal.client);
  let secondClient: Client | undefined;
  const second = createDailyLedgerActivities(async () => {
    secondClient ??= new Client({
      connection: env.temporal.connection,
      namespace: env.temporal.config.temporal.namespace,
    });
    return Promise.resolve(secondClient);
  });
  return { first, second };
}

function charge(chargeId: string, tokens: number, costUsd: number): Charge {
  return { chargeId, tokens, costUsd };
}

/** The room a call projected at `tokens` asks for under a daily token limit of `dailyTokens`. */
function room(tokens: number, dailyTokens: number): RoomRequest {
  return { tokens, costUsd: 0, dailyTokens, dailyCostUsd: 0 };
}

/** A reservation for a call projected at `tokens`, under a daily token limit of `dailyTokens`. */
function reservation(reservationId: string, tokens: number, dailyTokens: number): Reservation {
  return { reservationId, ...room(tokens, dailyTokens) };
}

/** Every execution of a ledger's continue-as-new chain, newest first. */
async function historiesOf(workflowId: string) {
  const histories: Array<{ workflowId: string; history: proto.api.history.v1.IHistory }> = [];
  let runId: string | undefined = (await env.temporal.client.workflow.getHandle(workflowId).describe()).runId;
  while (runId !== undefined) {
    const history = await env.temporal.client.workflow.getHandle(workflowId, runId).fetchHistory();
    histories.push({ workflowId, history });
    runId =
      history.events?.[0]?.workflowExecutionStartedEventAttributes?.continuedExecutionRunId || undefined;
  }
  return histories;
}

describe('the daily budget ledger', () => {
  it("charges from two runs add up in one day's ledger", async () => {
    const { first, second } = twoCallers();
    const day = uniqueDay();
    await Promise.all([
      first.dailyUsage({ day, charge: charge('run-a:0', 100, 0.01) }),
      second.dailyUsage({ day, charge: charge('run-b:0', 50, 0.02) }),
    ]);
    const afterThird = await second.dailyUsage({ day, charge: charge('run-b:1', 7, 0.004) });
    assert.deepEqual(afterThird, { day, tokens: 157, costUsd: 0.034, charges: 3 });
    assert.deepEqual(await first.dailyUsage({ day }), afterThird);

    const description = await env.temporal.client.workflow.getHandle(`agents-budget-${day}`).describe();
    assert.equal(description.type, DAILY_LEDGER_WORKFLOW_TYPE);
    assert.equal(description.taskQueue, TASK_QUEUE);
    assert.equal(description.status.name, 'RUNNING');
  });

  it('a retried charge with the same chargeId counts once', async () => {
    const { first, second } = twoCallers();
    const day = uniqueDay();
    const once = await first.dailyUsage({ day, charge: charge('run-a:3', 1000, 0.5) });
    const retries = await Promise.all([
      first.dailyUsage({ day, charge: charge('run-a:3', 1000, 0.5) }),
      second.dailyUsage({ day, charge: charge('run-a:3', 1000, 0.5) }),
    ]);
    assert.deepEqual(once, { day, tokens: 1000, costUsd: 0.5, charges: 1 });
    assert.deepEqual(retries, [once, once]);
    assert.deepEqual(await second.dailyUsage({ day }), once);
    // Every retry reached the ledger as a signal of its own; the charge ID made them one charge.
    const handle = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day));
    assert.equal(await countEvents(handle, 'workflowExecutionSignaledEventAttributes'), 3);
  });

  it('50 runs charging at once all count, and the server refuses none of the calls', async () => {
    // The worker's calls on a connection that does not retry: a refusal by the server (too many updates
    // in flight, too many queries buffered) fails the call instead of hiding behind a backoff.
    const connection = await Connection.connect({
      address: env.temporal.config.temporal.address,
      interceptors: [],
    });
    try {
      const noRetries = new Client({ connection, namespace: env.temporal.config.temporal.namespace });
      const worker = createDailyLedgerActivities(() => noRetries);
      const day = uniqueDay();
      const charges = Array.from({ length: 50 }, (_, run) =>
        charge(`run-${run}:1`, run + 1, (run + 1) / 1000),
      );
      const outcomes = await Promise.allSettled(
        charges.map((sent) => worker.dailyUsage({ day, charge: sent })),
      );
      const failures = outcomes.flatMap((outcome) =>
        outcome.status === 'rejected' ? [String(outcome.reason)] : [],
      );
      assert.deepEqual(failures, []);
      const totals = { day, tokens: 1275, costUsd: 1.275, charges: 50 };
      assert.deepEqual(await worker.dailyUsage({ day }), totals);
      outcomes.forEach((outcome, run) => {
        assert.equal(outcome.status, 'fulfilled');
        // Each run's answer includes at least its own charge, and never more than all of them.
        const { tokens, charges: counted } = outcome.value;
        assert.ok(tokens >= run + 1 && tokens <= totals.tokens && counted <= totals.charges, `run ${run}`);
      });
    } finally {
      await connection.close();
    }
  });

  it('grants 50 racing calls only the room the limit leaves, and a charge ends its hold', async () => {
    const { first, second } = twoCallers();
    const day = uniqueDay();
    await first.dailyUsage({ day, charge: charge('earlier:0', 9_000, 0) });
    // 1,000 tokens are left of 10,000: room for nine calls of 100, since a tenth would reach the limit.
    const callers = Array.from({ length: 50 }, (_, run) => (run % 2 === 0 ? first : second));
    const decisions = await Promise.all(
      callers.map((caller, run) => caller.admitCall(day, `run-${run}:call:1`, room(100, 10_000))),
    );
    const granted = decisions.flatMap((decision, run) => (decision.granted ? [run] : []));
    assert.equal(granted.length, 9);
    // One at a time: each grant counted the ones before it, and every refusal counted all nine.
    assert.deepEqual(
      decisions
        .filter((decision) => decision.granted)
        .map((decision) => decision.tokens)
        .sort(),
      [9_000, 9_100, 9_200, 9_300, 9_400, 9_500, 9_600, 9_700, 9_800],
    );
    for (const decision of decisions.filter((each) => !each.granted)) {
      assert.deepEqual(decision, { granted: false, tokens: 9_900, costUsd: 0 });
    }

    // The calls spend less than they held: their charges free the difference for the next call.
    for (const [index, run] of granted.entries()) {
      await callers[run]?.chargeCall(day, charge(`run-${run}:call:1`, index === 0 ? 50 : 100, 0));
    }
    const next = await second.admitCall(day, 'late:call:0', room(100, 10_000));
    assert.deepEqual(next, { granted: true, tokens: 9_850, costUsd: 0 });
    const last = await first.admitCall(day, 'later:call:0', room(100, 10_000));
    assert.deepEqual(last, { granted: false, tokens: 9_950, costUsd: 0 });
    const { tokens } = await first.dailyUsage({ day });
    assert.equal(tokens, 9_850, 'a hold is not spend: the totals count charges only');
  });

  it('lets calls start on the worker alone while far from the limit, counting those under way', async () => {
    const { first } = twoCallers();
    const day = uniqueDay();
    const decisions = [];
    for (let call = 0; call < 10; call += 1) {
      decisions.push(await first.admitCall(day, `run:call:${call}`, room(100, 1_000)));
    }
    // Eight calls start unasked; from 90 % of the limit the ledger decides, counting the eight.
    assert.deepEqual(
      decisions.map(({ granted, tokens }) => [granted, tokens]),
      [0, 100, 200, 300, 400, 500, 600, 700, 800].map((tokens) => [true, tokens]).concat([[false, 900]]),
    );
    const ledger = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day));
    assert.equal(
      await countEvents(ledger, 'workflowExecutionSignaledEventAttributes'),
      2,
      'two asked the ledger',
    );

    // Three calls failed: they no longer count, and the next call starts unasked again.
    for (const call of [0, 1, 2]) first.forgetCall(day, `run:call:${call}`);
    assert.deepEqual(await first.admitCall(day, 'run:call:10', room(100, 1_000)), {
      granted: true,
      tokens: 600,
      costUsd: 0,
    });
    assert.equal(await countEvents(ledger, 'workflowExecutionSignaledEventAttributes'), 2);
  });

  it('counts a call waiting for the ledger as under way, so a smaller call cannot start beside it unasked', async () => {
    const { first } = twoCallers();
    const day = uniqueDay();
    await first.dailyUsage({ day, charge: charge('earlier:0', 850, 0) });
    // Of 1,000 tokens, 850 are spent. The call of 140 nears the limit and asks the ledger; while
    // it waits, the call of 40 would stay under 90 % on its own (890), but not beside it (1,030).
    const [large, small] = await Promise.all([
      first.admitCall(day, 'large:call:0', room(140, 1_000)),
      first.admitCall(day, 'small:call:0', room(40, 1_000)),
    ]);
    assert.deepEqual(
      [large.granted, small.granted].filter(Boolean),
      [true],
      `only one of the two fits: ${JSON.stringify({ large, small })}`,
    );
    const ledger = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day));
    const asked = (await signalInputs<Reservation>(ledger, 'reserve')).map((each) => each.reservationId);
    assert.deepEqual(asked.sort(), ['large:call:0', 'small:call:0'], 'both asked the ledger');
  });

  it('answers with the charge added when the ledger has not recorded it yet', async () => {
    const { first } = twoCallers();
    const day = uniqueDay();
    const recorded = await first.dailyUsage({ day, charge: charge('seen:0', 10, 0.1) });
    // The charge's signal is held back, as if still on its way: the ledger answers without it.
    const held = createDailyLedgerActivities(
      () =>
        new Client({
          connection: env.temporal.connection,
          namespace: env.temporal.config.temporal.namespace,
          interceptors: { workflow: [{ signalWithStart: () => Promise.resolve('held-back') }] },
        }),
    );
    assert.deepEqual(await held.dailyUsage({ day, charge: charge('held:0', 5, 0.05) }), {
      day,
      tokens: 15,
      costUsd: 0.15,
      charges: 2,
    });
    assert.deepEqual(await first.dailyUsage({ day }), recorded);
  });

  it('charges count once across continue-as-new, even racing it, and every run of the ledger replays', async () => {
    const { first } = twoCallers();
    const day = uniqueDay();
    for (let call = 0; call < 15; call += 1) {
      await first.dailyUsage({ day, charge: charge(`run-long:${call}`, 10, 0.001) });
    }
    const handle = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day));
    const description = await handle.describe();
    assert.notEqual(description.runId, description.raw.workflowExecutionInfo?.firstRunId, 'continued as new');

    // A retry of the very first charge reaches a later run than the one that recorded it.
    const retried = await first.dailyUsage({ day, charge: charge('run-long:0', 10, 0.001) });
    assert.deepEqual(retried, { day, tokens: 150, costUsd: 0.015, charges: 15 });
    // Charges racing a continue-as-new, each sent twice, still count once each.
    const racing = Array.from({ length: 20 }, (_, call) => charge(`run-race:${call}`, 1, 0.0001));
    await Promise.all([...racing, ...racing].map((sent) => first.dailyUsage({ day, charge: sent })));
    assert.deepEqual(await first.dailyUsage({ day }), { day, tokens: 170, costUsd: 0.017, charges: 35 });
    const histories = await historiesOf(handle.workflowId);
    assert.ok(histories.length >= 2);
    const recordTo = process.env.AGENTS_RECORD_HISTORIES;
    if (recordTo !== undefined && recordTo !== '') {
      // Named for the workflow ID: the ledger reads its day from it when the history is replayed.
      await mkdir(recordTo, { recursive: true });
      const oldest = histories.at(-1)!;
      await writeFile(path.join(recordTo, `${oldest.workflowId}.json`), JSON.stringify(oldest.history));
    }
    const bundle = await loadWorkflowBundle(path.join(env.temporal.home, 'cache'));
    let replayed = 0;
    for await (const result of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) {
      assert.equal(result.error, undefined, `${result.workflowId}: ${String(result.error)}`);
      replayed += 1;
    }
    assert.equal(replayed, histories.length);
  });

  it('reading a day with no ledger returns zero and starts none', async () => {
    const { first } = twoCallers();
    const day = uniqueDay();
    assert.deepEqual(await first.dailyUsage({ day }), { day, tokens: 0, costUsd: 0, charges: 0 });
    await assert.rejects(
      env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day)).describe(),
      WorkflowNotFoundError,
    );
  });

  it('the activity refuses a bad charge, and the ledger ignores an invalid charge signal', async () => {
    const { first } = twoCallers();
    const day = uniqueDay();
    const recorded = await first.dailyUsage({ day, charge: charge('good:0', 20, 0.2) });

    await assert.rejects(
      first.dailyUsage({ day, charge: charge('bad:0', -5, 0) }),
      (error: unknown) =>
        error instanceof ApplicationFailure &&
        error.type === INVALID_DAILY_USAGE_INPUT &&
        error.nonRetryable &&
        /charge\.tokens/.test(error.message),
    );
    await assert.rejects(
      first.dailyUsage({ day: '2100-02-30' }),
      (error: unknown) => error instanceof ApplicationFailure && error.type === INVALID_DAILY_USAGE_INPUT,
    );

    // Sent past the activity straight to the ledger, invalid charges are ignored, not recorded.
    const handle = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day));
    await handle.signal(chargeSignal, { chargeId: 'bad:1', tokens: 1.5, costUsd: 0.1 });
    await handle.signal(chargeSignal, 'not a charge' as unknown as Charge);
    await handle.signal(chargeSignal, { chargeId: 'bad:2', tokens: 1, costUsd: 0.1, extra: 1 } as Charge);
    await handle.signal(reserveSignal, { ...reservation('bad:3', 1, 10), dailyTokens: -1 });
    const after = await first.dailyUsage({ day, charge: charge('good:1', 3, 0.03) });
    // Signals are handled in order, so once the last one is recorded the invalid ones were handled.
    await waitFor('the last charge recorded', async () => {
      const answer = await handle.query(usageQuery, { chargeIds: ['good:1'] });
      return answer.recorded?.includes('good:1');
    });
    assert.deepEqual(after, { day, tokens: 23, costUsd: 0.23, charges: 2 });
    assert.deepEqual(await first.dailyUsage({ day }), after);
    assert.equal(await countEvents(handle, 'workflowExecutionSignaledEventAttributes'), 6);
    assert.deepEqual((await handle.query(usageQuery, { reservationIds: ['bad:3'] })).reservations, {});
    assert.deepEqual(recorded, { day, tokens: 20, costUsd: 0.2, charges: 1 });

    // A malformed usage query fails alone; the ledger answers the next one.
    await assert.rejects(
      handle.query(usageQuery, { chargeIds: [''] }),
      (error: unknown) => error instanceof Error && /^Invalid usage query: .*chargeIds/.test(error.message),
    );
    await assert.rejects(
      handle.query(usageQuery, { chargeIds: ['good:1'], extra: true } as UsageQueryArgument),
      (error: unknown) => error instanceof Error && /^Invalid usage query: .*extra/.test(error.message),
    );
    assert.deepEqual(await first.dailyUsage({ day }), after);
    assert.equal((await handle.describe()).status.name, 'RUNNING');
  });

  it('a usage query asked about charges says which of them are recorded', async () => {
    const { first } = twoCallers();
    const day = uniqueDay();
    await first.dailyUsage({ day, charge: charge('known:0', 4, 0.04) });
    await first.dailyUsage({ day, charge: charge('known:1', 5, 0.05) });
    const handle = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day));
    assert.deepEqual(await handle.query(usageQuery, { chargeIds: ['unknown:0', 'known:1', 'known:0'] }), {
      day,
      tokens: 9,
      costUsd: 0.09,
      charges: 2,
      recorded: ['known:1', 'known:0'],
    });
    assert.deepEqual(await handle.query(usageQuery), { day, tokens: 9, costUsd: 0.09, charges: 2 });
  });

  it('the ledger survives a server restart', async () => {
    const { first, second } = twoCallers();
    const day = utcDay(Date.now());
    await first.dailyUsage({ day, charge: charge('before-crash:0', 300, 0.3) });

    await env.worker.stop();
    await env.temporal.stopServer({ crash: true });
    await env.temporal.restartServer();
    env.worker = await startWorker(env.temporal);

    // Retried like the activity would be while the server comes back: the charge ID keeps it single.
    await waitFor('a charge after the restart', () =>
      second.dailyUsage({ day, charge: charge('after-crash:0', 45, 0.05) }),
    );
    assert.deepEqual(await first.dailyUsage({ day }), { day, tokens: 345, costUsd: 0.35, charges: 2 });
  });

  it('days are separate', async () => {
    const { first, second } = twoCallers();
    const [monday, tuesday] = [uniqueDay(), uniqueDay()];
    await first.dailyUsage({ day: monday, charge: charge('run-a:0', 11, 0.11) });
    await second.dailyUsage({ day: tuesday, charge: charge('run-a:1', 22, 0.22) });
    // The same charge ID on another day is another charge.
    await second.dailyUsage({ day: tuesday, charge: charge('run-a:0', 33, 0.33) });
    assert.deepEqual(await first.dailyUsage({ day: monday }), {
      day: monday,
      tokens: 11,
      costUsd: 0.11,
      charges: 1,
    });
    assert.deepEqual(await first.dailyUsage({ day: tuesday }), {
      day: tuesday,
      tokens: 55,
      costUsd: 0.55,
      charges: 2,
    });
  });

  it('a ledger ends two days after its day, and a charge that comes later is dropped', async () => {
    const { first } = twoCallers();
    const day = uniqueDay({ past: true });
    // Its first charge starts it already past its end: it records the charge, then completes.
    const recorded = await first.dailyUsage({ day, charge: charge('late:0', 70, 0.07) });
    assert.deepEqual(recorded, { day, tokens: 70, costUsd: 0.07, charges: 1 });
    const handle = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day));
    assert.deepEqual(await handle.result(), recorded);

    const dropped = await first.dailyUsage({ day, charge: charge('late:1', 5, 0.005) });
    assert.deepEqual(dropped, { ...recorded, chargeDropped: true });
    assert.deepEqual(await first.dailyUsage({ day }), recorded);
    assert.equal((await handle.describe()).status.name, 'COMPLETED');
  });

  it('a ledger started under an ID that names no day fails at once', async () => {
    const handle = await env.temporal.client.workflow.start(dailyBudgetLedger, {
      workflowId: `${DAILY_LEDGER_ID_PREFIX}someday-${Date.now()}`,
      taskQueue: TASK_QUEUE,
      args: [],
    });
    await assert.rejects(
      handle.result(),
      (error: unknown) =>
        error instanceof WorkflowFailedError &&
        error.cause instanceof ApplicationFailure &&
        error.cause.type === INVALID_LEDGER_ID,
    );
  });
});

describe('the daily ledger book', () => {
  it('forgets only the oldest charge IDs beyond the ones it keeps, and carries the rest', () => {
    const book = new DailyLedgerBook('2100-01-01');
    for (let call = 0; call <= RECENT_CHARGE_IDS_KEPT; call += 1) book.charge(charge(`c${call}`, 1, 0));
    const carried = new DailyLedgerBook('2100-01-01', book.state());
    assert.equal(carried.charge(charge(`c${RECENT_CHARGE_IDS_KEPT}`, 1, 0)), false, 'newest still known');
    assert.equal(carried.charge(charge('c1', 1, 0)), false, 'second oldest still known');
    assert.equal(carried.charge(charge('c0', 1, 0)), true, 'oldest forgotten');
    assert.equal(carried.state().recentChargeIds.length, RECENT_CHARGE_IDS_KEPT);
    assert.equal(carried.usage().charges, RECENT_CHARGE_IDS_KEPT + 2);
  });

  it("holds granted room until that ID's charge or the hold's end, and decides a repeated request anew", () => {
    const book = new DailyLedgerBook('2100-01-01');
    const ask = (id: string, tokens: number, nowMs = 0) =>
      book.reserve(reservation(id, tokens, 1_000), nowMs);
    assert.deepEqual(ask('a', 600), { granted: true, tokens: 0, costUsd: 0 });
    assert.deepEqual(ask('b', 600), { granted: false, tokens: 600, costUsd: 0 });
    assert.deepEqual(ask('a', 600), { granted: true, tokens: 0, costUsd: 0 }, 'not counted against itself');
    book.charge(charge('a', 300, 0));
    assert.deepEqual(ask('b', 600), { granted: true, tokens: 300, costUsd: 0 });
    assert.deepEqual(ask('c', 100, RESERVATION_HOLD_MS - 1), { granted: false, tokens: 900, costUsd: 0 });
    assert.deepEqual(
      ask('c', 100, RESERVATION_HOLD_MS),
      { granted: true, tokens: 300, costUsd: 0 },
      "b's hold ended",
    );
    const carried = new DailyLedgerBook('2100-01-01', book.state());
    assert.deepEqual(carried.decisions(['a', 'b', 'c']), { c: { granted: true, tokens: 300, costUsd: 0 } });
    assert.deepEqual(
      carried.reserve({ ...reservation('d', 0, 0), costUsd: 0.5, dailyCostUsd: 0.6 }, RESERVATION_HOLD_MS),
      { granted: true, tokens: 400, costUsd: 0 },
      'a cost limit is decided on cost; the carried hold of c still counts',
    );
    assert.equal(
      carried.reserve({ ...reservation('e', 0, 0), costUsd: 0.2, dailyCostUsd: 0.6 }, 1).granted,
      false,
    );
  });

  it('adds costs without binary floating-point residue', () => {
    const book = new DailyLedgerBook('2100-01-01');
    book.charge(charge('a', 0, 0.1));
    book.charge(charge('b', 0, 0.2));
    assert.equal(book.usage().costUsd, 0.3);
  });

  it('knows real days from malformed ones and closes a ledger 48 hours after its day', () => {
    assert.equal(dayStartMs('2100-02-30'), undefined);
    assert.equal(dayStartMs('2100-13-01'), undefined);
    assert.equal(dayStartMs('2024-02-29'), Date.UTC(2024, 1, 29));
    assert.equal(ledgerClosesAtMs('2024-02-29'), Date.UTC(2024, 2, 3));
    assert.equal(dailyLedgerWorkflowId('2024-02-29'), 'agents-budget-2024-02-29');
  });
});
