import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import type { temporal } from '@temporalio/proto';
import { z } from 'zod';
import { workflowIdFor } from '../client/agents-client';
import type { AgentStatus, TranscriptMessage } from '../common/agent-run-types';
import { permissionSignal } from '../common/messages';
import type { AgentNotification } from '../common/notification';
import { defineTool } from '../sandbox/external-tool';
import { useAgentsEnvironment } from './helpers/environment';
import { scheduledInputs, scheduledModelTurns } from './helpers/history';
import { ModelApiServer, openaiStream } from './helpers/model-api-server';
import { assertReplays } from './helpers/replay';
import { scriptedRun, TEST_TEMPLATE, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

/**
 * What a person reads about a run outside its data: a tool nobody offers is answered without asking
 * anyone, and the Web UI's timeline and details label every model call, timer, model and cost.
 */

/** The one tool the file's tool server offers. */
const shout = defineTool({
  name: 'shout',
  description: 'Upper-cases its text.',
  input: z.object({ text: z.string() }),
  execute: ({ text }) => Promise.resolve(text.toUpperCase()),
});

// One dev server and one tool server for this file, a fresh worker for each test.
const env = useAgentsEnvironment({ externalTools: [shout] });

/** Workflows this file started, replayed by its last test. */
const startedWorkflowIds: string[] = [];

const servers: ModelApiServer[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});

type HistoryEvent = temporal.api.history.v1.IHistoryEvent;

/** A user-metadata payload of an event as text. */
function metadataText(payload: temporal.api.common.v1.IPayload | null | undefined): string | undefined {
  return payload == null ? undefined : defaultPayloadConverter.fromPayload<string>(payload);
}

/** The summaries of the timers the run started, in order, as the Web UI's timeline shows them. */
async function timerSummaries(handle: WorkflowHandle): Promise<Array<string | undefined>> {
  const events: HistoryEvent[] = (await handle.fetchHistory()).events ?? [];
  return events
    .filter((event) => event.timerStartedEventAttributes != null)
    .map((event) => metadataText(event.userMetadata?.summary));
}

/** Waits until the run awaits approval of exactly `count` requests, and returns its status. */
async function waitForPending(name: string, count: number): Promise<AgentStatus> {
  return waitFor(`agent ${name} to await ${count} approval(s)`, async () => {
    const status = await env.agents.status(name);
    return status.state === 'awaiting_approval' && status.pendingPermissions.length === count
      ? status
      : undefined;
  });
}

/** The tool results the model read at the start of its model call number `index` (0-based). */
async function toolResultsOfCall(handle: WorkflowHandle, index: number) {
  const turns = await scheduledModelTurns(handle);
  const append: TranscriptMessage[] = turns[index]?.input.append ?? [];
  return append.flatMap((message) =>
    message.role === 'tool' ? [[message.tool, message.success, message.content.trim()]] : [],
  );
}

describe('a tool that no tool server offers', () => {
  it('is answered "Unknown tool: X" without asking a person, while an offered tool still waits for one', async () => {
    const name = uniqueName('unknown-tool');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Trying two tools.',
            toolCalls: [
              { tool: 'teleport', arguments: { to: 'mars' } },
              { tool: 'shout', arguments: { text: 'hello' } },
            ],
          },
          { text: 'Read both results.' },
        ],
        { maxIterations: 1, permissions: { mode: 'ask' } },
      ),
    );
    startedWorkflowIds.push(handle.workflowId);
    const waiting = await waitForPending(name, 1);
    const [request] = waiting.pendingPermissions;
    assert.equal(request?.tool, 'shout', 'only the offered tool waits for a person');
    await env.temporal.client.workflow
      .getHandle(workflowIdFor(name))
      .signal(permissionSignal, { requestId: request.requestId, approve: true });
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');

    assert.deepEqual(await toolResultsOfCall(handle, 1), [
      ['teleport', false, 'Unknown tool: teleport'],
      ['shout', true, 'HELLO'],
    ]);
    const notices = await scheduledInputs<AgentNotification>(handle, 'notify');
    assert.deepEqual(
      notices.filter((notice) => notice.kind === 'approval_needed').map((notice) => notice.request?.tool),
      ['shout'],
    );
    assert.ok(
      !notices.some((notice) => notice.decision?.tool === 'teleport'),
      'nothing was decided about it',
    );
    assert.deepEqual(await timerSummaries(handle), [`approval ${request.requestId} (30m)`]);
  });

  it('never opens a request, so a run in ask mode goes on without anyone answering', async () => {
    const name = uniqueName('unknown-only');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [{ toolCalls: [{ tool: 'no_such_tool', arguments: {} }] }, { text: 'Noted: it does not exist.' }],
        // Were a person asked, the short timeout would end the run as permission_timeout.
        { maxIterations: 1, permissions: { mode: 'ask', timeoutS: 5 } },
      ),
    );
    startedWorkflowIds.push(handle.workflowId);
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.deepEqual(await toolResultsOfCall(handle, 1), [
      ['no_such_tool', false, 'Unknown tool: no_such_tool'],
    ]);
    const status = await env.agents.status(name);
    assert.deepEqual(status.pendingPermissions, []);
    assert.equal(
      (await env.agents.iterations(name))[0]?.status,
      'ok',
      'the iteration never waited for approval',
    );
    assert.deepEqual(await timerSummaries(handle), [], 'no approval timer');
    const notices = await scheduledInputs<AgentNotification>(handle, 'notify');
    assert.ok(!notices.some((notice) => notice.kind === 'approval_needed'));
  });
});

