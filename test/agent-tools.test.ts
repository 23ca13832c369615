import assert from 'node:assert/strict';
import { once } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import type { ToolBatchInput } from '../activities';
import type { TranscriptMessage } from '../common/agent-run-types';
import { z } from 'zod';
import { defineTool } from '../sandbox/external-tool';
import { useAgentsEnvironment } from './helpers/environment';
import { scheduledActivities, scheduledModelTurns } from './helpers/history';
import { scriptedRun, uniqueName } from './helpers/run-input';

/** An external tool for the tests: the tool server runs it, not the sandbox. */
const shout = defineTool({
  name: 'shout',
  description: 'Upper-cases its text.',
  input: z.object({ text: z.string() }),
  execute: ({ text }) => Promise.resolve(text.toUpperCase()),
});

// One dev server, one sandbox server and one tool server for this file, a fresh worker for each test.
const env = useAgentsEnvironment({ withSandbox: true, externalTools: [shout] });

/** Every tool batch the workflow scheduled: its input and its Web UI summary. */
async function scheduledToolBatches(handle: WorkflowHandle) {
  return scheduledActivities<ToolBatchInput>(handle, 'toolBatch');
}

function toolMessages(messages: TranscriptMessage[]) {
  return messages.flatMap((message) => (message.role === 'tool' ? [message] : []));
}

