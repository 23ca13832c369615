import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { afterEach, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { WorkflowFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { workflowIdFor } from '../client/agents-client';
import type { AgentRunInputDraft, ScriptedTurn } from '../common/agent-input';
import { DEFAULT_BUDGETS, INVALID_RUN_INPUT_FAILURE, TASK_QUEUE, WORKFLOW_TYPE } from '../common/constants';
import { checkStartArguments } from '../workflows/input-check';
import { formatLogEntry } from '../worker/worker-logger';
import { runCli, startCli } from './helpers/cli';
import { useAgentsEnvironment } from './helpers/environment';
import { countEvents } from './helpers/history';
import { ModelApiServer, openaiStream } from './helpers/model-api-server';
import { assertReplays } from './helpers/replay';
import { scriptedRun, TEST_TEMPLATE, uniqueName } from './helpers/run-input';
import { testTemporalBinary } from './helpers/temporal-server';
import { waitFor } from './helpers/wait';

// The server suggests continue-as-new after 40 events, so runs of a few iterations cross executions.
const env = useAgentsEnvironment({ dynamicConfig: { 'limit.historyCount.suggestContinueAsNew': 40 } });

/** Every workflow this file starts, replayed at the end to prove the workflow code is deterministic. */
const startedWorkflowIds: string[] = [];

const servers: ModelApiServer[] = [];
const processes: ChildProcess[] = [];

afterEach(async () => {
  for (const server of servers.splice(0)) await server.close();
  for (const child of processes.splice(0)) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  }
});

async function start(
  name: string,
  turns: Array<Partial<ScriptedTurn>>,
  overrides: Partial<AgentRunInputDraft> = {},
) {
  const handle = await env.agents.start(scriptedRun(name, turns, { maxIterations: 20, ...overrides }));
  startedWorkflowIds.push(handle.workflowId);
  return handle;
}

/** Runs the real `temporal` CLI against the file's dev server and returns its stdout. */
async function temporal(args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(await testTemporalBinary(), [
    ...args,
    '--address',
    env.temporal.config.temporal.address,
  ]);
  return stdout;
}

/** One execution as `temporal workflow list --output json` shows it. */
interface ListedExecution {
  execution: { workflowId: string; runId: string };
  status: string;
  searchAttributes?: { indexedFields?: Record<string, { data?: string }> };
}

/** The executions a visibility query returns, through the `temporal` CLI as a user would ask. */
async function visibility(query: string): Promise<ListedExecution[]> {
  const stdout = await temporal(['workflow', 'list', '--query', query, '--output', 'json']);
  return JSON.parse(stdout || '[]') as ListedExecution[];
}

/** The `AgentState` of a listed execution, decoded from its search attribute payload. */
function agentStateOf(execution: ListedExecution): string | undefined {
  const data = execution.searchAttributes?.indexedFields?.AgentState?.data;
  return data === undefined
    ? undefined
    : (JSON.parse(Buffer.from(data, 'base64').toString('utf8')) as string);
}

describe('the empty-output guard', () => {
  it('ends a run whose model answers no text and no tool call 3 times in a row with no_output', async () => {
    const server = await ModelApiServer.start();
    servers.push(server);
    // An OpenAI-compatible API that answers every request with an empty message.
    server.replyAlways({ events: openaiStream({ usage: { inputTokens: 20, outputTokens: 0 } }) });
    const name = uniqueName('silent-model');
    const handle = await start(name, [], {
      model: {
        provider: 'openai',
        model: 'silent',
        baseUrl: `${server.url}/v1`,
        apiKeyEnv: 'AGENTS_TEST_UNSET_KEY',
      },
    });
    const result = await handle.result();
    assert.equal(result.exitReason, 'no_output');
    assert.equal(result.iterations, 3);
    assert.equal(server.requests.length, 3, 'no model call after the third empty answer');
    const status = await env.agents.status(name);
    assert.equal(status.exitReason, 'no_output');
    assert.equal(status.stopReason, 'no text and no tool call 3 iterations in a row');
    assert.deepEqual(
      (await env.agents.iterations(name)).map((record) => [record.status, record.summary]),
      [
        ['ok', '(no output)'],
        ['ok', '(no output)'],
        ['ok', '(no output)'],
      ],
    );
  });

  it('takes the number of empty iterations from guards.emptyWindow, and never stops for them at 0', async () => {
    const five = uniqueName('empty-window-five');
    const stopsAtFive = await start(five, [{ text: '' }], { guards: { emptyWindow: 5 } });
    const never = uniqueName('empty-window-off');
    const runsOn = await start(never, [{ text: ' \n ' }], { maxIterations: 7, guards: { emptyWindow: 0 } });
    assert.deepEqual(
      [await stopsAtFive.result(), await runsOn.result()].map((result) => [
        result.exitReason,
        result.iterations,
      ]),
      [
        ['no_output', 5],
        ['max_iterations', 7],
      ],
    );
  });

  it('counts neither an iteration whose model works through tools without a word nor one that failed', async () => {
    const name = uniqueName('quiet-worker');
    const handle = await start(
      name,
      [
        { text: '' },
        { text: '' },
        { toolCalls: [{ tool: 'bash', arguments: { command: 'true' } }] },
        { text: '' },
        { text: '' },
        { error: 'model down' },
        { text: '' },
        { text: '' },
      ],
      { maxIterations: 7, guards: { errorBackoffS: 0 } },
    );
    const result = await handle.result();
    assert.equal(result.exitReason, 'max_iterations');
    assert.equal(result.iterations, 7);
    assert.deepEqual(
      (await env.agents.iterations(name)).map((record) => record.status),
      ['ok', 'ok', 'ok', 'ok', 'error', 'ok', 'ok'],
    );
  });
});

describe('the input check of the workflow', () => {
  const template = { name: 'test-program', source: 'file', content: TEST_TEMPLATE };
  const model = { provider: 'scripted', turns: [{ text: 'hello' }] };

  it('fails a run started by temporal workflow start with a bad input at once, with one non-retryable error naming the field', async () => {
    const cases: Array<{ input: unknown; message: string }> = [
      {
        input: { name: 'Bad Name!', template, model },
        message:
          'Invalid run input: name: must be 1-63 characters of a-z, 0-9, "_" or "-", starting with a letter or digit',
      },
      {
        input: { name: 'empty-script', template, model: { provider: 'scripted', turns: [] } },
        message: 'Invalid run input: model.turns: a script needs at least one turn',
      },
      {
        input: { name: 'hasty', template, model, intervalS: 0.1 },
        message: 'Invalid run input: intervalS: must be 0 (no pause) or between 0.5 and 86400 seconds',
      },
      {
        input: undefined,
        message:
          'Invalid run input: expected one JSON object with at least "name", "template" and "model", got no input',
      },
    ];
    for (const { input, message } of cases) {
      const workflowId = workflowIdFor(uniqueName('bad-input'));
      startedWorkflowIds.push(workflowId);
      await temporal([
        'workflow',
        'start',
        '--type',
        WORKFLOW_TYPE,
        '--task-queue',
        TASK_QUEUE,
        '--workflow-id',
        workflowId,
        ...(input === undefined ? [] : ['--input', JSON.stringify(input)]),
      ]);
      const handle = env.temporal.client.workflow.getHandle(workflowId);
      const failure = await handle.result().then(
        () => assert.fail(`${workflowId} completed`),
        (error: unknown) => error,
      );
      assert.ok(failure instanceof WorkflowFailedError, String(failure));
      assert.ok(failure.cause instanceof ApplicationFailure, String(failure.cause));
      assert.equal(failure.cause.message, message);
      assert.equal(failure.cause.type, INVALID_RUN_INPUT_FAILURE);
      assert.equal(failure.cause.nonRetryable, true);
      assert.equal(
        await countEvents(handle, 'workflowTaskFailedEventAttributes'),
        0,
        'no workflow task failed',
      );
      assert.equal(await countEvents(handle, 'workflowTaskCompletedEventAttributes'), 1);
      const [listed] = await waitFor(`${workflowId} failed in visibility`, async () => {
        const found = await visibility(`WorkflowId="${workflowId}" AND ExecutionStatus="Failed"`);
        return found.length > 0 ? found : undefined;
      });
      assert.equal(agentStateOf(listed!), 'failed');
    }
  });

  it('runs a good input given to temporal workflow start with the defaults agents start applies', async () => {
    const name = uniqueName('cli-started');
    const workflowId = workflowIdFor(name);
    startedWorkflowIds.push(workflowId);
    await temporal([
      'workflow',
      'start',
      '--type',
      WORKFLOW_TYPE,
      '--task-queue',
      TASK_QUEUE,
      '--workflow-id',
      workflowId,
      '--input',
      JSON.stringify({ name, template, model, intervalS: 0, maxIterations: 1 }),
    ]);
    const result = (await env.temporal.client.workflow.getHandle(workflowId).result()) as {
      exitReason: string;
    };
    assert.equal(result.exitReason, 'max_iterations');
    // An input that predates budgets runs unlimited; one that merely leaves them out gets the defaults.
    assert.deepEqual((await env.agents.status(name)).budgets, DEFAULT_BUDGETS);
  });

  it('takes a second argument only from continue-as-new', () => {
    const input = { name: 'one', template, model };
    assert.deepEqual(checkStartArguments(input, { iteration: 3 }, false), {
      problem: 'agentRun takes one argument, the run input; a second is only carried by continue-as-new',
    });
    assert.equal(
      (checkStartArguments(input, { iteration: 3 }, true) as { input: unknown }).input,
      input,
      'a continued execution runs on with its chain’s input as it is',
    );
    assert.deepEqual(checkStartArguments([input], undefined, false), {
      problem: 'expected one JSON object with at least "name", "template" and "model", got an array',
    });
  });
});

describe('signals with unknown names and malformed payloads', () => {
  it('counts a signal of an unknown name in ignoredSignals, and logs one line for it and one for a malformed payload', async () => {
    // This test reads the log of a worker process, as an operator would: it answers alone.
    await env.worker.stop();
    const worker = await startCli(['worker'], env.temporal.environment, /Worker polling/);
    processes.push(worker);
    let log = '';
    worker.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));

    const name = uniqueName('misspelt');
    const handle = await start(name, [{ text: 'waiting' }], { intervalS: 3600 });
    await waitFor(`${name} to sleep`, async () => (await env.agents.status(name)).state === 'sleeping');
    await temporal([
      'workflow',
      'signal',
      '--workflow-id',
      handle.workflowId,
      '--name',
      'bogus',
      '--input',
      '{"approve": true}',
    ]);
    await temporal([
      'workflow',
      'signal',
      '--workflow-id',
      handle.workflowId,
      '--name',
      'permission',
      '--input',
      '{"requestId": "pr_nope", "approve": true}',
    ]);
    const status = await waitFor('two ignored signals', async () => {
      const current = await env.agents.status(name);
      return current.ignoredSignals === 2 ? current : undefined;
    });
    assert.equal(status.state, 'sleeping', 'an ignored signal changes nothing else');

    const ignored = await waitFor('two log lines about ignored signals', () => {
      const lines = log
        .split('\n')
        .filter((line) => line.includes('Signal ignored') && line.includes(handle.workflowId));
      return lines.length === 2 ? lines : undefined;
    });
    assert.match(
      ignored[0] ?? '',
      /signal: 'bogus', reason: 'no signal of this name; accepted: stop, permission, resume'/,
    );
    assert.match(
      ignored[1] ?? '',
      /signal: 'permission', reason: 'requestId: must be "pr_" followed by 16 hex digits'/,
    );
    // One line per entry: nothing of zod's JSON, and no line continuing an entry over several.
    assert.doesNotMatch(log, /"origin"|"code":/);
    for (const line of log.split('\n').filter((text) => text !== '')) {
      assert.match(
        line,
        /^\d{4}-\d\d-\d\dT[\d:.]+Z \[[A-Z]+\] /,
        `a line that is not a whole entry: ${line}`,
      );
    }
    await env.agents.stop(name);
    assert.equal((await handle.result()).exitReason, 'stopped');
  });

  it('writes a log entry on one line whatever its message and fields hold', () => {
    const line = formatLogEntry({
      level: 'WARN',
      message: 'Signal ignored\nforged [INFO] line',
      timestampNanos: 1_700_000_000_000_000_000n,
      meta: { signal: 'a\nb', reason: Array.from({ length: 20 }, (_, index) => `issue ${index}`).join('\n') },
    });
    assert.equal(line.split('\n').length, 1);
    assert.ok(
      line.startsWith('2023-11-14T22:13:20.000Z [WARN] Signal ignored\\nforged [INFO] line { signal: '),
      line,
    );
  });
});

