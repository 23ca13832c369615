import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import type { ToolBatchInput } from '../activities';
import { workflowIdFor } from '../client/agents-client';
import type { AgentRunInputDraft, PermissionPolicy, ScriptedTurn } from '../common/agent-input';
import type { AgentStatus, TranscriptMessage } from '../common/agent-run-types';
import { permissionSignal, type PermissionPayload } from '../common/messages';
import type { AgentNotification } from '../common/notification';
import { useAgentsEnvironment } from './helpers/environment';
import { assertReplays } from './helpers/replay';
import { scheduledInputs, scheduledModelTurns } from './helpers/history';
import { scriptedRun, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

// One dev server and one sandbox server for this file, a fresh worker for each test.
const env = useAgentsEnvironment({ withSandbox: true });

/** Every workflow this file starts, replayed at the end to prove the workflow code is deterministic. */
const startedWorkflowIds: string[] = [];

/** What a permission request ID looks like: `pr_` and 16 hex digits. */
const REQUEST_ID = /^pr_[0-9a-f]{16}$/;

/** What the model reads for a call a person refused. */
const USER_DENIAL = 'Denied: user rejected this operation';

/**
 * Starts a run of one iteration whose tool calls wait for a person (`ask` mode) unless `policy`
 * says otherwise.
 */
async function start(
  name: string,
  turns: Array<Partial<ScriptedTurn>>,
  policy: Partial<PermissionPolicy> = {},
  overrides: Partial<AgentRunInputDraft> = {},
) {
  const handle = await env.agents.start(
    scriptedRun(name, turns, { maxIterations: 1, permissions: { mode: 'ask', ...policy }, ...overrides }),
  );
  startedWorkflowIds.push(handle.workflowId);
  return handle;
}

/** Sends a `permission` signal to the run called `name`, as the Web UI or the temporal CLI would. */
async function decide(name: string, payload: PermissionPayload): Promise<void> {
  await env.temporal.client.workflow.getHandle(workflowIdFor(name)).signal(permissionSignal, payload);
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

/** The first pending request of a status, failing when there is none. */
function onlyRequest(status: AgentStatus) {
  const [request] = status.pendingPermissions;
  assert.ok(request, 'a pending permission request');
  return request;
}

/** The tool results the model read at the start of its model call number `index` (0-based). */
async function toolResultsOfTurn(handle: WorkflowHandle, index: number) {
  const turns = await scheduledModelTurns(handle);
  const append: TranscriptMessage[] = turns[index]?.input.append ?? [];
  return append.flatMap((message) =>
    message.role === 'tool' ? [{ success: message.success, content: message.content.trim() }] : [],
  );
}

describe('permission requests of an agent run', () => {
  it('waits for approval with the request in status, then runs the command and feeds its output back', async () => {
    const name = uniqueName('approve');
    const input = { command: 'echo approved-output', timeout: 20 };
    const handle = await start(name, [
      { text: 'Asking to run a command.', toolCalls: [{ tool: 'bash', arguments: input }] },
      { text: 'Read the output.' },
    ]);

    const waiting = await waitForPending(name, 1);
    const request = onlyRequest(waiting);
    assert.match(request.requestId, REQUEST_ID);
    assert.equal(request.tool, 'bash');
    assert.deepEqual(request.input, input);
    assert.equal(request.iteration, 1);
    assert.match(request.rationale, /^bash: echo approved-output \(ask mode\)$/);
    assert.equal((await scheduledInputs(handle, 'toolBatch')).length, 0, 'nothing runs before approval');

    await decide(name, { requestId: request.requestId, approve: true, by: 'reviewer' });
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');

    assert.deepEqual(await toolResultsOfTurn(handle, 1), [{ success: true, content: 'approved-output' }]);
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.status, 'permission');
    assert.equal(record?.summary, 'Asking to run a command.\nRead the output.');
    const status = await env.agents.status(name);
    assert.deepEqual(status.pendingPermissions, []);
    assert.equal(status.ignoredSignals, 0);

    const notices = await scheduledInputs<AgentNotification>(handle, 'notify');
    const asked = notices.find((notice) => notice.kind === 'approval_needed');
    assert.equal(asked?.request?.requestId, request.requestId);
    const decided = notices.find((notice) => notice.kind === 'decided');
    assert.deepEqual(decided?.decision, {
      requestId: request.requestId,
      tool: 'bash',
      approved: true,
      via: 'signal',
      by: 'reviewer',
    });
  });

  it('gives the model the denial and goes on when a person denies and onDeny is continue', async () => {
    const name = uniqueName('deny-continue');
    const handle = await start(
      name,
      [
        { toolCalls: [{ tool: 'bash', arguments: { command: 'echo never > denied.txt' } }] },
        { text: 'Understood, doing something else.' },
      ],
      { onDeny: 'continue' },
    );
    const request = onlyRequest(await waitForPending(name, 1));
    await decide(name, { requestId: request.requestId, approve: false });

    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.deepEqual(await toolResultsOfTurn(handle, 1), [{ success: false, content: USER_DENIAL }]);
    assert.equal((await scheduledInputs(handle, 'toolBatch')).length, 0, 'the denied command never ran');
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.status, 'permission');
  });

  it('ends the run with permission_denied, the command never run, when a person denies by default', async () => {
    const name = uniqueName('deny-stop');
    const handle = await start(name, [
      { toolCalls: [{ tool: 'bash', arguments: { command: 'echo never > denied.txt' } }] },
      { text: 'never reached' },
    ]);
    const request = onlyRequest(await waitForPending(name, 1));
    await decide(name, { requestId: request.requestId, approve: false, by: 'reviewer' });

    const result = await handle.result();
    assert.equal(result.exitReason, 'permission_denied');
    assert.equal(result.iterations, 1);
    assert.equal((await scheduledInputs(handle, 'toolBatch')).length, 0, 'the denied command never ran');
    assert.equal((await scheduledModelTurns(handle)).length, 1, 'the model was not called again');
    const status = await env.agents.status(name);
    assert.equal(status.state, 'stopped');
    assert.equal(status.exitReason, 'permission_denied');
  });

  it('denies and ends the run with permission_timeout when nobody decides in time', async () => {
    const name = uniqueName('timeout');
    const handle = await start(
      name,
      [{ toolCalls: [{ tool: 'bash', arguments: { command: 'echo too late' } }] }, { text: 'never reached' }],
      { timeoutS: 1 },
    );
    const result = await waitFor('the timed-out result', () => handle.result(), 20_000);
    assert.equal(result.exitReason, 'permission_timeout');
    assert.equal((await scheduledInputs(handle, 'toolBatch')).length, 0);
    const notices = await scheduledInputs<AgentNotification>(handle, 'notify');
    const decided = notices.find((notice) => notice.kind === 'decided');
    assert.equal(decided?.decision?.via, 'timeout');
    assert.equal(decided?.decision?.approved, false);
  });

  it('keeps a request open past its original expiry when extendS moves it, then runs it on approval', async () => {
    const name = uniqueName('extend');
    const handle = await start(
      name,
      [{ toolCalls: [{ tool: 'bash', arguments: { command: 'echo extended' } }] }, { text: 'done' }],
      { timeoutS: 3 },
    );
    const original = onlyRequest(await waitForPending(name, 1));
    await decide(name, { requestId: original.requestId, extendS: 30 });
    const extended = await waitFor('the expiry to move', async () => {
      const request = onlyRequest(await env.agents.status(name));
      return request.expiresAt !== original.expiresAt ? request : undefined;
    });
    assert.equal(Date.parse(extended.expiresAt) - Date.parse(original.expiresAt), 30_000);

    // The workflow's timer for the original expiry fires; the request must survive it.
    await waitFor('the original expiry to pass in the workflow', async () => {
      const history = await handle.fetchHistory();
      return (history.events ?? []).some((event) => event.timerFiredEventAttributes != null);
    });
    const status = await env.agents.status(name);
    assert.equal(status.state, 'awaiting_approval');
    assert.deepEqual(status.pendingPermissions, [extended]);
    assert.equal(status.ignoredSignals, 0);

    await decide(name, { requestId: original.requestId, approve: true });
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.deepEqual(await toolResultsOfTurn(handle, 1), [{ success: true, content: 'extended' }]);
  });

  it('ignores and counts a decision for a request that does not exist, changing nothing else', async () => {
    const name = uniqueName('unknown-id');
    const handle = await start(name, [
      { toolCalls: [{ tool: 'bash', arguments: { command: 'echo still waiting' } }] },
      { text: 'done' },
    ]);
    const before = await waitForPending(name, 1);
    const request = onlyRequest(before);
    const unknownId =
      request.requestId === 'pr_0000000000000000' ? 'pr_1111111111111111' : 'pr_0000000000000000';
    await decide(name, { requestId: unknownId, approve: true });
    const after = await waitFor('the signal to be counted as ignored', async () => {
      const status = await env.agents.status(name);
      return status.ignoredSignals === 1 ? status : undefined;
    });
    assert.equal(after.state, 'awaiting_approval');
    assert.deepEqual(after.pendingPermissions, before.pendingPermissions);
    assert.equal(after.iteration, before.iteration);
    assert.equal((await scheduledInputs(handle, 'toolBatch')).length, 0);

    await decide(name, { requestId: request.requestId, approve: true });
    assert.equal((await handle.result()).exitReason, 'max_iterations');
    assert.equal((await env.agents.status(name)).ignoredSignals, 1);
  });

  it('ignores and counts a malformed permission payload', async () => {
    const name = uniqueName('malformed');
    const handle = await start(name, [
      { toolCalls: [{ tool: 'bash', arguments: { command: 'echo still waiting' } }] },
      { text: 'done' },
    ]);
    const before = await waitForPending(name, 1);
    const request = onlyRequest(before);
    await decide(name, { requestId: 'nope', approve: 'yes' } as never);
    // Neither a decision nor an extension: refused by the payload's schema.
    await decide(name, { requestId: request.requestId });
    const after = await waitFor('both signals to be counted as ignored', async () => {
      const status = await env.agents.status(name);
      return status.ignoredSignals === 2 ? status : undefined;
    });
    assert.equal(after.state, 'awaiting_approval');
    assert.deepEqual(after.pendingPermissions, before.pendingPermissions);

    await decide(name, { requestId: request.requestId, approve: true });
    assert.equal((await handle.result()).exitReason, 'max_iterations');
  });

  it('asks for every call of a batch at once and runs only the approved one', async () => {
    const name = uniqueName('two-requests');
    const handle = await start(
      name,
      [
        {
          toolCalls: [
            { tool: 'bash', arguments: { command: 'echo first-ran' } },
            { tool: 'bash', arguments: { command: 'echo second-ran' } },
          ],
        },
        { text: 'done' },
      ],
      { onDeny: 'continue' },
    );
    const both = await waitForPending(name, 2);
    const first = both.pendingPermissions.find((request) => request.input.command === 'echo first-ran');
    const second = both.pendingPermissions.find((request) => request.input.command === 'echo second-ran');
    assert.ok(first && second);
    assert.notEqual(first.requestId, second.requestId);

    await decide(name, { requestId: first.requestId, approve: true });
    const remaining = await waitFor('one request left', async () => {
      const status = await env.agents.status(name);
      return status.pendingPermissions.length === 1 ? status : undefined;
    });
    assert.equal(remaining.state, 'awaiting_approval');
    assert.equal(onlyRequest(remaining).requestId, second.requestId);
    await decide(name, { requestId: second.requestId, approve: false });

    assert.equal((await handle.result()).exitReason, 'max_iterations');
    const batches = await scheduledInputs<ToolBatchInput>(handle, 'toolBatch');
    assert.deepEqual(
      batches.map((batch) => batch.calls.map(({ call }) => call.arguments.command)),
      [['echo first-ran']],
    );
    assert.deepEqual(await toolResultsOfTurn(handle, 1), [
      { success: true, content: 'first-ran' },
      { success: false, content: USER_DENIAL },
    ]);
  });

  it('applies allow and deny rules without asking, asks for the rest, and lets read_file pass in ask mode', async () => {
    const name = uniqueName('rules');
    const handle = await start(
      name,
      [
        {
          toolCalls: [
            { tool: 'bash', arguments: { command: 'echo safe > note.txt' } },
            { tool: 'bash', arguments: { command: 'rm -rf /workspace' } },
          ],
        },
        {
          toolCalls: [
            { tool: 'read_file', arguments: { path: 'note.txt' } },
            { tool: 'bash', arguments: { command: 'echo needs approval' } },
          ],
        },
        { text: 'done' },
      ],
      {
        rules: [
          { action: 'allow', match: 'bash(echo safe*)' },
          { action: 'deny', match: 'bash(*rm -rf*)' },
          { action: 'ask', match: 'bash(*)' },
        ],
      },
    );
    const request = onlyRequest(await waitForPending(name, 1));
    assert.deepEqual(request.input, { command: 'echo needs approval' });
    assert.equal(request.rationale, 'bash: echo needs approval (rule ask bash(*))');
    await decide(name, { requestId: request.requestId, approve: true });
    assert.equal((await handle.result()).exitReason, 'max_iterations');

    assert.deepEqual(await toolResultsOfTurn(handle, 1), [
      { success: true, content: '' },
      {
        success: false,
        content: "Denied by the run's permission policy (rule deny bash(*rm -rf*))",
      },
    ]);
    assert.deepEqual(await toolResultsOfTurn(handle, 2), [
      { success: true, content: 'safe' },
      { success: true, content: 'needs approval' },
    ]);
    const notices = await scheduledInputs<AgentNotification>(handle, 'notify');
    assert.deepEqual(
      notices.filter((notice) => notice.kind === 'approval_needed').map((notice) => notice.request?.input),
      [{ command: 'echo needs approval' }],
      'only the call no rule allowed or denied waited for a person',
    );
    // One notice for the policy's decisions on each batch, every decision in it.
    const byRule = notices
      .flatMap((notice) => notice.decisions ?? [])
      .filter((decision) => decision.via === 'rule');
    assert.deepEqual(
      byRule.map((decision) => [decision.approved, decision.rule]),
      [
        [true, 'allow bash(echo safe*)'],
        [false, 'deny bash(*rm -rf*)'],
      ],
      'the audit names the rule behind each decision it made',
    );
  });

  it('sends one auto_approved notice for the calls it grants in auto-approve mode', async () => {
    const name = uniqueName('auto-approve');
    const handle = await start(
      name,
      [{ toolCalls: [{ tool: 'bash', arguments: { command: 'echo granted' } }] }, { text: 'done' }],
      { mode: 'auto-approve' },
    );
    assert.equal((await handle.result()).exitReason, 'max_iterations');
    assert.deepEqual(await toolResultsOfTurn(handle, 1), [{ success: true, content: 'granted' }]);
    const notices = await scheduledInputs<AgentNotification>(handle, 'notify');
    const granted = notices.filter((notice) => notice.kind === 'auto_approved');
    assert.equal(granted.length, 1);
    assert.equal(granted[0]?.text, 'Auto-approved: bash: echo granted');
    assert.deepEqual(
      granted[0]?.decisions?.map(({ tool, approved, via }) => ({ tool, approved, via })),
      [{ tool: 'bash', approved: true, via: 'auto-approve' }],
    );
    assert.ok(!notices.some((notice) => notice.kind === 'approval_needed'));
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.status, 'ok');
  });

  it('ends the run with stopped when a stop arrives while it awaits approval', async () => {
    const name = uniqueName('stop-awaiting');
    const handle = await start(name, [
      { toolCalls: [{ tool: 'bash', arguments: { command: 'echo never' } }] },
      { text: 'never reached' },
    ]);
    await waitForPending(name, 1);
    await env.agents.stop(name, 'no time to review');

    const result = await waitFor('the stopped result', () => handle.result(), 20_000);
    assert.equal(result.exitReason, 'stopped');
    assert.equal((await scheduledInputs(handle, 'toolBatch')).length, 0);
    const status = await env.agents.status(name);
    assert.equal(status.state, 'stopped');
    assert.deepEqual(status.pendingPermissions, []);
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.summary, '[Stopped during the approval: no time to review]');
  });

  it("shows the exact approve signal JSON in the Web UI's current details", async () => {
    const name = uniqueName('details');
    const handle = await start(name, [
      { toolCalls: [{ tool: 'bash', arguments: { command: 'echo shown' } }] },
      { text: 'done' },
    ]);
    const request = onlyRequest(await waitForPending(name, 1));
    const approveJson = `{"requestId":"${request.requestId}","approve":true}`;
    // What the Web UI reads to show a run's current details.
    const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    assert.ok(
      metadata.currentDetails?.includes(approveJson),
      `current details lack ${approveJson}: ${metadata.currentDetails}`,
    );

    await decide(name, JSON.parse(approveJson) as PermissionPayload);
    assert.equal((await handle.result()).exitReason, 'max_iterations');
    const after = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    assert.ok(!after.currentDetails?.includes(request.requestId), 'a decided request leaves the details');
  });

  it('replays every history of this file without a determinism error', async () => {
    const histories = await assertReplays(env.temporal, startedWorkflowIds);
    assert.ok(histories.length >= 12);
  });
});
