import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Client } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal as proto } from '@temporalio/proto';
import type { AgentRunResult } from '../common/agent-run-types';
import type { AgentNotification } from '../common/notification';
import { workflowIdFor } from '../client/agents-client';
import { AgentsError } from '../client/errors';
import {
  AuditReader,
  auditEntries,
  type AuditEntry,
  type AuditEntryKind,
} from '../client/audit/audit-entries';
import { exportRun } from '../client/audit/export-run';
import { formatMarkdown } from '../client/audit/markdown-export';
import { useAgentsEnvironment } from './helpers/environment';
import { scriptedRun, TEST_TEMPLATE, uniqueName } from './helpers/run-input';
import { waitFor } from './helpers/wait';

// The server suggests continue-as-new after 40 events, so a run of a few iterations spans several executions.
const env = useAgentsEnvironment({
  withSandbox: true,
  dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 40 },
});

const MARKER_ITERATIONS = 8;

/** Each iteration runs `echo marker-<iteration>` in the sandbox, then says what it saw. */
function markerTurns() {
  return Array.from({ length: MARKER_ITERATIONS }, (_, index) => [
    {
      text: `Checking marker-${index + 1}.`,
      toolCalls: [{ tool: 'bash', arguments: { command: `echo marker-${index + 1}` } }],
    },
    { text: `Saw marker-${index + 1}.` },
  ]).flat();
}

let markerRun: Promise<{ name: string; result: AgentRunResult }> | undefined;

/** The run the chain tests export: started by the first test that needs it, under that test's worker. */
function finishedMarkerRun(): Promise<{ name: string; result: AgentRunResult }> {
  markerRun ??= (async () => {
    const name = uniqueName('export');
    const handle = await env.agents.start(
      scriptedRun(name, markerTurns(), {
        args: 'audit me',
        maxIterations: MARKER_ITERATIONS,
        permissions: { mode: 'auto-approve' },
      }),
    );
    return { name, result: await handle.result() };
  })();
  return markerRun;
}

/** A handle through another client: the identity a person's tool gives is what the audit must show. */
function aliceHandle(workflowId: string) {
  const alice = new Client({
    connection: env.temporal.connection,
    namespace: env.temporal.config.temporal.namespace,
    identity: 'alice@audit-desk',
  });
  return alice.workflow.getHandle(workflowId);
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const collected: T[] = [];
  for await (const item of items) collected.push(item);
  return collected;
}

function ofKind<Kind extends AuditEntryKind>(entries: AuditEntry[], kind: Kind) {
  return entries.filter((entry): entry is Extract<AuditEntry, { kind: Kind }> => entry.kind === kind);
}

function count(text: string, part: string): number {
  return text.split(part).length - 1;
}

