import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import type { AgentRunInputDraft, BudgetLimits, ScriptedTurn } from '../common/agent-input';
import type { AgentStatus } from '../common/agent-run-types';
import { dailyLedgerWorkflowId, usageQuery, type Reservation } from '../common/daily-ledger';
import { resumeSignal } from '../common/messages';
import type { AgentNotification } from '../common/notification';
import { createActivityDependencies } from '../worker/create-worker';
import { useAgentsEnvironment } from './helpers/environment';
import { assertReplays } from './helpers/replay';
import { scheduledInputs, scheduledModelTurns, signalInputs } from './helpers/history';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';
import { startWorker } from './helpers/worker';

// One dev server for this file, a fresh worker for each test. Daily budgets count the spend of every
// run on this server today, so the tests about them read the day's total rather than assume it.
const env = useAgentsEnvironment();

/** Every workflow this file starts, replayed at the end to prove the workflow code is deterministic. */
const startedWorkflowIds: string[] = [];

/** No limit at all: each test sets the one budget it is about. */
const UNLIMITED: BudgetLimits = { sessionTokens: 0, sessionCostUsd: 0, dailyTokens: 0, dailyCostUsd: 0 };

/** A scripted turn that spends `tokens` tokens. */
function spending(tokens: number, text = `spent ${tokens}`): Partial<ScriptedTurn> {
  return { text, usage: { inputTokens: tokens, outputTokens: 0 } };
}

async function start(
  name: string,
  turns: Array<Partial<ScriptedTurn>>,
  budgets: Partial<BudgetLimits>,
  overrides: Partial<AgentRunInputDraft> = {},
) {
  const handle = await env.agents.start(
    scriptedRun(name, turns, { budgets: { ...UNLIMITED, ...budgets }, ...overrides }),
  );
  startedWorkflowIds.push(handle.workflowId);
  return handle;
}

async function waitForState(
  name: string,
  state: AgentStatus['state'],
  timeoutMs?: number,
): Promise<AgentStatus> {
  return waitFor(
    `agent ${name} to be ${state}`,
    async () => {
      const status = await env.agents.status(name);
      return status.state === state ? status : undefined;
    },
    timeoutMs,
  );
}

/** The notices the run sent, in order, from the inputs of its `notify` activities. */
async function notices(handle: WorkflowHandle): Promise<AgentNotification[]> {
  return scheduledInputs<AgentNotification>(handle, 'notify');
}

/** The kinds of the run's notices that are about budget pauses, in order. */
async function pauseNoticeKinds(handle: WorkflowHandle): Promise<string[]> {
  return (await notices(handle))
    .map((notice) => notice.kind)
    .filter((kind) => kind === 'paused' || kind === 'resumed');
}

