import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, it } from 'node:test';
import type { WorkflowHandle } from '@temporalio/client';
import { temporal as proto } from '@temporalio/proto';
import type { ToolBatchInput } from '../activities';
import type { AgentRunInputDraft, OpenAIModelSpec } from '../common/agent-input';
import { AnthropicModel } from '../models/anthropic-model';
import { CircuitBreakers } from '../models/circuit-breaker';
import { createModelDispatcher } from '../models/http';
import type { ModelProvider } from '../models/model-provider';
import { OpenAIModel } from '../models/openai-model';
import { ScriptedModel } from '../models/scripted-model';
import { createActivityDependencies } from '../worker/create-worker';
import { startCli } from './helpers/cli';
import { useAgentsEnvironment } from './helpers/environment';
import { activityStarts, finalAttempts, scheduledActivities } from './helpers/history';
import { assertReplays } from './helpers/replay';
import { ModelApiServer, openaiModelOf, openaiStream, type ReplyStep } from './helpers/model-api-server';
import { TEST_TEMPLATE, uniqueName } from './helpers/run-input';
import { startWorker } from './helpers/worker';
import { waitFor } from './helpers/wait';

/**
 * Model calls through the whole workflow against a local server speaking OpenAI's wire format:
 * retries and their delays, refusals, stalls, cancellation and the circuit breaker, as Temporal
 * and the runner see them.
 */

const env = useAgentsEnvironment({ withSandbox: true });

/** The key the workers read from their environment; it must never reach the history. */
const KEY_VARIABLE = 'AGENTS_TEST_MODEL_KEY';
const KEY = 'sk-test-5f0c1d2e3a4b5c6d7e8f';

const servers: ModelApiServer[] = [];
const processes: ChildProcess[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
  for (const child of processes.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  }
});

async function modelServer(): Promise<ModelApiServer> {
  const server = await ModelApiServer.start();
  servers.push(server);
  return server;
}

/**
 * Replaces the test's worker with one whose remote providers read the test key, and whose circuit
 * breakers may be tuned.
 */
async function useWorker(breakers?: CircuitBreakers): Promise<void> {
  await env.worker.stop();
  const dispatcher = createModelDispatcher();
  const environment = { [KEY_VARIABLE]: KEY };
  const dependencies = createActivityDependencies(env.temporal.home, [env.sandbox!.endpoint]);
  dependencies.models = new Map<string, ModelProvider>([
    ['scripted', new ScriptedModel()],
    ['openai', new OpenAIModel({ dispatcher, env: environment })],
    ['anthropic', new AnthropicModel({ dispatcher, env: environment })],
  ]);
  if (breakers !== undefined) dependencies.breakers = breakers;
  env.worker = await startWorker(env.temporal, dependencies);
}

function openaiSpec(server: ModelApiServer, overrides: Partial<OpenAIModelSpec> = {}): OpenAIModelSpec {
  return openaiModelOf(server, KEY_VARIABLE, overrides);
}

/** Workflow IDs this file started, replayed by its last test. */
const startedWorkflowIds: string[] = [];

async function run(name: string, model: OpenAIModelSpec, overrides: Partial<AgentRunInputDraft> = {}) {
  const handle = await env.agents.start({
    name,
    template: { name: 'test-program', source: 'file', content: TEST_TEMPLATE },
    model,
    intervalS: 0,
    maxIterations: 1,
    permissions: { mode: 'auto-approve' },
    guards: { stagnationWindow: 0, errorBackoffS: 0 },
    ...overrides,
  });
  startedWorkflowIds.push(handle.workflowId);
  return handle;
}

const answer = (text: string): ReplyStep[] =>
  openaiStream({ textPieces: [text], usage: { inputTokens: 1000, outputTokens: 500 } });

/** The started event of the model turn that ended last. */
async function lastModelTurnStart(handle: WorkflowHandle) {
  return (await activityStarts(handle, 'modelTurn')).at(-1);
}