describe('the audit export of a run', () => {
  it('exports every prompt, model output, tool call and result of a continue-as-new chain', async () => {
    const { name, result } = await finishedMarkerRun();
    assert.equal(result.exitReason, 'max_iterations');
    const entries = await collect(auditEntries(env.temporal.client, workflowIdFor(name)));

    const starts = ofKind(entries, 'run_started');
    assert.ok(starts.length >= 2, `the run spans several executions (${starts.length})`);
    assert.equal(starts[0]?.continuedFrom, undefined);
    assert.equal(starts[0]?.input?.name, name);
    assert.equal(ofKind(entries, 'continued_as_new').length, starts.length - 1);
    for (const [index, start] of starts.entries()) {
      if (index > 0) assert.equal(start.continuedFrom, starts[index - 1]?.runId);
    }
    const times = entries.map((entry) => entry.at);
    assert.deepEqual(times, [...times].sort(), 'entries come in the order they happened');

    const [systemPrompt, ...otherSystemPrompts] = ofKind(entries, 'system_prompt');
    assert.ok(systemPrompt?.text.includes(TEST_TEMPLATE));
    assert.equal(otherSystemPrompts.length, 0);
    const prompts = ofKind(entries, 'prompt');
    assert.deepEqual(
      prompts.map((prompt) => [prompt.iteration, prompt.text]),
      Array.from({ length: MARKER_ITERATIONS }, (_, index) => [
        index + 1,
        index === 0 ? 'Begin the program. Args: audit me' : 'Continue to the next iteration of the program.',
      ]),
    );
    assert.deepEqual(
      ofKind(entries, 'model_output').map((output) => [output.iteration, output.text]),
      markerTurns().map((turn, index) => [Math.floor(index / 2) + 1, turn.text]),
    );

    const markers = Array.from({ length: MARKER_ITERATIONS }, (_, index) => `marker-${index + 1}`);
    const calls = ofKind(entries, 'tool_call');
    assert.deepEqual(
      calls.map((call) => [call.iteration, call.tool, call.arguments]),
      markers.map((marker, index) => [index + 1, 'bash', { command: `echo ${marker}` }]),
    );
    const results = ofKind(entries, 'tool_result');
    assert.deepEqual(
      results.map((toolResult) => [
        toolResult.iteration,
        toolResult.callId,
        toolResult.success,
        toolResult.source,
      ]),
      calls.map((call) => [call.iteration, call.callId, true, 'sandbox']),
    );
    assert.deepEqual(
      results.map((toolResult) => toolResult.output.trim()),
      markers,
    );
    // Each iteration reads: prompt, model output, its tool call, the result, the model's answer to it.
    for (const marker of markers) {
      const story = entries
        .filter((entry) => ['prompt', 'model_output', 'tool_call', 'tool_result'].includes(entry.kind))
        .filter((entry) => JSON.stringify(entry).includes(marker))
        .map((entry) => entry.kind);
      assert.deepEqual(story, ['model_output', 'tool_call', 'tool_result', 'model_output'], marker);
    }

    const ended = entries.at(-1);
    assert.equal(ended?.kind, 'run_ended');
    assert.equal(ended.outcome, 'completed');
    assert.deepEqual(ended.result, result);

    const lines = await collect(await exportRun(env.temporal.client, name, { format: 'jsonl' }));
    assert.deepEqual(
      lines.map((line) => JSON.parse(line) as unknown),
      JSON.parse(JSON.stringify(entries)),
    );
    assert.ok(lines.every((line) => line.endsWith('\n') && !line.slice(0, -1).includes('\n')));
  });

  it('the markdown export tells the same story', async () => {
    const { name } = await finishedMarkerRun();
    const markdown = (await collect(await exportRun(env.temporal.client, name, { format: 'md' }))).join('');

    assert.ok(markdown.startsWith(`# Audit of agent run \`${name}\``));
    assert.ok(markdown.includes('- Args: `audit me`'));
    assert.ok(markdown.includes('permissions: auto-approve'));
    assert.equal(count(markdown, '**System prompt**'), 1);
    assert.ok(markdown.includes('Begin the program. Args: audit me'));
    assert.match(markdown, /_Execution `[0-9a-f-]+` continued as new at /);
    assert.match(markdown, /_Execution `[0-9a-f-]+` started at .*, carrying on after iteration \d+\._/);
    let position = 0;
    for (let iteration = 1; iteration <= MARKER_ITERATIONS; iteration += 1) {
      const marker = `marker-${iteration}`;
      assert.equal(count(markdown, `## Iteration ${iteration}\n`), 1);
      // The iteration's heading, its tool call, the call's output and the model's answer, in order.
      for (const part of [
        `## Iteration ${iteration}\n`,
        `Checking ${marker}.`,
        '**Tool call** `bash`',
        `"command": "echo ${marker}"`,
        '**Tool result** `bash`',
        `\n${marker}\n`,
        `Saw ${marker}.`,
      ]) {
        const found = markdown.indexOf(part, position);
        assert.ok(found >= 0, `"${part}" after position ${position}`);
        position = found + part.length;
      }
    }
    assert.ok(
      markdown.includes(`exit reason \`max_iterations\` after ${MARKER_ITERATIONS} iterations`),
      'the end is told',
    );
  });

  it('tells each approval request and its decision by signal, with who sent it', async () => {
    const name = uniqueName('export-ask');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Two commands.',
            toolCalls: [
              { tool: 'bash', arguments: { command: 'echo approved-marker' } },
              { tool: 'bash', arguments: { command: 'echo denied-marker' } },
            ],
          },
          { text: 'One ran, one was refused.' },
        ],
        { maxIterations: 1, permissions: { mode: 'ask', onDeny: 'continue' } },
      ),
    );
    const pending = await waitFor('two approval requests', async () => {
      const requests = (await env.agents.status(name)).pendingPermissions;
      return requests.length === 2 && requests;
    });
    const requestFor = (command: string) =>
      pending.find((request) => (request.input as { command?: string }).command === command)!.requestId;
    const approvedId = requestFor('echo approved-marker');
    const deniedId = requestFor('echo denied-marker');
    const alice = aliceHandle(handle.workflowId);
    await alice.signal('permission', { requestId: approvedId, approve: true, by: 'alice', note: 'harmless' });
    await alice.signal('permission', {
      requestId: deniedId,
      approve: false,
      by: 'alice',
      note: 'not this one',
    });
    assert.equal((await handle.result()).exitReason, 'max_iterations');

    const entries = await collect(auditEntries(env.temporal.client, handle.workflowId));
    assert.deepEqual(
      ofKind(entries, 'permission_requested').map(({ requestId, tool, input }) => ({
        requestId,
        tool,
        input,
      })),
      [
        { requestId: approvedId, tool: 'bash', input: { command: 'echo approved-marker' } },
        { requestId: deniedId, tool: 'bash', input: { command: 'echo denied-marker' } },
      ],
    );
    const signals = ofKind(entries, 'signal');
    const decisions = ofKind(entries, 'permission_decided');
    assert.deepEqual(
      decisions.map(({ requestId, approved, via, by, note, signal }) => ({
        requestId,
        approved,
        via,
        by,
        note,
        signal,
      })),
      [
        {
          requestId: approvedId,
          approved: true,
          via: 'signal',
          by: 'alice',
          note: 'harmless',
          signal: { at: signals[0]?.at, identity: 'alice@audit-desk', by: 'alice', note: 'harmless' },
        },
        {
          requestId: deniedId,
          approved: false,
          via: 'signal',
          by: 'alice',
          note: 'not this one',
          signal: { at: signals[1]?.at, identity: 'alice@audit-desk', by: 'alice', note: 'not this one' },
        },
      ],
    );
    assert.deepEqual(
      ofKind(entries, 'state').map((entry) => entry.state),
      ['running', 'awaiting_approval', 'running', 'stopped'],
    );
    // The approved call ran in the sandbox; the refused one's result is what the run told the model.
    const [calls, results] = [ofKind(entries, 'tool_call'), ofKind(entries, 'tool_result')];
    assert.deepEqual(
      results.map(({ callId, success, source, output }) => ({
        callId,
        success,
        source,
        output: output.trim(),
      })),
      [
        { callId: calls[0]?.callId, success: true, source: 'sandbox', output: 'approved-marker' },
        {
          callId: calls[1]?.callId,
          success: false,
          source: 'workflow',
          output: 'Denied: user rejected this operation (not this one)',
        },
      ],
    );

    const markdown = (await collect(formatMarkdown(entries))).join('');
    assert.ok(markdown.includes(`**Permission requested** \`${approvedId}\` for \`bash\``));
    assert.ok(
      markdown.includes(
        `**Approved** \`${approvedId}\` (\`bash\`) by alice (identity alice@audit-desk) at ${signals[0]?.at} — "harmless"`,
      ),
    );
    assert.ok(
      markdown.includes(
        `**Denied** \`${deniedId}\` (\`bash\`) by alice (identity alice@audit-desk) at ${signals[1]?.at} — "not this one"`,
      ),
    );
  });

  it('a stop signal appears with its identity, and ignored signals as ignored', async () => {
    const name = uniqueName('export-stop');
    const handle = await env.agents.start(
      scriptedRun(name, [{ text: 'Waiting for the next round.' }], {
        intervalS: 3600,
        permissions: { mode: 'auto-approve' },
      }),
    );
    await waitFor('the run to sleep', async () => (await env.agents.status(name)).state === 'sleeping');
    const alice = aliceHandle(handle.workflowId);
    await alice.signal('poke', {});
    await alice.signal('permission', { approve: 'yes' });
    await alice.signal('stop', { reason: 'the audit is over' });
    assert.equal((await handle.result()).exitReason, 'stopped');

    const entries = await collect(auditEntries(env.temporal.client, handle.workflowId));
    const signals = ofKind(entries, 'signal');
    assert.deepEqual(
      signals.map(({ signal, identity, valid }) => ({ signal, identity, valid })),
      [
        { signal: 'poke', identity: 'alice@audit-desk', valid: false },
        { signal: 'permission', identity: 'alice@audit-desk', valid: false },
        { signal: 'stop', identity: 'alice@audit-desk', valid: true },
      ],
    );
    assert.deepEqual(signals[2]?.payload, { reason: 'the audit is over' });
    assert.match(signals[0]?.problem ?? '', /unknown signal 'poke'/);
    assert.match(signals[1]?.problem ?? '', /invalid payload/);

    const states = ofKind(entries, 'state').map((entry) => entry.state);
    assert.deepEqual(states, ['running', 'sleeping', 'stopped']);
    const timers = ofKind(entries, 'timer');
    assert.deepEqual(
      timers.map(({ event, seconds }) => [event, seconds]),
      [
        ['started', 3600],
        ['cancelled', undefined],
      ],
    );
    const ended = entries.at(-1);
    assert.equal(ended?.kind, 'run_ended');
    assert.equal((ended.result as AgentRunResult).exitReason, 'stopped');

    const markdown = (await collect(formatMarkdown(entries))).join('');
    assert.ok(markdown.includes('- Signal `stop` from `alice@audit-desk` at '));
    assert.ok(markdown.includes('`{"reason":"the audit is over"}`'));
    assert.ok(
      markdown.includes('- Signal `poke` from `alice@audit-desk` at ') &&
        markdown.includes('ignored: unknown'),
    );
    assert.ok(markdown.includes('exit reason `stopped`'));
  });

  it('exports the latest run of a replaced agent, or the earlier one its run ID names', async () => {
    const name = uniqueName('export-replaced');
    const first = await env.agents.start(scriptedRun(name, [{ text: 'First run.' }], { maxIterations: 1 }));
    await first.result();
    const second = await env.agents.start(
      scriptedRun(name, [{ text: 'Second run.' }], { maxIterations: 1 }),
      {
        replace: true,
      },
    );
    await second.result();

    const outputs = async (options: { runId?: string }) =>
      ofKind(
        await collect(auditEntries(env.temporal.client, workflowIdFor(name), options)),
        'model_output',
      ).map((output) => [output.runId, output.text]);
    assert.deepEqual(await outputs({}), [[second.firstExecutionRunId, 'Second run.']]);
    assert.deepEqual(await outputs({ runId: first.firstExecutionRunId }), [
      [first.firstExecutionRunId, 'First run.'],
    ]);

    const unknownRun = '00000000-0000-4000-8000-000000000000';
    await assert.rejects(
      exportRun(env.temporal.client, name, { format: 'jsonl', runId: unknownRun }),
      (error: unknown) =>
        error instanceof AgentsError &&
        error.message ===
          `No agent run '${name}' with run ID ${unknownRun} (workflow agent-${name}) in namespace default`,
    );
    await assert.rejects(
      exportRun(env.temporal.client, name, { format: 'jsonl', runId: 'not-a-run-id' }),
      (error: unknown) =>
        error instanceof AgentsError &&
        error.code === 'invalid_argument' &&
        error.message.startsWith("Invalid run ID 'not-a-run-id': must be a UUID"),
    );
  });

  it('exporting an unknown agent fails with one clear line', async () => {
    const name = uniqueName('nobody');
    const expected = `No agent run '${name}' (workflow agent-${name}) in namespace default`;
    const isNotFound = (error: unknown) =>
      error instanceof AgentsError && error.code === 'not_found' && error.message === expected;
    await assert.rejects(exportRun(env.temporal.client, name, { format: 'md' }), isNotFound);
    await assert.rejects(auditEntries(env.temporal.client, workflowIdFor(name)).next(), isNotFound);
    await assert.rejects(
      exportRun(env.temporal.client, 'Not A Name', { format: 'jsonl' }),
      (error: unknown) => error instanceof AgentsError && error.code === 'invalid_argument',
    );
  });
});

