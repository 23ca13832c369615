import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import type { ToolBatchInput } from '../activities';
import { workflowIdFor } from '../client/agents-client';
import type { AgentStatus, IterationRecord } from '../common/agent-run-types';
import type { AgentNotification } from '../common/notification';
import { useAgentsEnvironment } from './helpers/environment';
import { scheduledInputs } from './helpers/history';
import { ModelApiServer, openaiStream } from './helpers/model-api-server';
import { assertReplays } from './helpers/replay';
import { scriptedRun, TEST_TEMPLATE, uniqueName } from './helpers/run-input';
import { testTemporalBinary } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';
import { startWebhook } from './helpers/webhook';

/**
 * A run cancelled from outside — the Web UI's "Request Cancellation", which is what `temporal
 * workflow cancel` sends — ends as cleanly as one told to `stop`: its requests closed, its end
 * notice sent, its workspace released, and a result that says `cancelled`.
 */

// One dev server and one sandbox server for this file, a fresh worker for each test.
const env = useAgentsEnvironment({ withSandbox: true });

/** Workflows this file started, replayed by its last test. */
const startedWorkflowIds: string[] = [];

/** What the Web UI's current details offer for a request waiting for a person. */
const APPROVE_OFFER = 'Approve: send signal';

let webhook: Awaited<ReturnType<typeof startWebhook>>;
const servers: ModelApiServer[] = [];

before(async () => {
  webhook = await startWebhook();
});
afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
});
after(async () => {
  await webhook.close();
});

/** Cancels the run called `name` with the real `temporal` CLI, as a person at a terminal would. */
async function cancelWithTemporalCli(name: string): Promise<void> {
  await promisify(execFile)(await testTemporalBinary(), [
    'workflow',
    'cancel',
    '--workflow-id',
    workflowIdFor(name),
    '--address',
    env.temporal.config.temporal.address,
    '--namespace',
    env.temporal.config.temporal.namespace,
  ]);
}

/** The Markdown the Web UI shows as the run's current details. */
async function currentDetails(handle: WorkflowHandle): Promise<string> {
  const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
  return metadata.currentDetails ?? '';
}

/** Whether the history holds a cancellation request, and whether its last event completed the run. */
async function cancellationInHistory(
  handle: WorkflowHandle,
): Promise<{ requested: boolean; completed: boolean }> {
  const events = (await handle.fetchHistory()).events ?? [];
  return {
    requested: events.some((event) => event.workflowExecutionCancelRequestedEventAttributes != null),
    completed: events.at(-1)?.workflowExecutionCompletedEventAttributes != null,
  };
}

/** The iteration records the notifier wrote to the run's `log.jsonl`. */
async function loggedRecords(name: string): Promise<IterationRecord[]> {
  const text = await readFile(path.join(env.temporal.home, 'logs', name, 'log.jsonl'), 'utf8');
  return text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as IterationRecord);
}

/** Asserts what every cleanly cancelled run shows: completed, `cancelled` in result and status. */
async function assertEndedCancelled(handle: WorkflowHandle, name: string): Promise<AgentStatus> {
  const result = (await handle.result()) as { exitReason: string; iterations: number };
  assert.equal(result.exitReason, 'cancelled');
  assert.equal(result.iterations, 1);
  const description = await handle.describe();
  assert.equal(description.status.name, 'COMPLETED', 'the workflow completed rather than ending canceled');
  assert.deepEqual(await cancellationInHistory(handle), { requested: true, completed: true });
  const status = await env.agents.status(name);
  assert.equal(status.exitReason, 'cancelled');
  assert.equal(status.state, 'stopped');
  assert.deepEqual(status.pendingPermissions, []);
  assert.match(status.stopReason ?? '', /cancelled/);
  const ended = await waitFor('the end notice at the webhook', () =>
    webhook.bodies.find((body) => body.kind === 'stopped' && body.text.startsWith(`${name}:`)),
  );
  assert.match(ended.text, /Stopped after 1 iterations \(cancelled\): the workflow was cancelled/);
  return status;
}