describe('model calls of an agent run', () => {
  it("retries a 429 after the API's Retry-After and a 500 with backoff, then records the answer, its usage and cost", async () => {
    await useWorker();
    const server = (await modelServer()).reply(
      { status: 429, headers: { 'retry-after': '1' }, body: { error: { message: 'Rate limit reached' } } },
      { status: 500, body: { error: { message: 'The server had an error' } } },
      { events: answer('Third time lucky.') },
    );
    const name = uniqueName('retried');
    const handle = await run(
      name,
      openaiSpec(server, { price: { inputUsdPerMTok: 3, outputUsdPerMTok: 15 } }),
    );
    const result = await handle.result();
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.status, 'ok');
    assert.equal(record?.summary, 'Third time lucky.');
    assert.deepEqual([record?.tokensIn, record?.tokensOut], [1000, 500]);
    assert.equal(record?.costUsd, 0.0105);
    assert.equal(result.usage.costUsd, 0.0105);
    assert.equal(server.requests.length, 3);
    assert.deepEqual(await finalAttempts(handle, 'modelTurn'), [3]);
    const started = await lastModelTurnStart(handle);
    assert.match(
      started?.lastFailure?.message ?? '',
      /openai model gpt-test: HTTP 500: The server had an error/,
    );
    assert.equal(started?.lastFailure?.applicationFailureInfo?.type, 'ModelUnavailable');
    // Each attempt sent the key; none of it is in the history.
    assert.ok(server.requests.every((request) => request.headers.authorization === `Bearer ${KEY}`));
    assert.ok(!JSON.stringify(await handle.fetchHistory()).includes(KEY));
  });

  it("fails a 401 at once with the provider, model and API's own text, the key kept out of the history", async () => {
    await useWorker();
    const server = (await modelServer()).replyAlways({
      status: 401,
      body: { error: { message: `Incorrect API key provided: ${KEY}.`, type: 'invalid_request_error' } },
    });
    const name = uniqueName('unauthorized');
    const handle = await run(name, openaiSpec(server));
    await handle.result();
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.status, 'error');
    assert.match(
      record?.error ?? '',
      /openai model gpt-test: HTTP 401: Incorrect API key provided: \[redacted\]/,
    );
    assert.deepEqual(await finalAttempts(handle, 'modelTurn'), [1]);
    assert.equal(server.requests.length, 1);
    assert.ok(!JSON.stringify(await handle.fetchHistory()).includes(KEY));
  });

  it('runs the parallel tool calls of one answer as one batch, malformed arguments answered with why', async () => {
    await useWorker();
    const server = (await modelServer()).reply(
      {
        events: openaiStream({
          textPieces: ['Three calls.'],
          toolCalls: [
            {
              id: 'call_a',
              name: 'write_file',
              argumentPieces: ['{"path": "a.txt", ', '"content": "from the model"}'],
            },
            { id: 'call_b', name: 'bash', argumentPieces: ['{"command": ', '"cat a.txt"}'] },
            { id: 'call_c', name: 'write_file', argumentPieces: ['{"path": "b.txt", "content": '] },
          ],
          usage: { inputTokens: 10, outputTokens: 10 },
        }),
      },
      { events: answer('Read the results.') },
    );
    const handle = await run(uniqueName('parallel'), openaiSpec(server));
    await handle.result();
    const batches = await scheduledActivities<ToolBatchInput>(handle, 'toolBatch');
    assert.equal(batches.length, 1);
    assert.deepEqual(
      batches[0]?.input.calls.map(({ call }) => call.id),
      ['call_a', 'call_b'],
    );
    // What the model was sent back, in OpenAI's format.
    const secondRequest = server.requests[1]?.body as { messages: Array<Record<string, unknown>> };
    const toolMessages = secondRequest.messages.filter((message) => message.role === 'tool');
    assert.deepEqual(
      toolMessages.map((message) => [message.tool_call_id, String(message.content).trim()]),
      [
        ['call_a', 'Wrote 14 bytes to a.txt'],
        ['call_b', 'from the model'],
        ['call_c', 'Invalid arguments for tool write_file: not valid JSON: {"path": "b.txt", "content":'],
      ],
    );
  });

  it('retries a stream that stalls after its stall timeout, and the stalled socket is closed', async () => {
    await useWorker();
    const server = (await modelServer()).reply(
      { events: answer('never finished').slice(0, 2), end: 'stall' },
      { events: answer('Answered on the retry.') },
    );
    const name = uniqueName('stalled');
    const handle = await run(name, openaiSpec(server, { stallTimeoutS: 2 }));
    await handle.result();
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.summary, 'Answered on the retry.');
    assert.deepEqual(await finalAttempts(handle, 'modelTurn'), [2]);
    assert.equal(server.requests[0]?.state, 'closed-by-client');
  });

  it('notices a worker killed mid-stream within the heartbeat timeout and retries the turn on another worker', async () => {
    await env.worker.stop();
    const server = (await modelServer()).reply(
      { events: answer('cut short').slice(0, 2), end: 'stall' },
      { events: answer('Finished by the second worker.') },
    );
    const doomed = await startCli(
      ['worker'],
      { ...env.temporal.environment, [KEY_VARIABLE]: KEY, AGENTS_SANDBOX_URLS: '' },
      /Worker polling/,
    );
    processes.push(doomed);
    const name = uniqueName('killed');
    const handle = await run(name, openaiSpec(server, { stallTimeoutS: 3 }));
    await waitFor('the first worker to be streaming', () => server.requests[0]?.state === 'replying');
    doomed.kill('SIGKILL');
    await once(doomed, 'exit');
    await useWorker();
    await handle.result();
    const [record] = await env.agents.iterations(name);
    assert.equal(record?.summary, 'Finished by the second worker.');
    const started = await lastModelTurnStart(handle);
    assert.equal(started?.attempt, 2);
    assert.equal(
      started?.lastFailure?.timeoutFailureInfo?.timeoutType,
      proto.api.enums.v1.TimeoutType.TIMEOUT_TYPE_HEARTBEAT,
    );
  });

  it('closes the socket of a streaming answer when the run is stopped', async () => {
    await useWorker();
    // An answer that streams for a minute, a chunk every 100 ms.
    const slow = Array.from({ length: 600 }, (_, index) => ({
      ...answer(`word ${index} `)[1]!,
      delayMs: 100,
    }));
    const server = (await modelServer()).reply({ events: slow });
    const name = uniqueName('cancelled');
    const handle = await run(name, openaiSpec(server, { stallTimeoutS: 2 }));
    await waitFor('the answer to be streaming', () => server.requests[0]?.state === 'replying');
    await env.agents.stop(name, 'enough');
    const result = await handle.result();
    assert.equal(result.exitReason, 'stopped');
    await waitFor('the provider to hang up', () => server.requests[0]?.state === 'closed-by-client', 10_000);
    assert.equal(server.requests.length, 1);
  });

  it('opens the circuit after repeated failures, and the runner waits out its cooldown before the next call', async () => {
    await useWorker(new CircuitBreakers({ failureThreshold: 3, windowMs: 60_000, openMs: 4000 }));
    const server = (await modelServer()).reply(
      { status: 503, body: { error: { message: 'overloaded' } } },
      { status: 503, body: { error: { message: 'overloaded' } } },
      { status: 503, body: { error: { message: 'overloaded' } } },
      { events: answer('Back after the cooldown.') },
    );
    const name = uniqueName('breaker-open');
    const handle = await run(name, openaiSpec(server), { maxIterations: 2 });
    await handle.result();
    const records = await env.agents.iterations(name);
    assert.deepEqual(
      records.map((record) => record.status),
      ['error', 'ok'],
    );
    assert.match(records[0]?.error ?? '', /Circuit breaker OPEN for openai model gpt-test\. Cooldown: \d+s/);
    assert.equal(records[1]?.summary, 'Back after the cooldown.');
    // Three calls reached the API; the fourth attempt was refused by the breaker without a request.
    assert.equal(server.requests.length, 4);
    assert.deepEqual(await finalAttempts(handle, 'modelTurn'), [4, 1]);
    // The runner's wait after the refusal is the cooldown the breaker reported, plus a second.
    const events = (await handle.fetchHistory()).events ?? [];
    const failure = events.find((event) => event.activityTaskFailedEventAttributes != null)
      ?.activityTaskFailedEventAttributes?.failure;
    const cooldownS = Number(/Cooldown: (\d+)s/.exec(failure?.message ?? '')?.[1]);
    assert.ok(cooldownS >= 1 && cooldownS <= 4, `cooldown ${cooldownS}`);
    const timer = events.find(
      (event) => event.timerStartedEventAttributes != null,
    )?.timerStartedEventAttributes;
    assert.equal(Number(timer?.startToFireTimeout?.seconds), cooldownS + 1);
  });

  it('replays every history of this file without a determinism error', async () => {
    const histories = await assertReplays(env.temporal, startedWorkflowIds);
    assert.equal(histories.length, startedWorkflowIds.length);
  });
});
