import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import type { AgentRunInputDraft, ScriptedTurn } from '../common/agent-input';
import { useAgentsEnvironment } from './helpers/environment';
import { assertReplays } from './helpers/replay';
import { countEvents } from './helpers/history';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

// One dev server for this file, a fresh worker for each test.
const env = useAgentsEnvironment();

/** Every workflow this file starts, replayed at the end to prove the workflow code is deterministic. */
const startedWorkflowIds: string[] = [];

/** Starts a run with no pause after a failure unless the test sets one. */
async function start(
  name: string,
  turns: Array<Partial<ScriptedTurn>>,
  overrides: Partial<AgentRunInputDraft> = {},
) {
  const handle = await env.agents.start(
    scriptedRun(name, turns, {
      maxIterations: 20,
      ...overrides,
      guards: { errorBackoffS: 0, ...overrides.guards },
    }),
  );
  startedWorkflowIds.push(handle.workflowId);
  return handle;
}

/** The durations, in seconds, of every timer the workflow started, in order. */
async function timerDurationsS(handle: WorkflowHandle): Promise<number[]> {
  const history = await handle.fetchHistory();
  return (history.events ?? []).flatMap((event) => {
    const timeout = event.timerStartedEventAttributes?.startToFireTimeout;
    if (timeout == null) return [];
    return [Number(timeout.seconds ?? 0) + (timeout.nanos ?? 0) / 1e9];
  });
}

/** The status and summary of each iteration record of the run called `name`. */
async function recordsOf(name: string): Promise<Array<[string, string]>> {
  return (await env.agents.iterations(name)).map((record) => [record.status, record.summary]);
}

describe('guards of an agent run', () => {
  it('ends the run with repeated_failures after 3 identical failures', async () => {
    const name = uniqueName('same-failures');
    const handle = await start(name, [{ error: 'boom' }]);
    const result = await handle.result();
    assert.equal(result.exitReason, 'repeated_failures');
    assert.equal(result.iterations, 3);
    assert.deepEqual(await recordsOf(name), [
      ['error', '[ERROR: boom]'],
      ['error', '[ERROR: boom]'],
      ['error', '[ERROR: boom]'],
    ]);
    const status = await env.agents.status(name);
    assert.equal(status.exitReason, 'repeated_failures');
    assert.equal(status.stopReason, '3 consecutive identical failures; last signature: boom');
  });

  it('ends the run with repeated_failures after 4 failures of different kinds', async () => {
    const name = uniqueName('mixed-failures');
    const handle = await start(name, [
      { error: 'disk full' },
      { error: 'rate limited' },
      { error: 'bad gateway' },
      { error: 'connection reset' },
    ]);
    const result = await handle.result();
    assert.equal(result.exitReason, 'repeated_failures');
    assert.equal(result.iterations, 4);
    assert.equal(
      (await env.agents.status(name)).stopReason,
      '4 consecutive failures (mixed signatures); last signature: connection reset',
    );
  });

  it('resets both failure counts after a successful iteration', async () => {
    const name = uniqueName('failure-reset');
    // Without the resets the fourth iteration would be the third "boom" and the fifth the fourth failure.
    const handle = await start(
      name,
      [
        { error: 'boom' },
        { error: 'boom' },
        { text: 'step one' },
        { error: 'boom' },
        { error: 'boom' },
        { text: 'step two' },
      ],
      { maxIterations: 6 },
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.iterations, 6);
    assert.deepEqual(
      (await recordsOf(name)).map(([status]) => status),
      ['error', 'error', 'ok', 'error', 'error', 'ok'],
    );
  });

  it('ends the run with stagnation after the same summary 3 times', async () => {
    const name = uniqueName('stagnation');
    const handle = await start(name, [{ text: 'Checked the queue, nothing new.' }], {
      guards: { stagnationWindow: 3 },
    });
    const result = await handle.result();
    assert.equal(result.exitReason, 'stagnation');
    assert.equal(result.iterations, 3);
    assert.equal(
      (await env.agents.status(name)).stopReason,
      'the same summary 3 iterations in a row: "Checked the queue, nothing new."',
    );
  });

  it('never ends the run for stagnation when stagnationWindow is 0', async () => {
    const name = uniqueName('no-stagnation');
    const handle = await start(name, [{ text: 'Checked the queue, nothing new.' }], {
      maxIterations: 5,
      guards: { stagnationWindow: 0 },
    });
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.iterations, 5);
  });

  it("waits out an open circuit breaker's cooldown plus one second before the next iteration", async () => {
    const name = uniqueName('circuit');
    const handle = await start(name, [{ circuitOpenS: 2 }, { text: 'The provider is back.' }], {
      maxIterations: 2,
    });
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const [failed, recovered] = await env.agents.iterations(name);
    assert.equal(failed?.status, 'error');
    assert.match(failed?.error ?? '', /^Circuit breaker OPEN/);
    assert.equal(recovered?.status, 'ok');
    // The interval and the error backoff are 0: the only pause is the cooldown's 2 s + 1 s.
    assert.deepEqual(await timerDurationsS(handle), [3]);
  });

  it('waits errorBackoffS after a failed iteration, and a stop during that wait ends the run at once', async () => {
    const name = uniqueName('error-backoff');
    const handle = await start(name, [{ error: 'boom' }], { guards: { errorBackoffS: 600 } });
    await waitFor('the error backoff to begin', async () => (await timerDurationsS(handle)).length === 1);
    assert.deepEqual(await timerDurationsS(handle), [600]);
    assert.equal((await env.agents.status(name)).state, 'sleeping');

    await env.agents.stop(name, 'no point retrying');
    // The backoff is ten minutes: only a stop that cancels the timer ends the run within the deadline.
    const result = await waitFor('the stopped result', () => handle.result(), 20_000);
    assert.equal(result.exitReason, 'stopped');
    assert.equal(result.iterations, 1);
    assert.equal(await countEvents(handle, 'timerCanceledEventAttributes'), 1);
    assert.equal(await countEvents(handle, 'timerFiredEventAttributes'), 0);
  });

  it('replays every history of this file without a determinism error', async () => {
    const histories = await assertReplays(env.temporal, startedWorkflowIds);
    assert.ok(histories.length >= 7);
  });
});