describe('what the Web UI shows of a run', () => {
  it('names each model call of an iteration, each timer, the model and its host, and rounds the costs', async () => {
    const server = await ModelApiServer.start();
    servers.push(server);
    // Each call costs (700 × 0.1 + 100 × 0.3) / 1,000,000 = $0.0001; three of them add up in binary
    // floating point to 0.00030000000000000003.
    const usage = { inputTokens: 700, outputTokens: 100 };
    server.reply(
      {
        events: openaiStream({
          toolCalls: [{ id: 'call_1', name: 'shout', argumentPieces: ['{"text":', '"step one"}'] }],
          usage,
        }),
      },
      { events: openaiStream({ textPieces: ['Step one done.'], usage }) },
      { events: openaiStream({ textPieces: ['Step two done.'], usage }) },
    );
    const name = uniqueName('labels');
    const handle = await env.agents.start({
      name,
      template: { name: 'test-program', source: 'file', content: TEST_TEMPLATE },
      model: {
        provider: 'openai',
        model: 'gpt-labels',
        baseUrl: `${server.url}/v1`,
        apiKeyEnv: 'AGENTS_TEST_NO_SUCH_KEY',
        price: { inputUsdPerMTok: 0.1, outputUsdPerMTok: 0.3 },
      },
      intervalS: 1,
      maxIterations: 2,
      permissions: { mode: 'ask' },
      guards: { stagnationWindow: 0 },
    });
    startedWorkflowIds.push(handle.workflowId);
    const [request] = (await waitForPending(name, 1)).pendingPermissions;
    assert.ok(request);
    await env.temporal.client.workflow
      .getHandle(workflowIdFor(name))
      .signal(permissionSignal, { requestId: request.requestId, approve: true });
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');

    assert.deepEqual(
      (await scheduledModelTurns(handle)).map((turn) => turn.summary),
      ['model turn 1.1', 'model turn 1.2', 'model turn 2.1'],
    );
    assert.deepEqual(await timerSummaries(handle), [`approval ${request.requestId} (30m)`, 'interval']);

    const [started] = (await handle.fetchHistory()).events ?? [];
    const staticDetails = metadataText(started?.userMetadata?.details) ?? '';
    const host = new URL(server.url).host;
    assert.ok(
      staticDetails.includes(`**Model:** openai · \`gpt-labels\` at \`${host}\``),
      `static details: ${staticDetails}`,
    );

    assert.equal(result.usage.costUsd, 0.0003);
    assert.equal((await env.agents.status(name)).usage.costUsd, 0.0003);
    assert.deepEqual(
      (await env.agents.iterations(name)).map((record) => record.costUsd),
      [0.0002, 0.0001],
    );
    const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    assert.match(metadata.currentDetails ?? '', /2100 tokens in, 300 out, \$0\.0003/);
  });
});

describe('histories of this file', () => {
  it('replay without a determinism error', async () => {
    const histories = await assertReplays(env.temporal, startedWorkflowIds);
    assert.equal(histories.length, startedWorkflowIds.length);
  });
});