// Notices of the run's own permission decisions, read from synthetic history events.

const RUN_ID = '7d0f5a52-0000-4000-8000-000000000001';
const REQUEST_APPROVED = 'pr_00000000000000a1';
const REQUEST_TIMED_OUT = 'pr_00000000000000b2';

/** A history of one execution built event by event, as the server would hand it out. */
class SyntheticHistory {
  readonly events: proto.api.history.v1.IHistoryEvent[] = [];
  private seconds = Date.parse('2030-01-01T00:00:00Z') / 1000;

  add(attributes: Record<string, unknown>): this {
    this.seconds += 1;
    this.events.push(
      proto.api.history.v1.HistoryEvent.fromObject({
        eventId: this.events.length + 1,
        eventTime: { seconds: this.seconds, nanos: 0 },
        ...attributes,
      }),
    );
    return this;
  }

  started(): this {
    const input = scriptedRun('audited', [{ text: 'hi' }], { permissions: { mode: 'ask' } });
    return this.add({
      workflowExecutionStartedEventAttributes: {
        identity: 'cli@host',
        input: { payloads: [defaultPayloadConverter.toPayload(input)] },
      },
    });
  }

  notice(notification: Partial<AgentNotification>): this {
    const full = {
      id: `key:${this.events.length}`,
      agent: 'audited',
      runKey: 'key',
      text: '',
      ...notification,
    };
    return this.add({
      activityTaskScheduledEventAttributes: {
        activityId: String(this.events.length + 1),
        activityType: { name: 'notify' },
        input: { payloads: [defaultPayloadConverter.toPayload(full)] },
      },
    });
  }