describe('a run cancelled from the Web UI or temporal workflow cancel', () => {
  it('closes the waiting request, sends the end notice, releases the workspace and completes with exitReason cancelled', async () => {
    const name = uniqueName('cancel-approval');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          { text: 'Looking first.', toolCalls: [{ tool: 'bash', arguments: { command: 'echo looked' } }] },
          { text: 'Cleaning up.', toolCalls: [{ tool: 'bash', arguments: { command: 'rm -rf build' } }] },
          { text: 'Never reached.' },
        ],
        {
          permissions: { mode: 'ask', rules: [{ action: 'allow', match: 'bash(echo *)' }] },
          notifications: { webhookUrl: webhook.url },
        },
      ),
    );
    startedWorkflowIds.push(handle.workflowId);
    const waiting = await waitFor('the run to wait for approval', async () => {
      const status = await env.agents.status(name);
      return status.pendingPermissions.length === 1 ? status : undefined;
    });
    const requestId = waiting.pendingPermissions[0]?.requestId ?? '';
    assert.ok((await currentDetails(handle)).includes(APPROVE_OFFER), 'the details first offer the approval');

    await cancelWithTemporalCli(name);
    await assertEndedCancelled(handle, name);

    const details = await currentDetails(handle);
    assert.ok(!details.includes(APPROVE_OFFER), `the details still offer an approval: ${details}`);
    assert.ok(!details.includes(requestId), 'the closed request left the details');
    assert.match(details, /\*\*State:\*\* stopped/);
    // The workspace the first command used is given back, as after a stop.
    assert.equal((await scheduledInputs(handle, 'releaseWorkspace')).length, 1);
    const [record] = await loggedRecords(name);
    assert.equal(record?.status, 'permission');
    assert.match(record?.summary ?? '', /\[Stopped during the approval: the workflow was cancelled/);
    // The command waiting for approval never ran, and nobody is recorded as having decided it.
    const batches = await scheduledInputs<ToolBatchInput>(handle, 'toolBatch');
    assert.deepEqual(
      batches.flatMap((batch) => batch.calls.map(({ call }) => call.arguments.command)),
      ['echo looked'],
    );
    const notices = await scheduledInputs<AgentNotification>(handle, 'notify');
    assert.ok(
      !notices.some((notice) => notice.kind === 'decided' && notice.decision?.requestId === requestId),
    );
  });

  it('cancels a streaming model turn, hangs up on the provider and still records the iteration', async () => {
    const server = await ModelApiServer.start();
    servers.push(server);
    // An answer that streams for a minute, a chunk every 100 ms: the turn is under way when cancelled.
    const [, word] = openaiStream({ textPieces: ['word '] });
    server.reply({ events: Array.from({ length: 600 }, () => ({ ...word!, delayMs: 100 })) });
    const name = uniqueName('cancel-turn');
    const handle = await env.agents.start({
      name,
      template: { name: 'test-program', source: 'file', content: TEST_TEMPLATE },
      model: {
        provider: 'openai',
        model: 'gpt-cancel',
        baseUrl: `${server.url}/v1`,
        apiKeyEnv: 'AGENTS_TEST_NO_SUCH_KEY',
        stallTimeoutS: 2,
      },
      intervalS: 0,
      permissions: { mode: 'auto-approve' },
      notifications: { webhookUrl: webhook.url },
    });
    startedWorkflowIds.push(handle.workflowId);
    await waitFor('the answer to be streaming', () => server.requests[0]?.state === 'replying');

    await cancelWithTemporalCli(name);
    await assertEndedCancelled(handle, name);

    await waitFor(
      'the provider to be hung up on',
      () => server.requests[0]?.state === 'closed-by-client',
      10_000,
    );
    assert.equal(server.requests.length, 1, 'the turn was not retried');
    const [record] = await env.agents.iterations(name);
    assert.match(record?.summary ?? '', /\[Stopped during the model turn: the workflow was cancelled/);
    assert.match((await currentDetails(handle)).split('\n')[0] ?? '', /stopped/);
  });

  it('wakes a run sleeping between iterations and completes with exitReason cancelled', async () => {
    const name = uniqueName('cancel-sleep');
    const handle = await env.agents.start(
      scriptedRun(name, [{ text: 'One step, then a long rest.' }], {
        intervalS: 3600,
        notifications: { webhookUrl: webhook.url },
      }),
    );
    startedWorkflowIds.push(handle.workflowId);
    await waitFor('the run to sleep', async () => (await env.agents.status(name)).state === 'sleeping');

    await cancelWithTemporalCli(name);
    await assertEndedCancelled(handle, name);
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.summary, 'One step, then a long rest.');
  });

  it('replays every history of this file without a determinism error', async () => {
    const histories = await assertReplays(env.temporal, startedWorkflowIds);
    assert.equal(histories.length, startedWorkflowIds.length);
  });
});