describe('AgentState of closed executions', () => {
  it('never shows a completed, continued-as-new or terminated run in agents list --state running', async () => {
    const done = uniqueName('state-done');
    const doneHandle = await start(done, [{ text: 'done' }], { maxIterations: 1 });
    const long = uniqueName('state-long');
    const longHandle = await start(long, [{ text: 'step' }], { maxIterations: 8, intervalS: 0 });
    const busy = uniqueName('state-busy');
    // A model turn that lasts ten minutes: the run is `running` until it is terminated.
    const busyHandle = await start(busy, [{ text: 'slow', delayMs: 600_000 }]);
    await doneHandle.result();
    await longHandle.result();

    const listRunning = async () => {
      const listed = await runCli(['list', '--state', 'running'], env.temporal.environment);
      assert.equal(listed.code, 0, listed.stderr);
      return listed.stdout;
    };
    const whileBusy = await waitFor('the busy run in agents list --state running', async () => {
      const stdout = await listRunning();
      return stdout.includes(busy) ? stdout : undefined;
    });
    assert.ok(!whileBusy.includes(done), whileBusy);
    assert.ok(!whileBusy.includes(long), whileBusy);

    await temporal([
      'workflow',
      'terminate',
      '--workflow-id',
      busyHandle.workflowId,
      '--reason',
      'ended from outside',
    ]);
    await waitFor(
      'the terminated run closed in visibility',
      async () =>
        (await visibility(`WorkflowId="${busyHandle.workflowId}" AND ExecutionStatus="Terminated"`)).length >
        0,
    );
    const afterTerminate = await listRunning();
    for (const name of [done, long, busy]) assert.ok(!afterTerminate.includes(name), afterTerminate);
  });

  it('never returns a completed or continued-as-new execution for AgentState="running"', async () => {
    const done = uniqueName('visible-done');
    const doneHandle = await start(done, [{ text: 'done' }], { maxIterations: 1 });
    const long = uniqueName('visible-long');
    const longHandle = await start(long, [{ text: 'step' }], { maxIterations: 8, intervalS: 0 });
    await doneHandle.result();
    await longHandle.result();
    const ours = `(WorkflowId="${doneHandle.workflowId}" OR WorkflowId="${longHandle.workflowId}")`;
    const executions = await waitFor('every execution closed in visibility', async () => {
      const found = await visibility(ours);
      return found.length >= 3 &&
        found.every((execution) => execution.status !== 'WORKFLOW_EXECUTION_STATUS_RUNNING')
        ? found
        : undefined;
    });
    const chain = executions.filter((execution) => execution.execution.workflowId === longHandle.workflowId);
    assert.ok(chain.length >= 2, 'the long run continued as new');
    assert.deepEqual(
      executions.map((execution) => [execution.status, agentStateOf(execution)]).sort(),
      [
        ...Array.from({ length: chain.length - 1 }, () => [
          'WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW',
          'continued_as_new',
        ]),
        ['WORKFLOW_EXECUTION_STATUS_COMPLETED', 'stopped'],
        ['WORKFLOW_EXECUTION_STATUS_COMPLETED', 'stopped'],
      ].sort(),
    );
    assert.deepEqual(await visibility(`AgentState="running" AND ${ours}`), []);
    assert.deepEqual(
      await visibility(`AgentState="continued_as_new" AND ExecutionStatus="Running" AND ${ours}`),
      [],
    );
  });

  it('replays every history of this file without a determinism error', async () => {
    const histories = await assertReplays(env.temporal, startedWorkflowIds);
    assert.ok(histories.length >= 10);
  });
});