describe('tool calls of an agent run', () => {
  it("runs the model's tool calls in the sandbox as one batch and feeds the results back", async () => {
    const name = uniqueName('tools');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Writing the note.',
            toolCalls: [
              { tool: 'write_file', arguments: { path: 'notes/a.txt', content: 'hello from the agent' } },
              { tool: 'bash', arguments: { command: 'cat notes/a.txt' } },
            ],
          },
          { text: 'Wrote and read the note.' },
        ],
        { maxIterations: 1 },
      ),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.summary, 'Writing the note.\nWrote and read the note.');

    const batches = await scheduledToolBatches(handle);
    assert.equal(batches.length, 1);
    assert.equal(batches[0]?.summary, 'tools: write_file ×1, bash ×1');
    const trajectoryId = batches[0]?.input.trajectoryId ?? '';
    assert.deepEqual(
      batches[0]?.input.calls.map((call) => call.callId),
      [`${trajectoryId}:0:0`, `${trajectoryId}:0:1`],
    );

    const turns = await scheduledModelTurns(handle);
    assert.equal(turns.length, 2);
    const results = toolMessages(turns[1]?.input.append ?? []);
    assert.deepEqual(
      results.map(({ tool, success, content }) => ({ tool, success, content: content.trim() })),
      [
        { tool: 'write_file', success: true, content: results[0]?.content.trim() ?? '' },
        { tool: 'bash', success: true, content: 'hello from the agent' },
      ],
    );
    const onDisk = path.join(env.sandbox!.root, 'trajectories', trajectoryId, 'workspace', 'notes', 'a.txt');
    assert.equal(await readFile(onDisk, 'utf8'), 'hello from the agent');
  });

  it('answers a call whose arguments do not fit its tool with why, running nothing and asking nobody', async () => {
    const name = uniqueName('invalid-arguments');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            text: 'Two calls, one malformed.',
            toolCalls: [
              { tool: 'write_file', arguments: { content: 'no path given' } },
              { tool: 'bash', arguments: { command: 'echo valid' } },
            ],
          },
          { text: 'Read the results.' },
        ],
        // Every call would wait for a person but bash: an invalid call must not.
        { maxIterations: 1, permissions: { mode: 'ask', rules: [{ action: 'allow', match: 'bash' }] } },
      ),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const batches = await scheduledToolBatches(handle);
    assert.deepEqual(
      batches.map((batch) => batch.input.calls.map(({ call }) => call.tool)),
      [['bash']],
    );
    const turns = await scheduledModelTurns(handle);
    assert.deepEqual(
      toolMessages(turns[1]?.input.append ?? []).map(({ tool, success, content }) => ({
        tool,
        success,
        content: content.trim(),
      })),
      [
        {
          tool: 'write_file',
          success: false,
          content: 'Invalid arguments for tool write_file: path is required',
        },
        { tool: 'bash', success: true, content: 'valid' },
      ],
    );
  });

  it('ends the run with exitReason finished when the model calls finish', async () => {
    const name = uniqueName('finish');
    const handle = await env.agents.start(
      scriptedRun(name, [{ text: 'Everything is done.', toolCalls: [{ tool: 'finish', arguments: {} }] }], {
        intervalS: 3600,
      }),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'finished');
    assert.equal(result.iterations, 1);
    assert.deepEqual(await scheduledToolBatches(handle), []);
  });

  it('takes network access from the run input, never from the model', async () => {
    // A listener on the host's loopback, out of reach whatever the policy; with the network on, the
    // sandbox's way out is the relay to its network proxy.
    const listener = createServer((socket) => socket.end());
    listener.listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const { port } = listener.address() as AddressInfo;
    const probe = [
      `(echo > /dev/tcp/127.0.0.1/${port}) 2>/dev/null && echo reachable || echo blocked`,
      '(echo > /dev/tcp/127.0.0.1/3128) 2>/dev/null && echo online || echo offline',
    ].join('; ');
    const name = uniqueName('policy');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            toolCalls: [
              { tool: 'bash', arguments: { command: probe, allow_network: true, require_sandbox: false } },
            ],
          },
          { text: 'checked' },
        ],
        { maxIterations: 1 },
      ),
    );
    await handle.result();
    const [batch] = await scheduledToolBatches(handle);
    assert.deepEqual(batch?.input.policy, { network: false });
    const turns = await scheduledModelTurns(handle);
    assert.equal(toolMessages(turns[1]?.input.append ?? [])[0]?.content.trim(), 'blocked\noffline');

    const allowed = await env.agents.start(
      scriptedRun(
        uniqueName('policy-open'),
        [
          { toolCalls: [{ tool: 'bash', arguments: { command: probe, allow_network: false } }] },
          { text: 'checked' },
        ],
        { maxIterations: 1, sandbox: { network: true } },
      ),
    );
    await allowed.result();
    const allowedTurns = await scheduledModelTurns(allowed);
    assert.equal(toolMessages(allowedTurns[1]?.input.append ?? [])[0]?.content.trim(), 'blocked\nonline');
    listener.close();
  });

  it('runs terminal as bash and refuses its background mode', async () => {
    const name = uniqueName('alias');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            toolCalls: [
              { tool: 'terminal', arguments: { command: 'echo via terminal' } },
              { tool: 'terminal', arguments: { command: 'sleep 100', background: true } },
              { tool: 'no_such_tool', arguments: {} },
            ],
          },
          { text: 'done' },
        ],
        { maxIterations: 1 },
      ),
    );
    await handle.result();
    const turns = await scheduledModelTurns(handle);
    assert.deepEqual(
      toolMessages(turns[1]?.input.append ?? []).map(({ success, content }) => [success, content.trim()]),
      [
        [true, 'via terminal'],
        [false, 'Error: terminal background execution is not supported in sandbox'],
        [false, 'Unknown tool: no_such_tool'],
      ],
    );
  });

  it('sends tools the sandbox does not run to the external tool server', async () => {
    const name = uniqueName('external');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            toolCalls: [
              { tool: 'shout', arguments: { text: 'quiet words' } },
              { tool: 'shout', arguments: { words: 'wrong field' } },
            ],
          },
          { text: 'done' },
        ],
        { maxIterations: 1 },
      ),
    );
    await handle.result();
    const turns = await scheduledModelTurns(handle);
    const [shouted, invalid] = toolMessages(turns[1]?.input.append ?? []);
    assert.deepEqual([shouted?.success, shouted?.content], [true, 'QUIET WORDS']);
    assert.equal(invalid?.success, false);
    assert.match(invalid?.content ?? '', /Invalid arguments for tool shout: text/);
  });

  it('keeps one shell across the tool calls of a run through terminal_stateful', async () => {
    const name = uniqueName('stateful');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            toolCalls: [
              { tool: 'terminal_stateful', arguments: { command: 'mkdir -p deep && cd deep && X=42' } },
            ],
          },
          { toolCalls: [{ tool: 'bash_stateful', arguments: { command: 'echo "$PWD $X"' } }] },
          { text: 'remembered' },
        ],
        { maxIterations: 1 },
      ),
    );
    await handle.result();
    const turns = await scheduledModelTurns(handle);
    assert.equal(toolMessages(turns[2]?.input.append ?? [])[0]?.content.trim(), '/workspace/deep 42');
  });

  it('deletes the workspace when the run ends if the run asks for it', async () => {
    const name = uniqueName('reset');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          { toolCalls: [{ tool: 'bash', arguments: { command: 'echo temporary > scratch' } }] },
          { text: 'done' },
        ],
        {
          maxIterations: 1,
          sandbox: { resetOnEnd: true },
        },
      ),
    );
    await handle.result();
    const [batch] = await scheduledToolBatches(handle);
    const trajectoryFolder = path.join(env.sandbox!.root, 'trajectories', batch?.input.trajectoryId ?? '');
    await assert.rejects(stat(trajectoryFolder), { code: 'ENOENT' });
  });

  it('carries on after tool calls that attack the sandbox', async () => {
    const name = uniqueName('attacked');
    const handle = await env.agents.start(
      scriptedRun(
        name,
        [
          {
            toolCalls: [
              { tool: 'bash', arguments: { command: ':(){ :|:& };:', timeout: 5 } },
              { tool: 'bash', arguments: { command: 'while :; do :; done', timeout: 2 } },
              { tool: 'bash', arguments: { command: 'yes' } },
            ],
          },
          { toolCalls: [{ tool: 'bash', arguments: { command: 'echo alive' } }] },
          { text: 'survived' },
        ],
        { maxIterations: 1 },
      ),
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    const turns = await scheduledModelTurns(handle);
    const attacks = toolMessages(turns[1]?.input.append ?? []);
    assert.match(attacks[1]?.content ?? '', /Command timed out after 2s/);
    assert.equal(attacks[2]?.success, false);
    assert.equal(toolMessages(turns[2]?.input.append ?? [])[0]?.content.trim(), 'alive');
  });
});
