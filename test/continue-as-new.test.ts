import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { temporal as proto } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { loadWorkflowBundle } from '../worker/workflow-bundle';
import { scheduledModelTurns } from './helpers/history';
import { useAgentsEnvironment } from './helpers/environment';
import { scriptedRun, uniqueName } from './helpers/run-input';

// The server suggests continue-as-new after 40 events instead of thousands.
const env = useAgentsEnvironment({ dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 40 } });

describe('a run longer than one history', () => {
  it('continues as new when Temporal suggests it, carrying iterations, usage and the conversation', async () => {
    const name = uniqueName('long');
    const handle = await env.agents.start(
      scriptedRun(name, [{ text: 'step', usage: { inputTokens: 10, outputTokens: 2 }, costUsd: 0.001 }], {
        args: 'go',
        maxIterations: 12,
      }),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.iterations, 12);
    assert.equal(result.usage.inputTokens, 120);

    const latest = env.temporal.client.workflow.getHandle(handle.workflowId);
    const description = await latest.describe();
    assert.notEqual(description.runId, handle.firstExecutionRunId, 'the run continued as new');

    const records = await env.agents.iterations(name);
    assert.deepEqual(
      records.map((record) => record.iteration),
      Array.from({ length: 12 }, (_, index) => index + 1),
    );

    // The continued run goes on with the same conversation: no second "Begin", no resend.
    const continuedTurns = await scheduledModelTurns(latest);
    assert.ok(continuedTurns.length > 0);
    for (const turn of continuedTurns) {
      assert.equal(turn.input.append[0]?.content, 'Continue to the next iteration of the program.');
      assert.equal(turn.input.full, undefined);
      assert.equal(turn.input.baseLength, turn.input.callIndex * 2);
    }

    // Every run of the chain replays against the current code.
    const histories: Array<{ workflowId: string; history: proto.api.history.v1.IHistory }> = [];
    let runId: string | undefined = description.runId;
    while (runId !== undefined) {
      const history: proto.api.history.v1.IHistory = await env.temporal.client.workflow
        .getHandle(handle.workflowId, runId)
        .fetchHistory();
      histories.push({ workflowId: handle.workflowId, history });
      const started: proto.api.history.v1.IWorkflowExecutionStartedEventAttributes | null | undefined =
        history.events?.[0]?.workflowExecutionStartedEventAttributes;
      runId = started?.continuedExecutionRunId || undefined;
    }
    assert.ok(histories.length >= 2);
    const bundle = await loadWorkflowBundle(path.join(env.temporal.home, 'cache'));
    for await (const replay of Worker.runReplayHistories({ workflowBundle: bundle }, histories)) {
      assert.equal(replay.error, undefined, String(replay.error));
    }
  });
});