describe('budgets of an agent run', () => {
  it('pauses with a reason and a paused notice when the session token budget is used up', async () => {
    const name = uniqueName('session-pause');
    const handle = await start(name, [spending(120)], { sessionTokens: 100 });
    const paused = await waitForState(name, 'paused_budget');
    assert.equal(paused.pauseReason, 'session token budget reached: 120 of 100 tokens');
    assert.equal(paused.iteration, 1, 'paused before the second iteration began');
    assert.equal((await scheduledModelTurns(handle)).length, 1);
    const notice = await waitFor('the paused notice', async () =>
      (await notices(handle)).find((candidate) => candidate.kind === 'paused'),
    );
    assert.match(
      notice.text,
      /^Paused: session token budget reached: 120 of 100 tokens\. Send signal resume/,
    );

    await env.agents.stop(name);
    assert.equal((await handle.result()).exitReason, 'stopped');
  });

  it('pauses again when resumed with no new budgets while still over budget', async () => {
    const name = uniqueName('resume-again');
    const handle = await start(name, [spending(120)], { sessionTokens: 100 });
    await waitForState(name, 'paused_budget');
    await handle.signal(resumeSignal, {});
    await waitFor('a second paused notice', async () => {
      const kinds = await pauseNoticeKinds(handle);
      return kinds.length >= 3 ? kinds : undefined;
    });
    assert.deepEqual(await pauseNoticeKinds(handle), ['paused', 'resumed', 'paused']);
    const status = await env.agents.status(name);
    assert.equal(status.state, 'paused_budget');
    assert.equal(status.ignoredSignals, 0);
    assert.equal((await scheduledModelTurns(handle)).length, 1, 'no model call while over budget');

    await env.agents.stop(name);
    assert.equal((await handle.result()).exitReason, 'stopped');
  });

  it('continues to completion when resumed with raised budgets, and status shows them', async () => {
    const name = uniqueName('resume-raised');
    const handle = await start(name, [spending(120)], { sessionTokens: 100 }, { maxIterations: 2 });
    await waitForState(name, 'paused_budget');
    await handle.signal(resumeSignal, { budgets: { sessionTokens: 1000 } });

    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.iterations, 2);
    assert.equal(result.usage.inputTokens, 240);
    const status = await env.agents.status(name);
    assert.deepEqual(status.budgets, { ...UNLIMITED, sessionTokens: 1000 });
    assert.equal(status.pauseReason, null);
    assert.deepEqual(await pauseNoticeKinds(handle), ['paused', 'resumed']);
  });

  it('pauses before the next model call when the last call projects past the budget', async () => {
    const name = uniqueName('projected');
    const handle = await start(name, [spending(60)], { sessionTokens: 100 });
    // 60 used is below 100, so the second iteration begins; 60 + 60 would reach it, so its model call waits.
    const paused = await waitForState(name, 'paused_budget');
    assert.equal(
      paused.pauseReason,
      'session token budget would be exceeded by the next request: 60 + 60 of 100 tokens',
    );
    assert.equal(paused.iteration, 2);
    assert.equal(paused.usage.inputTokens, 60);
    assert.equal((await scheduledModelTurns(handle)).length, 1, 'the second model call never started');

    await env.agents.stop(name);
    assert.equal((await handle.result()).exitReason, 'stopped');
    assert.equal((await scheduledModelTurns(handle)).length, 1);
  });

  it('stops cleanly while paused, with exitReason stopped and no further model call', async () => {
    const name = uniqueName('stop-paused');
    const handle = await start(name, [spending(120)], { sessionTokens: 100 });
    await waitForState(name, 'paused_budget');
    await env.agents.stop(name, 'over budget for today');

    const result = await waitFor('the stopped result', () => handle.result(), 20_000);
    assert.deepEqual(result, {
      exitReason: 'stopped',
      iterations: 1,
      usage: { inputTokens: 120, outputTokens: 0, costUsd: 0 },
    });
    const status = await env.agents.status(name);
    assert.equal(status.state, 'stopped');
    assert.equal(status.stopReason, 'over budget for today');
    assert.equal(status.pauseReason, null);
    assert.equal((await scheduledModelTurns(handle)).length, 1);
    const kinds = (await notices(handle)).map((notice) => notice.kind);
    assert.equal(kinds.at(-1), 'stopped');
    assert.ok(!kinds.includes('resumed'));
  });

  it('warns once at 80 % and once at 95 % of a budget', async () => {
    const name = uniqueName('warnings');
    // Each call small enough that the next, projected from it, stays under the limit: 98 of 100 at the end.
    const sizes = [40, 20, 12, 10, 4, 4, 2, 2, 1, 1, 1, 1];
    const handle = await start(
      name,
      sizes.map((size) => spending(size)),
      { sessionTokens: 100 },
      { maxIterations: sizes.length, guards: { stagnationWindow: 0 } },
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.usage.inputTokens, 98);
    const warnings = (await notices(handle)).filter((notice) => notice.kind === 'warning');
    assert.deepEqual(
      warnings.map((warning) => warning.text),
      [
        'Budget warning: session token budget 80% used: 82 of 100 tokens',
        'Budget warning: session token budget 95% used: 95 of 100 tokens',
      ],
    );
    assert.deepEqual(
      warnings.map((warning) => warning.iteration),
      [4, 9],
      'each sent at the check after the call that crossed it',
    );
  });

  it('warns again at 80 % of a budget that a resume raised', async () => {
    const name = uniqueName('warnings-raised');
    // 82 of 100 warns; the fifth call's 30 reaches 112 and pauses; raised to 200, the run warns at 162.
    const turns = [40, 20, 12, 10, 30, 10].map((size) => spending(size));
    const handle = await start(
      name,
      turns,
      { sessionTokens: 100 },
      {
        maxIterations: 11,
        model: { provider: 'scripted', turns, whenExhausted: 'repeat-last' },
      },
    );
    await waitForState(name, 'paused_budget');
    await handle.signal(resumeSignal, { budgets: { sessionTokens: 200 } });
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.usage.inputTokens, 172);
    const warnings = (await notices(handle)).filter((notice) => notice.kind === 'warning');
    assert.deepEqual(
      warnings.map((warning) => warning.text),
      [
        'Budget warning: session token budget 80% used: 82 of 100 tokens',
        'Budget warning: session token budget 80% used: 162 of 200 tokens',
      ],
    );
  });

  it("pauses a run on the daily token budget because of another run's spend", async () => {
    const first = uniqueName('daily-first');
    const firstHandle = await start(first, [spending(500)], {}, { maxIterations: 1 });
    await firstHandle.result();
    const afterFirst = (await env.agents.status(first)).dailyUsage;
    assert.ok(afterFirst, 'a run that spent reads the day back from the ledger');
    assert.ok(afterFirst.tokens >= 500);

    // The second run alone stays far below its daily budget: only the first run's spend counts it out.
    const second = uniqueName('daily-second');
    const limit = afterFirst.tokens + 300;
    const secondHandle = await start(second, [spending(300)], { dailyTokens: limit });
    const paused = await waitForState(second, 'paused_budget');
    assert.equal(paused.iteration, 1);
    assert.equal(paused.usage.inputTokens, 300);
    assert.deepEqual(paused.dailyUsage, { day: afterFirst.day, tokens: limit, costUsd: 0 });
    assert.equal(
      paused.pauseReason,
      `daily token budget reached: ${limit.toLocaleString('en-US')} of ${limit.toLocaleString('en-US')} tokens`,
    );

    await env.agents.stop(second);
    assert.equal((await secondHandle.result()).exitReason, 'stopped');
  });

  it('charges every model call from its own turn and reads the ledger once while far from the daily limits', async () => {
    const name = uniqueName('daily-far');
    const handle = await start(
      name,
      [spending(10), spending(20), spending(30), spending(40)],
      {
        dailyTokens: 1_000_000_000,
      },
      { maxIterations: 4, intervalS: 0 },
    );
    assert.equal((await handle.result()).exitReason, 'max_iterations');
    assert.equal(
      (await scheduledInputs(handle, 'dailyUsage')).length,
      1,
      'one read, for the first figure of the day',
    );
    const turns = await scheduledModelTurns(handle);
    const charges = turns.map((turn) => turn.input.charge);
    const { runId } = await handle.describe();
    const runKey = `${handle.workflowId}-${runId}`;
    assert.deepEqual(
      charges.map((charge) => charge?.chargeId),
      [0, 1, 2, 3].map((call) => `${runKey}:call:${call}`),
    );
    // Each turn asked for room with the last call's spend, and the worker let it start unasked.
    assert.deepEqual(
      charges.map((charge) => charge?.room?.tokens),
      [0, 10, 20, 30],
    );
    const day = charges[0]?.day ?? '';
    const ledger = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(day));
    const reservations = await signalInputs<Reservation>(ledger, 'reserve');
    assert.deepEqual(
      reservations.filter((reservation) => reservation.reservationId.startsWith(runKey)),
      [],
    );
    const answer = await ledger.query(usageQuery, {
      chargeIds: charges.map((charge) => charge?.chargeId ?? ''),
    });
    assert.equal(answer.recorded?.length, 4, 'the ledger recorded every call once');
    const status = await env.agents.status(name);
    assert.ok(
      status.dailyUsage !== null && status.dailyUsage.tokens >= 100,
      'the run saw its own spend in the day',
    );
  });

  it("asks the ledger for room before every model call once today's spend nears a daily limit", async () => {
    const first = uniqueName('near-first');
    await (await start(first, [spending(2000)], {}, { maxIterations: 1 })).result();
    const today = (await env.agents.status(first)).dailyUsage;
    assert.ok(today);
    const name = uniqueName('near-second');
    // 90 % of the limit is spent already: the cached figure no longer does, every call reads the ledger.
    const limit = today.tokens + 100;
    const handle = await start(
      name,
      [spending(5), spending(5), spending(5)],
      { dailyTokens: limit },
      {
        maxIterations: 3,
        intervalS: 0,
      },
    );
    assert.equal((await handle.result()).exitReason, 'max_iterations');
    assert.equal((await scheduledInputs(handle, 'dailyUsage')).length, 1, 'one read, for the first figure');
    const { runId } = await handle.describe();
    const runKey = `${handle.workflowId}-${runId}`;
    const ledger = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(today.day));
    const reservations = (await signalInputs<Reservation>(ledger, 'reserve')).filter((reservation) =>
      reservation.reservationId.startsWith(runKey),
    );
    assert.deepEqual(
      reservations.map(({ reservationId, tokens, dailyTokens }) => [reservationId, tokens, dailyTokens]),
      [0, 1, 2].map((call) => [`${runKey}:call:${call}`, call === 0 ? 0 : 5, limit]),
    );
  });

  it('lets 50 runs racing for the last of a daily limit overshoot it by no more than one call', async () => {
    const first = uniqueName('race-first');
    await (await start(first, [spending(100)], {}, { maxIterations: 1 })).result();
    const today = (await env.agents.status(first)).dailyUsage;
    assert.ok(today);
    // Room for 80 calls of 100 tokens, raced for by 50 runs that would make 10 calls each.
    const call = 100;
    const room = 80 * call;
    const limit = today.tokens + room;
    const names = Array.from({ length: 50 }, () => uniqueName('race'));
    const handles = await Promise.all(
      names.map((name) =>
        start(name, [spending(call)], { dailyTokens: limit }, { maxIterations: 10, intervalS: 0 }),
      ),
    );
    // One name at a time: 50 pollers at once would load the server more than the runs do.
    const paused: AgentStatus[] = [];
    for (const name of names) paused.push(await waitForState(name, 'paused_budget', 120_000));
    const runsSpent = paused.reduce((sum, status) => sum + status.usage.inputTokens, 0);
    const ledger = env.temporal.client.workflow.getHandle(dailyLedgerWorkflowId(today.day));
    const spent = await waitFor('every charge of the runs in the ledger', async () => {
      const charged = (await ledger.query(usageQuery)).tokens - today.tokens;
      return charged === runsSpent ? charged : undefined;
    });
    assert.ok(spent <= room + call, `spent ${spent} of ${room}: over by more than one call`);
    assert.ok(spent >= room - call, `spent ${spent} of ${room}: paused with room left for a call`);
    for (const status of paused) {
      assert.match(
        status.pauseReason ?? '',
        /^daily token budget (reached|would be exceeded by the next request)/,
      );
    }
    await Promise.all(names.map((name) => env.agents.stop(name)));
    for (const handle of handles) assert.equal((await handle.result()).exitReason, 'stopped');
  });

  it('keeps the daily ledger across a server restart', async () => {
    const first = uniqueName('ledger-before');
    const firstHandle = await start(first, [spending(700)], {}, { maxIterations: 1 });
    await firstHandle.result();
    const spent = (await env.agents.status(first)).dailyUsage;
    assert.ok(spent);

    await env.worker.stop();
    await env.temporal.stopServer({ crash: true });
    await env.temporal.restartServer();
    env.worker = await startWorker(env.temporal, createActivityDependencies(env.temporal.home));

    const second = uniqueName('ledger-after');
    const secondHandle = await waitFor('the restarted server to take a new run', () =>
      start(second, [spending(1)], { dailyTokens: spent.tokens }),
    );
    const paused = await waitForState(second, 'paused_budget');
    assert.equal(paused.iteration, 0, 'paused before its first iteration');
    assert.deepEqual(paused.dailyUsage, spent);
    assert.equal((await scheduledModelTurns(secondHandle)).length, 0);

    await env.agents.stop(second);
    assert.equal((await secondHandle.result()).exitReason, 'stopped');
  });

  it('replays every history of this file without a determinism error', async () => {
    const histories = await assertReplays(env.temporal, startedWorkflowIds);
    assert.ok(histories.length >= 10);
  });
});
