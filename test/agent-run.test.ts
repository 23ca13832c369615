import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Worker } from '@temporalio/worker';
import { workflowIdFor, type AgentsClient } from '../client/agents-client';
import { permissionSignal, resumeSignal, statusQuery, stopSignal } from '../common/messages';
import { loadWorkflowBundle } from '../worker/workflow-bundle';
import { countEvents, scheduledModelTurns } from './helpers/history';
import { scriptedRun, TEST_TEMPLATE, uniqueName } from './helpers/run-input';
import { testTemporalBinary } from './helpers/temporal-server';
import { useAgentsEnvironment } from './helpers/environment';
import { waitFor } from './helpers/wait';

// One dev server for this file, a fresh worker for each test.
const env = useAgentsEnvironment();

/** Every workflow this file starts, replayed at the end to prove the workflow code is deterministic. */
const startedWorkflowIds: string[] = [];

async function start(...parameters: Parameters<AgentsClient['start']>) {
  const handle = await env.agents.start(...parameters);
  startedWorkflowIds.push(handle.workflowId);
  return handle;
}

async function waitForState(name: string, state: string) {
  return waitFor(`agent ${name} to be ${state}`, async () => {
    const status = await env.agents.status(name);
    return status.state === state ? status : undefined;
  });
}

describe('agentRun on a real Temporal dev server', () => {
  it('runs N iterations with the exact prompts, system prompt and records', async () => {
    const name = uniqueName('iterations');
    const longText = `${'x'.repeat(500)} Summary: wrote the first file.`;
    const handle = await start(
      scriptedRun(
        name,
        [
          { text: longText, usage: { inputTokens: 100, outputTokens: 40 }, costUsd: 0.01 },
          { text: 'Second step done.', usage: { inputTokens: 150, outputTokens: 20 }, costUsd: 0.02 },
          { text: '   ', usage: { inputTokens: 160, outputTokens: 0 } },
        ],
        { args: 'focus on tests', intervalS: 0.5, maxIterations: 3 },
      ),
    );

    const result = await handle.result();
    assert.deepEqual(result, {
      exitReason: 'max_iterations',
      iterations: 3,
      usage: { inputTokens: 410, outputTokens: 60, costUsd: 0.03 },
    });

    const records = await env.agents.iterations(name);
    assert.deepEqual(
      records.map(({ iteration, status, summary, tokensIn, tokensOut }) => ({
        iteration,
        status,
        summary,
        tokensIn,
        tokensOut,
      })),
      [
        { iteration: 1, status: 'ok', summary: longText.slice(-400), tokensIn: 100, tokensOut: 40 },
        { iteration: 2, status: 'ok', summary: 'Second step done.', tokensIn: 150, tokensOut: 20 },
        { iteration: 3, status: 'ok', summary: '(no output)', tokensIn: 160, tokensOut: 0 },
      ],
    );
    for (const record of records) {
      assert.ok(Date.parse(record.timestamp) >= Date.parse(record.startedAt));
      assert.equal(record.durationS, Math.round(record.durationS * 10) / 10);
    }

    const turns = await scheduledModelTurns(handle);
    assert.deepEqual(
      turns.map((turn) => turn.input.append),
      [
        [{ role: 'user', content: 'Begin the program. Args: focus on tests' }],
        [{ role: 'user', content: 'Continue to the next iteration of the program.' }],
        [{ role: 'user', content: 'Continue to the next iteration of the program.' }],
      ],
    );
    assert.deepEqual(
      turns.map((turn) => turn.summary),
      ['model turn 1.1', 'model turn 2.1', 'model turn 3.1'],
    );
    assert.deepEqual(
      turns.map((turn) => [turn.input.baseLength, turn.input.callIndex]),
      [
        [0, 0],
        [2, 1],
        [4, 2],
      ],
    );
    // Only the first turn carries the system prompt; later turns carry only what is new.
    const systemPrompt = turns[0]?.input.full?.systemPrompt ?? '';
    assert.ok(systemPrompt.includes(`=== TASK PROGRAM ===\n${TEST_TEMPLATE}\n=== END PROGRAM ===`));
    assert.match(systemPrompt, /1-2 sentence/);
    assert.deepEqual(
      turns.slice(1).map((turn) => turn.input.full),
      [undefined, undefined],
    );
  });

  it('records a failed model call as an error iteration and goes on to the next', async () => {
    const name = uniqueName('error');
    const handle = await start(
      scriptedRun(name, [{ error: 'upstream exploded' }, { text: 'Recovered.' }], {
        maxIterations: 2,
        guards: { errorBackoffS: 0.5 },
      }),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const [failed, recovered] = await env.agents.iterations(name);
    assert.equal(failed?.status, 'error');
    assert.equal(failed?.summary, '[ERROR: upstream exploded]');
    assert.equal(failed?.error, 'upstream exploded');
    assert.equal(recovered?.status, 'ok');
    assert.equal((await env.agents.status(name)).lastError, 'upstream exploded');
    // The failed turn left nothing in the conversation, so the next iteration begins the program again.
    const turns = await scheduledModelTurns(handle);
    assert.deepEqual(
      turns.map((turn) => turn.input.append[0]?.content),
      ['Begin the program.', 'Begin the program.'],
    );
  });

  it('retries a transient model failure inside the same iteration', async () => {
    const name = uniqueName('transient');
    const handle = await start(
      scriptedRun(name, [{ text: 'Worked on the second try.', error: 'rate limited', failAttempts: 1 }], {
        maxIterations: 1,
      }),
    );
    await handle.result();
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.status, 'ok');
    assert.equal(record?.summary, 'Worked on the second try.');
  });

  it('stops promptly during the interval sleep with exitReason stopped', async () => {
    const name = uniqueName('stop-sleep');
    const handle = await start(scriptedRun(name, [{ text: 'One step.' }], { intervalS: 3600 }));
    await waitForState(name, 'sleeping');
    await env.agents.stop(name, 'enough for today');
    // The interval is an hour: only a stop that wakes the timer ends the run within the deadline.
    const result = await waitFor('the stopped result', () => handle.result(), 20_000);
    assert.equal(result.exitReason, 'stopped');
    assert.equal(result.iterations, 1);
    const status = await handle.query(statusQuery);
    assert.equal(status.state, 'stopped');
    assert.equal(status.stopReason, 'enough for today');
  });

  it('cancels the model turn on stop and still records the iteration', async () => {
    const name = uniqueName('stop-turn');
    const handle = await start(scriptedRun(name, [{ text: 'never seen', delayMs: 600_000 }]));
    await waitFor('the model turn to start', async () => {
      const description = await handle.describe();
      return description.raw.pendingActivities?.some(
        (activity) => activity.activityType?.name === 'modelTurn',
      );
    });
    await handle.signal(stopSignal, { reason: 'changed my mind' });
    const result = await waitFor('the stopped result', () => handle.result(), 20_000);
    assert.equal(result.exitReason, 'stopped');
    const records = await env.agents.iterations(name);
    assert.equal(records.length, 1);
    assert.equal(records[0]?.summary, '[Stopped during the model turn: changed my mind]');
  });

  it('answers status and iterations queries while the run sleeps', async () => {
    const name = uniqueName('queries');
    const handle = await start(
      scriptedRun(
        name,
        [
          { text: 'first', usage: { inputTokens: 10, outputTokens: 1 } },
          { text: 'second', usage: { inputTokens: 20, outputTokens: 2 } },
        ],
        { intervalS: 0.5, maxIterations: 50 },
      ),
    );
    await waitFor('three iterations', async () =>
      (await env.agents.status(name)).iteration >= 3 ? true : undefined,
    );
    await handle.signal(stopSignal, {});
    await handle.result();
    const status = await env.agents.status(name);
    assert.equal(status.name, name);
    assert.equal(status.template, 'test-program');
    assert.equal(status.maxIterations, 50);
    assert.equal(status.exitReason, 'stopped');
    assert.equal(status.stopReason, 'stop requested');
    assert.deepEqual(status.pendingPermissions, []);
    const records = await env.agents.iterations(name);
    assert.equal(status.iteration, records.length);
    assert.equal(
      status.usage.inputTokens,
      records.reduce((sum, record) => sum + record.tokensIn, 0),
    );
    const window = await env.agents.iterations(name, { from: 2, limit: 1 });
    assert.deepEqual(
      window.map((record) => [record.iteration, record.summary]),
      [[2, 'second']],
    );
  });

  it('ignores and counts signals that do not parse or name nothing to act on', async () => {
    const name = uniqueName('signals');
    const handle = await start(scriptedRun(name, [{ text: 'waiting' }], { intervalS: 3600 }));
    await waitForState(name, 'sleeping');
    await handle.signal(permissionSignal, { requestId: 'not-an-id', approve: true });
    await handle.signal(permissionSignal, { requestId: 'pr_0123456789abcdef', approve: true });
    await handle.signal(resumeSignal, {});
    await handle.signal(stopSignal, { reason: 42 } as never);
    const status = await waitFor('four ignored signals', async () => {
      const current = await env.agents.status(name);
      return current.ignoredSignals === 4 ? current : undefined;
    });
    assert.equal(status.state, 'sleeping');
    await env.agents.stop(name);
    assert.equal((await handle.result()).exitReason, 'stopped');
  });

  it('keeps AgentState current for visibility queries, from the client and the temporal CLI', async () => {
    const sleeper = uniqueName('visible-sleeping');
    const finisher = uniqueName('visible-done');
    await start(scriptedRun(sleeper, [{ text: 'zz' }], { intervalS: 3600 }));
    const done = await start(scriptedRun(finisher, [{ text: 'done' }], { maxIterations: 1 }));
    await done.result();

    const sleeping = await waitFor('the sleeping run in visibility', async () => {
      const listings = await env.agents.list({ state: 'sleeping' });
      return listings.some((run) => run.name === sleeper) ? listings : undefined;
    });
    assert.ok(!sleeping.some((run) => run.name === finisher));
    const sleeperListing = sleeping.find((run) => run.name === sleeper);
    assert.equal(sleeperListing?.iteration, 1);
    assert.equal(sleeperListing?.template, 'test-program');

    const temporalCli = await testTemporalBinary();
    const listed = await waitFor('the temporal CLI to list the sleeping run', async () => {
      const { stdout } = await promisify(execFile)(temporalCli, [
        'workflow',
        'list',
        '--address',
        env.temporal.config.temporal.address,
        '--query',
        `AgentState="sleeping" AND AgentName="${sleeper}"`,
        '--output',
        'json',
      ]);
      const executions = JSON.parse(stdout || '[]') as Array<{ execution: { workflowId: string } }>;
      return executions.length > 0 ? executions : undefined;
    });
    assert.deepEqual(
      listed.map((execution) => execution.execution.workflowId),
      [workflowIdFor(sleeper)],
    );

    const stoppedListings = await waitFor('the finished run as stopped', async () => {
      const listings = await env.agents.list({ state: 'stopped' });
      return listings.some((run) => run.name === finisher) ? listings : undefined;
    });
    assert.ok(!stoppedListings.some((run) => run.name === sleeper));
    await env.agents.stop(sleeper);
  });

  it('resends the whole conversation when a worker does not hold it', async () => {
    const name = uniqueName('transcript');
    const handle = await start(
      scriptedRun(name, [{ text: 'a' }, { text: 'b' }], { maxIterations: 2, intervalS: 1 }),
    );
    await waitForState(name, 'sleeping');
    // The worker's conversation store is lost between two turns, as when the next turn runs on another machine.
    await rm(path.join(env.temporal.home, 'transcripts'), { recursive: true, force: true });
    await handle.result();
    const turns = await scheduledModelTurns(handle);
    assert.equal(turns.length, 3, 'the second turn is scheduled again with the whole conversation');
    assert.equal(turns[1]?.input.full, undefined);
    assert.deepEqual(turns[2]?.input.full?.messages, [
      { role: 'user', content: 'Begin the program.' },
      { role: 'assistant', content: 'a' },
    ]);
    const [, second] = await env.agents.iterations(name);
    assert.equal(second?.status, 'ok');
    assert.equal(second?.summary, 'b');
    assert.equal(
      await countEvents(handle, 'activityTaskFailedEventAttributes'),
      1,
      'one turn found no transcript',
    );
  });

  it('replays every history of this file without a determinism error', async () => {
    const histories = await Promise.all(
      startedWorkflowIds.map(async (workflowId) => ({
        workflowId,
        history: await env.temporal.client.workflow.getHandle(workflowId).fetchHistory(),
      })),
    );
    assert.ok(histories.length >= 10);
    const recordTo = process.env.AGENTS_RECORD_HISTORIES;
    if (recordTo !== undefined && recordTo !== '') {
      await mkdir(recordTo, { recursive: true });
      for (const { workflowId, history } of histories) {
        await writeFile(
          path.join(recordTo, `${workflowId.replace(/-[0-9a-f]{8}$/, '')}.json`),
          JSON.stringify(history),
        );
      }
    }
    const bundle = await loadWorkflowBundle(path.join(env.temporal.home, 'cache'));
    const results = Worker.runReplayHistories({ workflowBundle: bundle }, histories);
    let replayed = 0;
    for await (const result of results) {
      assert.equal(result.error, undefined, `${result.workflowId}: ${String(result.error)}`);
      replayed += 1;
    }
    assert.equal(replayed, histories.length);
  });
});