  signal(signalName: string, payload: unknown, identity: string): this {
    return this.add({
      workflowExecutionSignaledEventAttributes: {
        signalName,
        identity,
        input: { payloads: [defaultPayloadConverter.toPayload(payload)] },
      },
    });
  }

  timeAt(eventIndex: number): string {
    return new Date(Number(this.events[eventIndex]?.eventTime?.seconds) * 1000).toISOString();
  }

  entries(): AuditEntry[] {
    const reader = new AuditReader('agent-audited');
    return this.events.flatMap((event) => reader.read(RUN_ID, event));
  }
}

function approvalRequest(requestId: string, command: string) {
  return {
    requestId,
    tool: 'bash',
    input: { command },
    rationale: 'bash is not read-only',
    iteration: 2,
    requestedAt: '2030-01-01T00:00:02.000Z',
    expiresAt: '2030-01-01T00:30:02.000Z',
  };
}

describe('permission decisions in the audit', () => {
  it('tells a request and its approval by signal, with who sent the signal and when', async () => {
    const history = new SyntheticHistory()
      .started()
      .notice({
        kind: 'approval_needed',
        iteration: 2,
        request: approvalRequest(REQUEST_APPROVED, 'rm -rf build'),
      })
      .signal(
        'permission',
        { requestId: REQUEST_APPROVED, approve: true, by: 'alice', note: 'build is scratch' },
        'agents-cli alice@laptop',
      )
      .notice({
        kind: 'decided',
        iteration: 2,
        decision: {
          requestId: REQUEST_APPROVED,
          tool: 'bash',
          approved: true,
          via: 'signal',
          by: 'alice',
          note: 'build is scratch',
        },
      });
    const entries = history.entries();
    const signalAt = history.timeAt(2);

    assert.deepEqual(ofKind(entries, 'permission_requested'), [
      {
        at: history.timeAt(1),
        runId: RUN_ID,
        kind: 'permission_requested',
        ...approvalRequest(REQUEST_APPROVED, 'rm -rf build'),
      },
    ]);
    const [decided] = ofKind(entries, 'permission_decided');
    assert.deepEqual(decided, {
      at: history.timeAt(3),
      runId: RUN_ID,
      iteration: 2,
      kind: 'permission_decided',
      requestId: REQUEST_APPROVED,
      tool: 'bash',
      approved: true,
      via: 'signal',
      by: 'alice',
      note: 'build is scratch',
      signal: { at: signalAt, identity: 'agents-cli alice@laptop', by: 'alice', note: 'build is scratch' },
    });
    assert.equal(ofKind(entries, 'signal')[0]?.valid, true);

    const markdown = (await collect(formatMarkdown(entries))).join('');
    assert.ok(markdown.includes('## Iteration 2\n'));
    assert.ok(markdown.includes(`**Permission requested** \`${REQUEST_APPROVED}\` for \`bash\``));
    assert.ok(markdown.includes('"command": "rm -rf build"'));
    assert.ok(
      markdown.includes(
        `**Approved** \`${REQUEST_APPROVED}\` (\`bash\`) by alice (identity agents-cli alice@laptop) at ${signalAt} — "build is scratch"`,
      ),
      markdown,
    );
  });

  it('tells a request denied because nobody decided in time, and the run’s other notices', async () => {
    const history = new SyntheticHistory()
      .started()
      .notice({
        kind: 'approval_needed',
        iteration: 3,
        request: approvalRequest(REQUEST_TIMED_OUT, 'make deploy'),
      })
      .add({ timerStartedEventAttributes: { timerId: '1', startToFireTimeout: { seconds: 1800 } } })
      .add({ timerFiredEventAttributes: { timerId: '1' } })
      .notice({
        kind: 'decided',
        iteration: 3,
        decision: { requestId: REQUEST_TIMED_OUT, tool: 'bash', approved: false, via: 'timeout' },
      })
      .notice({
        kind: 'auto_approved',
        iteration: 3,
        decision: {
          requestId: 'pr_00000000000000c3',
          tool: 'read_file',
          approved: true,
          via: 'rule',
          rule: 'read_file',
        },
      })
      .notice({ kind: 'paused', iteration: 3, text: 'Paused: the session budget of 1000 tokens is spent' });
    const entries = history.entries();

    const decisions = ofKind(entries, 'permission_decided');
    assert.deepEqual(
      decisions.map(({ requestId, approved, via, signal, rule }) => ({
        requestId,
        approved,
        via,
        signal,
        rule,
      })),
      [
        { requestId: REQUEST_TIMED_OUT, approved: false, via: 'timeout', signal: undefined, rule: undefined },
        {
          requestId: 'pr_00000000000000c3',
          approved: true,
          via: 'rule',
          signal: undefined,
          rule: 'read_file',
        },
      ],
    );
    assert.deepEqual(
      ofKind(entries, 'timer').map(({ event, seconds }) => [event, seconds]),
      [
        ['started', 1800],
        ['fired', undefined],
      ],
    );
    assert.deepEqual(ofKind(entries, 'notice'), [
      {
        at: history.timeAt(6),
        runId: RUN_ID,
        iteration: 3,
        kind: 'notice',
        notice: 'paused',
        text: 'Paused: the session budget of 1000 tokens is spent',
      },
    ]);

    const markdown = (await collect(formatMarkdown(entries))).join('');
    assert.ok(
      markdown.includes(
        `**Denied** \`${REQUEST_TIMED_OUT}\` (\`bash\`) on timeout at ${history.timeAt(4)}: nobody decided in time`,
      ),
      markdown,
    );
    assert.ok(markdown.includes('**Approved** `pr_00000000000000c3` (`read_file`) by rule `read_file`'));
    assert.ok(markdown.includes('- Notice (paused) at '));
  });
});
